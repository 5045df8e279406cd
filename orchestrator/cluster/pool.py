"""Worker pools: the protocol every mode's workers are reached through, and the in-process pool.

The dispatch loop talks to any pool through the same calls: `setup`, `submit`, `wait`, `ping`,
`retire`, `replace`. A handle is whatever the pool returns from submit/ping/replace; `wait` yields
the handles that finished since the last call with their outcome, converting a dead actor into a
`ShardResult` whose error says so. The pools on Ray: orchestrator/cluster/ray_pool.py (one actor
per device) and orchestrator/cluster/groups.py (tensor-parallel groups), on the calls they share
in orchestrator/cluster/actor_pool.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.cluster.data import Dataset
from workers.actor import BenchWorker
from workers.contract import ShardResult, ShardTask, WorkerError, WorkerInfo
from workers.specs import WorkerConfig

LOCAL_NODE = "local"


@dataclass
class Outcome:
    handle: Any
    result: ShardResult | None  # None for a ping
    died: bool  # the worker process is gone (killed, OOM-killed, node lost)
    alive: bool = True  # for pings: the worker answered
    added: int | None = None  # for replacements: the new worker's id
    info: WorkerInfo | None = None  # for replacements: what its setup reported


class Pool(Protocol):
    size: int
    prefetched_nodes: list[str]  # nodes that downloaded the model's weights before the actors started
    lost: dict[int, str]  # workers `setup` dropped (died while loading, not restarted) -> why

    def setup(self) -> list[WorkerInfo]: ...

    def submit(self, worker: int, shard: ShardTask) -> Any: ...

    def ping(self, worker: int) -> Any: ...

    def wait(self, timeout_s: float) -> list[Outcome]:
        """Outcomes of the handles that finished since the last call; waits up to `timeout_s` for one."""

    def retire(self, worker: int) -> None:
        """Kill a worker for good; its shards in flight come back from `wait` as died."""

    def replace(self, worker: int) -> Any | None:
        """Start a new worker in a retired one's stead, on resources the run does not hold yet.
        Returns a handle whose outcome (`added`, `info`) comes once it is set up, or None: no replacement."""

    def shutdown(self) -> None: ...


def died_result(shard: ShardTask, worker: int, message: str) -> ShardResult:
    return ShardResult(
        shard_id=shard.shard_id, pass_name=shard.pass_name, attempt=shard.attempt, worker_id=worker,
        node_id="", device_name="", pid=0, error=WorkerError("crash", message), repeat=shard.repeat,
    )


class InProcessPool:
    """One BenchWorker in this process: for a GPU box without Ray, and for debugging."""

    size = 1
    prefetched_nodes: list[str] = []

    def __init__(self, config: WorkerConfig, run_id: str, data: Dataset) -> None:
        self.worker = BenchWorker(config, 0, run_id)
        self.data = data.handles([LOCAL_NODE])[0]
        self._done: dict[int, Outcome] = {}
        self._next = 0
        self.lost: dict[int, str] = {}

    def setup(self) -> list[WorkerInfo]:
        return [self.worker.setup(self.data)]

    def _finish(self, result: ShardResult | None) -> int:
        self._next += 1
        self._done[self._next] = Outcome(self._next, result, died=False)
        return self._next

    def submit(self, worker: int, shard: ShardTask) -> int:
        return self._finish(self.worker.run_shard(shard, self.data))

    def ping(self, worker: int) -> int:
        return self._finish(None)

    def wait(self, timeout_s: float) -> list[Outcome]:
        done, self._done = list(self._done.values()), {}
        return done

    def retire(self, worker: int) -> None:
        """Nothing runs in the background here: the one worker simply gets no more shards."""

    def replace(self, worker: int) -> None:
        return None

    def shutdown(self) -> None:
        self.worker.close()
