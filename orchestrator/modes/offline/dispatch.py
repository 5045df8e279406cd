"""Handing shards to workers, and what happens when a worker fails, dies or is taken out.

Each worker gets up to QUEUE_DEPTH shards at once (one running, one queued in the actor, so it never
waits on the driver), until the shards left are no more than the workers: from then on a shard goes
only to a worker with nothing to do, never into a queue behind a running shard while another worker
may be about to idle (the end of a pass is where workers must finish together). Workers with
nothing to do are served first. A finished attempt goes through `policy.decide`: accepted,
re-queued (at the front, so the run's tail does not wait on it, and for a worker that has not
failed it: `policy.may_run`), or the run fails naming the shard. `policy.judge_worker` takes out a
worker that keeps failing (killed, and replaced where the cluster has room); `lost` says which and why.
A worker whose process died is "suspect": it gets no new shards until it answers a ping (Ray
restarted it, up to `max_restarts`), or is dropped if the ping says it is gone for good. Pings and
replacements never hold the phase open: it ends when every shard is accepted.

Cost: every step is O(1) per shard whatever the number of workers (workers with free slots are kept
in insertion-ordered buckets by load, and the pool reports finished handles without being handed
the list of everything in flight); benchmarks/dispatch_scale.py measures it at 4,096 workers.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import replace
from typing import Callable

from orchestrator.cluster.policy import RESTART_WAIT_S, decide, judge_worker, may_run
from orchestrator.cluster.pool import Outcome, Pool
from workers.contract import ShardResult, ShardTask, WorkerInfo
from workers.errors import RunFailed

QUEUE_DEPTH = 2
WAIT_SLICE_S = 0.25

Retry = tuple[ShardTask, frozenset]  # a shard to run again, and the workers that failed it


class Dispatcher:
    def __init__(self, pool: Pool, max_attempts: int, on_result: Callable[[ShardResult], None]) -> None:
        self.pool = pool
        self.max_attempts = max_attempts
        self.on_result = on_result
        self.lost: dict[int, str] = dict(pool.lost)  # worker -> why it was dropped or taken out
        self.live = set(range(pool.size)) - set(self.lost)
        self.suspect: set[int] = set()
        self.pings: dict[object, int] = {}
        self.joining: dict[object, int] = {}  # replacement handle -> the worker it replaces
        self.joined: list[WorkerInfo] = []  # replacements that set up and took work
        self.replacements_left = pool.size
        self.failed_attempts: list[ShardResult] = []
        self.load = {w: 0 for w in self.live}
        self.streak = {w: 0 for w in self.live}
        # Ready workers with a free slot, by load, in the order they got there: the least loaded worker
        # that waited longest is served first. OrderedDict, not dict: a plain dict emptied from the
        # front keeps the deleted slots until it resizes, and finding its first key walks past them
        # (O(workers) per shard at 4,096 workers, found by benchmarks/dispatch_scale.py).
        self.free: list[OrderedDict[int, None]] = [OrderedDict.fromkeys(sorted(self.live) if d == 0 else ())
                                                   for d in range(QUEUE_DEPTH)]
        self.ready_count = len(self.live)

    def run(self, shards: list[ShardTask]) -> list[ShardResult]:
        fresh: deque[ShardTask] = deque(shards)
        retries: deque[Retry] = deque()
        busy: dict[object, tuple[int, ShardTask, frozenset]] = {}
        accepted: list[ShardResult] = []
        starved_since: float | None = None
        while fresh or retries or busy:
            self._assign(fresh, retries, busy)
            if not self.live and not self.joining:
                raise RunFailed(f"every worker was lost ({self._lost_text()}); finished shards are kept in the run folder")
            starved_since = self._check_starved(bool(busy), starved_since)
            for out in self.pool.wait(WAIT_SLICE_S):
                if out.handle in self.pings:
                    self._answer_ping(self.pings.pop(out.handle), out.alive)
                elif out.handle in self.joining:
                    self._join(self.joining.pop(out.handle), out)
                elif out.handle in busy:
                    w, shard, failed_on = busy.pop(out.handle)
                    self._release(w)
                    self._settle(out, shard, failed_on, w, retries, accepted)
        return accepted

    # -- handing out shards
    def _assign(self, fresh: deque, retries: deque, busy: dict) -> None:
        """Retries first, each to a worker that may run it; then fresh shards, least loaded first."""
        for _ in range(len(retries)):
            shard, failed_on = retries.popleft()
            worker = self._free_worker(len(fresh) + len(retries) + 1, failed_on)
            if worker is None:
                retries.append((shard, failed_on))
                continue
            busy[self.pool.submit(worker, shard)] = (worker, shard, failed_on)
            self._take(worker)
        while fresh:
            worker = self._free_worker(len(fresh) + len(retries), frozenset())
            if worker is None:
                return
            shard = fresh.popleft()
            busy[self.pool.submit(worker, shard)] = (worker, shard, frozenset())
            self._take(worker)

    def _free_worker(self, pending: int, failed_on: frozenset) -> int | None:
        """The first ready worker with a free slot that may run the shard: an idle one, or, while more
        shards wait than there are workers, one with room in its queue. Scans past at most the
        few workers that failed this shard."""
        depth = QUEUE_DEPTH if pending > self.ready_count else 1
        for load in range(depth):
            for worker in self.free[load]:
                if may_run(worker, failed_on, self.live):
                    return worker
        return None

    def _take(self, worker: int) -> None:
        load = self.load[worker]
        del self.free[load][worker]
        self.load[worker] = load + 1
        if load + 1 < QUEUE_DEPTH:
            self.free[load + 1][worker] = None

    def _release(self, worker: int) -> None:
        load = self.load[worker]
        self.load[worker] = load - 1
        if worker in self.live and worker not in self.suspect:
            if load < QUEUE_DEPTH:
                del self.free[load][worker]
            self.free[load - 1][worker] = None

    def _make_ready(self, worker: int) -> None:
        if self.load[worker] < QUEUE_DEPTH:
            self.free[self.load[worker]][worker] = None
        self.ready_count += 1

    def _unready(self, worker: int) -> None:
        load = self.load[worker]
        if load < QUEUE_DEPTH:
            self.free[load].pop(worker, None)
        self.ready_count -= 1

    # -- outcomes
    def _settle(self, out: Outcome, shard: ShardTask, failed_on: frozenset, worker: int, retries: deque,
                accepted: list) -> None:
        result = out.result
        self.on_result(result)
        if worker in self.live:
            if out.died:
                self._suspect(worker)
            self.streak[worker], verdict = judge_worker(self.streak[worker], result, out.died)
            if verdict == "take_out":
                self._take_out(worker, f"{self.streak[worker]} failed shards in a row, the last: {result.error.message}")
        verdict = decide(result, self.max_attempts)
        if verdict == "accept":
            accepted.append(result)
            return
        self.failed_attempts.append(result)
        if verdict == "retry":
            retries.appendleft((replace(shard, attempt=shard.attempt + 1), failed_on | {worker}))
            return
        what = (f"examples {shard.start}-{shard.stop}" if shard.examples is None
                else f"{len(shard.examples)} examples, {shard.start}-{shard.stop} in the plan's length order")
        raise RunFailed(
            f"shard {shard.key} ({what}) failed on attempt {shard.attempt}/"
            f"{self.max_attempts} on worker {worker}: {result.error.message}"
        )

    def _check_starved(self, working: bool, since: float | None) -> float | None:
        """Fail the run if no worker has been usable for RESTART_WAIT_S (lost node, no spare GPUs)."""
        if working or self.ready_count:
            return None
        now = time.monotonic()
        if since is not None and now - since > RESTART_WAIT_S:
            raise RunFailed(f"no worker came back within {RESTART_WAIT_S:.0f} s after failures (lost node, no spare GPUs?)")
        return since if since is not None else now

    def _suspect(self, worker: int) -> None:
        if worker not in self.suspect:
            self.suspect.add(worker)
            self._unready(worker)
            self.pings[self.pool.ping(worker)] = worker

    def _answer_ping(self, worker: int, alive: bool) -> None:
        if worker not in self.suspect:
            return
        self.suspect.discard(worker)
        if alive:
            self._make_ready(worker)
            return
        self.live.discard(worker)
        self._lose(worker, "its process died and Ray did not restart it (max_restarts spent, or its node is gone)")

    def _take_out(self, worker: int, why: str) -> None:
        """Kill a worker that keeps failing, and ask for a replacement on resources the run does not hold."""
        if worker not in self.suspect:
            self._unready(worker)
        self.suspect.discard(worker)
        self.live.discard(worker)
        self._lose(worker, why)
        self.pool.retire(worker)
        if self.replacements_left > 0:
            handle = self.pool.replace(worker)
            if handle is not None:
                self.replacements_left -= 1
                self.joining[handle] = worker

    def _join(self, replaced: int, out: Outcome) -> None:
        worker, info = out.added, out.info
        if worker is None:
            return
        if out.died or info is None or info.error is not None:
            why = "died while loading" if out.died or info is None else info.error.message
            self._lose(worker, f"replacement for worker {replaced}: {why}")
            self.pool.retire(worker)
            return
        self.joined.append(info)
        self.live.add(worker)
        self.load[worker] = 0
        self.streak[worker] = 0
        self.free[0][worker] = None
        self.ready_count += 1

    def _lose(self, worker: int, why: str) -> None:
        """Recorded in the pool too: a later dispatcher on it (the invariance check) skips the worker."""
        self.lost[worker] = why
        self.pool.lost[worker] = why

    def _lost_text(self) -> str:
        return "; ".join(f"worker {w}: {why}" for w, why in sorted(self.lost.items())) or "none"
