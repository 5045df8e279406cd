"""A simulated worker pool: the `Pool` the driver's dispatcher talks to, with no workers behind it.

Each worker runs its queue in order on a simulated clock: a shard takes a latency drawn from
`latency` (simulated seconds; 0 answers at once), and `wait` jumps the clock to the next finish
instead of sleeping, so a run of 262,144 shards takes only the driver's own time. The time spent
inside the pool itself is kept in `pool_seconds`, so a benchmark can report the driver's cost alone.

Faults for tests of the dispatcher: `fail_workers` answer every shard with a crash at once (a bad
device); `die_after[w] = n` kills worker w's process after n shards (its shards in flight come
back as died), and it comes back after a restart unless w is in `stay_dead`; pings to `silent`
workers never answer (a restart that hangs); `spares` is how many replacements the "cluster" has
room for. `log` records every submit as (worker, shard, load before).
"""

from __future__ import annotations

import heapq
import random
import time
from collections import defaultdict
from typing import Callable

from orchestrator.cluster.pool import Outcome, died_result
from workers.contract import ShardResult, ShardTask, WorkerError, WorkerInfo

Latency = Callable[[random.Random], float]


def info_of(worker: int) -> WorkerInfo:
    return WorkerInfo(worker_id=worker, node_id=f"node{worker % 8}", hostname=f"host{worker % 8}", pid=1000 + worker,
                      device=f"sim:{worker}", device_name="Simulated", num_examples=0, dataset_fingerprint="",
                      load_seconds=0.0, data_seconds=0.0, build=None, precision_effective="fp16", peak_flops=None,
                      mem_total_bytes=None, item_unit="sequences")


class SimulatedPool:
    def __init__(self, size: int, latency: Latency = lambda rng: 0.0, seed: int = 0, fail_workers=(),
                 die_after: dict[int, int] | None = None, stay_dead=(), silent=(), spares: int = 0) -> None:
        self.size = size
        self.prefetched_nodes: list[str] = []
        self.lost: dict[int, str] = {}
        self.latency, self.rng = latency, random.Random(seed)
        self.fail_workers, self.stay_dead, self.silent = set(fail_workers), set(stay_dead), set(silent)
        self.die_after, self.spares = dict(die_after or {}), spares
        self.now = 0.0
        self.busy_until: dict[int, float] = defaultdict(float)
        self.done_count: dict[int, int] = defaultdict(int)
        self.inflight: dict[int, set[int]] = defaultdict(set)
        self.retired: set[int] = set()
        self.workers = size  # ids handed out so far (replacements get the next ones)
        self.heap: list[tuple[float, int]] = []
        self.events: dict[int, tuple] = {}  # handle -> (kind, worker, shard or None)
        self.log: list[tuple[int, ShardTask, int]] = []
        self.deaths: list[tuple[int, int]] = []  # (worker, submits logged when it died)
        self.pool_seconds = 0.0
        self._next = 0

    def setup(self) -> list[WorkerInfo]:
        return [info_of(w) for w in range(self.size)]

    def _event(self, at: float, kind: str, worker: int, shard: ShardTask | None = None) -> int:
        self._next += 1
        self.events[self._next] = (kind, worker, shard)
        heapq.heappush(self.heap, (at, self._next))
        return self._next

    def submit(self, worker: int, shard: ShardTask) -> int:
        t0 = time.perf_counter()
        self.log.append((worker, shard, len(self.inflight[worker])))
        took = 0.0 if worker in self.fail_workers else self.latency(self.rng)
        finish = max(self.now, self.busy_until[worker]) + took
        self.busy_until[worker] = finish
        handle = self._event(finish, "shard", worker, shard)
        self.inflight[worker].add(handle)
        self.pool_seconds += time.perf_counter() - t0
        return handle

    def ping(self, worker: int) -> int:
        if worker in self.silent:
            self._next += 1
            return self._next
        return self._event(self.now, "ping", worker)

    def retire(self, worker: int) -> None:
        self.retired.add(worker)
        for handle in self.inflight.pop(worker, set()):
            self.events[handle] = ("died", worker, self.events[handle][2])
            heapq.heappush(self.heap, (self.now, handle))

    def replace(self, worker: int) -> int | None:
        if self.spares <= 0:
            return None
        self.spares -= 1
        self.workers += 1
        return self._event(self.now, "added", self.workers - 1)

    def wait(self, timeout_s, *older: float) -> list[Outcome]:
        """`wait(handles, timeout_s)` too: the call of the dispatcher before issue 21, whose cost
        dispatch_scale.py can then measure on the same pool (the handles are not needed here)."""
        timeout_s = older[0] if older else timeout_s
        t0 = time.perf_counter()
        if not self.heap:
            time.sleep(timeout_s)
            return []
        self.now = max(self.now, self.heap[0][0])
        outcomes = []
        while self.heap and self.heap[0][0] <= self.now:
            _, handle = heapq.heappop(self.heap)
            if handle in self.events:
                outcome = self._outcome(handle, *self.events.pop(handle))
                if outcome is not None:
                    outcomes.append(outcome)
        self.pool_seconds += time.perf_counter() - t0
        return outcomes

    def _outcome(self, handle: int, kind: str, worker: int, shard: ShardTask | None) -> Outcome | None:
        if kind == "ping":
            return Outcome(handle, None, died=worker in self.stay_dead, alive=worker not in self.stay_dead)
        if kind == "added":
            return Outcome(handle, None, died=False, added=worker, info=info_of(worker))
        self.inflight[worker].discard(handle)
        if kind == "died":
            return Outcome(handle, died_result(shard, worker, f"worker {worker} died"), died=True)
        self.done_count[worker] += 1
        if self.done_count[worker] == self.die_after.get(worker):
            self._kill(worker)
            return Outcome(handle, died_result(shard, worker, f"worker {worker} died"), died=True)
        return Outcome(handle, self._result(worker, shard), died=False)

    def _kill(self, worker: int) -> None:
        """The process dies: whatever it had queued dies with it."""
        self.deaths.append((worker, len(self.log)))
        for other in self.inflight.pop(worker, set()):
            self.events[other] = ("died", worker, self.events[other][2])
            heapq.heappush(self.heap, (self.now, other))
        self.busy_until[worker] = self.now

    def _result(self, worker: int, shard: ShardTask) -> ShardResult:
        identity = dict(shard_id=shard.shard_id, pass_name=shard.pass_name, attempt=shard.attempt, worker_id=worker,
                        node_id=f"node{worker % 8}", device_name="Simulated", pid=1000 + worker, repeat=shard.repeat)
        if worker in self.fail_workers:
            return ShardResult(**identity, error=WorkerError("crash", f"injected failure on worker {worker}"))
        n = shard.stop - shard.start
        seconds = 1e-3 * n  # what the result says it took: the merge reads it, the clock above does not
        return ShardResult(**identity, examples=n, items=n, scored=n, correct=n // 2, core_seconds=seconds,
                           wall_seconds=seconds, start_ts=self.now - seconds, end_ts=self.now,
                           batch_core_seconds=[seconds], batch_items=[n], bytes_per_batch=4 * n, peak_mem_bytes=1 << 20)

    def shutdown(self) -> None:
        self.heap.clear()
