"""The run's workers as the LoadGen bridge sees them: calls that return futures.

A batch handed to a worker comes back as a `concurrent.futures.Future`, whichever way the worker
runs: a Ray actor call (`ObjectRef.future()`: Ray's own thread completes it) or the in-process
worker of `--no-ray` (a one-thread executor per worker). The bridge adds a done-callback that puts
the future on its inbox, so its one thread sleeps on one queue and wakes for arrivals and
completions alike, instead of polling `ray.wait`.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from orchestrator.run.pool import InProcessPool, Pool, RayPool
from workers.contract import DataHandle, SampleBatch, ShardResult
from workers.errors import RunFailed, UserError, first_line


class SampleWorkers(Protocol):
    size: int

    def warm_up(self, pass_name: str) -> list[int]:
        """Warm every worker's engine for the pass; the warm-up batches each ran."""

    def run(self, worker: int, batch: SampleBatch) -> "Future[ShardResult]": ...

    def ping(self, worker: int) -> Future: ...

    def is_death(self, exc: BaseException) -> bool:
        """The worker's process is gone (killed, OOM-killed, node lost), as opposed to a bug."""

    def close(self) -> None: ...


class RayWorkers:
    """The pool's actors. The data handle goes with the warm-up and with the first batch after a
    restart (a restarted actor rebuilds from it), not with every batch: an argument holding an
    ObjectRef costs about a millisecond per call in Ray's reference counting, on every query."""

    def __init__(self, pool: RayPool) -> None:
        import ray

        self._ray = ray
        kept = [w for w in range(pool.size) if w not in pool.lost]  # setup dropped the others (pool.py)
        self.actors, self.handles = [pool.actors[w] for w in kept], [pool.handles[w] for w in kept]
        self.size = len(kept)
        self._needs_data: set[int] = set()

    def warm_up(self, pass_name: str) -> list[int]:
        try:
            return self._ray.get([a.warm_up.remote(pass_name, h) for a, h in zip(self.actors, self.handles)])
        except self._ray.exceptions.RayActorError as exc:
            raise RunFailed(f"a worker died while warming up: {first_line(exc)}") from exc

    def run(self, worker: int, batch: SampleBatch) -> Future:
        data = self.handles[worker] if worker in self._needs_data else None
        self._needs_data.discard(worker)
        return self.actors[worker].run_samples.remote(batch, data).future()

    def ping(self, worker: int) -> Future:
        """Asked after the worker died: when it answers, Ray has restarted it, empty."""
        self._needs_data.add(worker)
        return self.actors[worker].pid.remote().future()

    def is_death(self, exc: BaseException) -> bool:
        return isinstance(exc, (self._ray.exceptions.RayActorError, self._ray.exceptions.WorkerCrashedError))

    def close(self) -> None:
        return None


class LocalWorkers:
    """BenchWorkers in this process, each behind a one-thread executor (the GIL is released while
    an engine computes or the synthetic engine sleeps). They cannot die apart from the process."""

    def __init__(self, workers: list[Any], data: list[DataHandle | None]) -> None:
        self.workers, self.data = workers, data
        self.size = len(workers)
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix=f"raybench-w{i}") for i in range(self.size)]

    def warm_up(self, pass_name: str) -> list[int]:
        return [w.warm_up(pass_name, d) for w, d in zip(self.workers, self.data)]

    def run(self, worker: int, batch: SampleBatch) -> Future:
        return self._executors[worker].submit(self.workers[worker].run_samples, batch, self.data[worker])

    def ping(self, worker: int) -> Future:
        return self._executors[worker].submit(self.workers[worker].pid)

    def is_death(self, exc: BaseException) -> bool:
        return False

    def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=True)


def sample_workers(pool: Pool) -> SampleWorkers:
    if isinstance(pool, InProcessPool):
        return LocalWorkers([pool.worker], [pool.data])
    if isinstance(pool, RayPool):
        return RayWorkers(pool)
    raise UserError(f"scenario: LoadGen scenarios run on single-device workers, not {type(pool).__name__}")
