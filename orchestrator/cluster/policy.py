"""The one place that decides what happens to a shard attempt and to the worker that made it.

A shard attempt: accept it, retry it, or fail the run. User errors (bad data, a missing library)
and out-of-memory errors are deterministic: retrying wastes the cluster's time, so the run fails at
once with the worker's message. Crashes and dead workers (killed process, lost node) are retried,
up to `max_attempts` attempts per shard, on a worker that has not failed that shard yet where there
is one (a fast-failing worker would otherwise get its own failed shard straight back and use up
every attempt in milliseconds).

A worker: kept, or taken out after FAILURES_IN_A_ROW failed shards with no success between them
(a bad GPU: an XID/ECC fault, a group that cannot form, a data object it cannot fetch). A process
death does not count here: Ray restarts the process (`max_restarts`) and a ping decides whether it
came back (orchestrator/modes/offline/dispatch.py).
"""

from __future__ import annotations

from typing import AbstractSet, Literal

from workers.contract import ShardResult, WorkerInfo

Decision = Literal["accept", "retry", "fail"]
WorkerDecision = Literal["keep", "take_out"]
FAILURES_IN_A_ROW = 3
RESTART_WAIT_S = 300.0  # how long a run may have no usable worker before it gives up
REPING_S = 0.5  # a ping that found the worker "temporarily unavailable" (mid-restart) is sent again after this


def decide(result: ShardResult, max_attempts: int) -> Decision:
    if result.error is None:
        return "accept"
    if result.error.kind in ("user", "oom"):
        return "fail"
    return "retry" if result.attempt < max_attempts else "fail"


def judge_worker(failures_in_a_row: int, result: ShardResult, died: bool) -> tuple[int, WorkerDecision]:
    """The worker's failures in a row after this attempt, and whether it stays."""
    if result.error is None:
        return 0, "keep"
    if died:
        return failures_in_a_row, "keep"
    streak = failures_in_a_row + 1
    return streak, "take_out" if streak >= FAILURES_IN_A_ROW else "keep"


def may_run(worker: int, failed_on: AbstractSet[int], live: AbstractSet[int]) -> bool:
    """A retry goes to a worker that has not failed this shard, unless every live worker has."""
    return worker not in failed_on or len(failed_on & live) == len(live)


def broken_at_setup(infos: list[WorkerInfo]) -> dict[int, str]:
    """Workers to drop before the run starts: their setup crashed (a device fault, a group that
    cannot form) while others set up. User and out-of-memory errors are the job's own (every worker
    would hit them) and a crash on every worker is no bad device: those still fail the run."""
    crashed = {i.worker_id: i.error.message for i in infos if i.error is not None and i.error.kind == "crash"}
    return crashed if len(crashed) < len(infos) else {}
