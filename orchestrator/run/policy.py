"""The one place that decides what happens to a shard attempt: accept it, retry it, or fail the run.

User errors (bad data, a missing library) and out-of-memory errors are deterministic: retrying
wastes the cluster's time, so the run fails at once with the worker's message. Crashes and dead
workers (killed process, lost node) are retried on another or a restarted worker, up to
`max_attempts` attempts per shard.
"""

from __future__ import annotations

from typing import Literal

from workers.contract import ShardResult

Decision = Literal["accept", "retry", "fail"]


def decide(result: ShardResult, max_attempts: int) -> Decision:
    if result.error is None:
        return "accept"
    if result.error.kind in ("user", "oom"):
        return "fail"
    return "retry" if result.attempt < max_attempts else "fail"
