"""Handing shards to workers, and what happens when a worker dies.

Each worker gets up to QUEUE_DEPTH shards at once (one running, one queued in the actor, so it never
waits on the driver), until the shards left are no more than the workers: from then on a shard goes
only to a worker with nothing to do, never into a queue behind a running shard while another worker
may be about to idle (the end of a pass is where workers must finish together). A finished attempt
goes through `policy.decide`: accepted, re-queued (at the front, so the run's tail does not wait on
it), or the run fails naming the shard. A worker whose
process died is "suspect": it gets no new shards until it answers a ping (Ray restarted it, up to
`max_restarts`), or is dropped if the ping says it is gone for good. Pings never hold the phase open:
it ends when every shard is accepted.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from typing import Callable

from orchestrator.run.policy import decide
from orchestrator.run.pool import Pool
from workers.contract import ShardResult, ShardTask
from workers.errors import RunFailed

QUEUE_DEPTH = 2
WAIT_SLICE_S = 0.25
RESTART_WAIT_S = 300.0  # how long a run may have no usable worker before it gives up


class Dispatcher:
    def __init__(self, pool: Pool, max_attempts: int, on_result: Callable[[ShardResult], None]) -> None:
        self.pool = pool
        self.max_attempts = max_attempts
        self.on_result = on_result
        self.live = set(range(pool.size))
        self.suspect: set[int] = set()
        self.pings: dict[object, int] = {}
        self.failed_attempts: list[ShardResult] = []

    def _ready_workers(self) -> list[int]:
        return sorted(self.live - self.suspect)

    def run(self, shards: list[ShardTask]) -> list[ShardResult]:
        pending = deque(shards)
        busy: dict[object, tuple[int, ShardTask]] = {}
        load = {w: 0 for w in range(self.pool.size)}
        accepted: list[ShardResult] = []
        starved_since: float | None = None
        while pending or busy:
            ready = sorted(self._ready_workers(), key=lambda w: load[w])
            for w in ready:
                while pending and load[w] < (QUEUE_DEPTH if len(pending) > len(ready) else 1):
                    shard = pending.popleft()
                    busy[self.pool.submit(w, shard)] = (w, shard)
                    load[w] += 1
            if not self.live:
                raise RunFailed("every worker died and none could be restarted; finished shards are kept in the run folder")
            starved_since = self._check_starved(bool(busy), starved_since)
            for out in self.pool.wait([*busy, *self.pings], WAIT_SLICE_S):
                if out.handle in self.pings:
                    self._answer_ping(self.pings.pop(out.handle), out.alive)
                    continue
                w, shard = busy.pop(out.handle)
                load[w] -= 1
                if out.died:
                    self._suspect(w)
                self._settle(out.result, shard, w, pending, accepted)
        return accepted

    def _check_starved(self, working: bool, since: float | None) -> float | None:
        """Fail the run if no worker has been usable for RESTART_WAIT_S (lost node, no spare GPUs)."""
        if working or self._ready_workers():
            return None
        now = time.monotonic()
        if since is not None and now - since > RESTART_WAIT_S:
            raise RunFailed(f"no worker came back within {RESTART_WAIT_S:.0f} s after failures (lost node, no spare GPUs?)")
        return since if since is not None else now

    def _suspect(self, worker: int) -> None:
        if worker not in self.suspect:
            self.suspect.add(worker)
            self.pings[self.pool.ping(worker)] = worker

    def _answer_ping(self, worker: int, alive: bool) -> None:
        self.suspect.discard(worker)
        if not alive:
            self.live.discard(worker)

    def _settle(self, result: ShardResult, shard: ShardTask, worker: int, pending: deque, accepted: list) -> None:
        self.on_result(result)
        verdict = decide(result, self.max_attempts)
        if verdict == "accept":
            accepted.append(result)
            return
        self.failed_attempts.append(result)
        if verdict == "retry":
            pending.appendleft(replace(shard, attempt=shard.attempt + 1))
            return
        raise RunFailed(
            f"shard {shard.key} (examples {shard.start}-{shard.stop}) failed on attempt {shard.attempt}/"
            f"{self.max_attempts} on worker {worker}: {result.error.message}"
        )
