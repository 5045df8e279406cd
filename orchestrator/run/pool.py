"""Worker pools: the Ray one (actors in a placement group) and an in-process one (no Ray).

The driver's dispatch loop talks to either through the same four calls: `setup`, `submit`,
`wait`, `ping`. A handle is whatever the pool returns from submit/ping; `wait` yields finished
handles with their outcome, converting a dead actor into a `ShardResult` whose error says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.run.data import Dataset
from workers.actor import BenchWorker
from workers.contract import ShardResult, ShardTask, WorkerError, WorkerInfo
from workers.errors import RunFailed, UserError, first_line
from workers.specs import WorkerConfig

log = logging.getLogger(__name__)
LOCAL_NODE = "local"
PLACEMENT_TIMEOUT_S = 60.0
TOKEN_CPU = 0.01


@dataclass
class Outcome:
    handle: Any
    result: ShardResult | None  # None for a ping
    died: bool  # the worker process is gone (killed, OOM-killed, node lost)
    alive: bool = True  # for pings: the worker answered


class Pool(Protocol):
    size: int
    prefetched_nodes: list[str]  # nodes that downloaded the model's weights before the actors started

    def setup(self) -> list[WorkerInfo]: ...

    def submit(self, worker: int, shard: ShardTask) -> Any: ...

    def ping(self, worker: int) -> Any: ...

    def wait(self, handles: list[Any], timeout_s: float) -> list[Outcome]: ...

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

    def wait(self, handles: list[int], timeout_s: float) -> list[Outcome]:
        return [self._done.pop(h) for h in handles if h in self._done]

    def shutdown(self) -> None:
        self.worker.close()


class RayPool:
    """One actor per device, gang-scheduled in a SPREAD placement group.

    Placement: one bundle per worker {GPU: g, CPU: c}, strategy SPREAD. Workers never talk to each
    other (data-parallel shards), so packing buys nothing; spreading puts the host-side work
    (tokenising, H2D copies, NICs) of a run on as many nodes as possible and loses fewer workers
    when a node goes. The group reserves everything up front, so a run either gets all its workers
    or fails in one line instead of starting half-sized. Model weights are fetched once per node
    (one task per node) before the actors start, instead of every actor downloading at once. Each
    actor is handed the prepared dataset of its node and starts setting up at once, so importing
    and loading overlap with the data preparation it then waits for.
    """

    def __init__(self, spec, run_id: str, workers: int, gpus: float, cpus: float, data: Dataset):
        import ray

        self._ray = ray
        self.size = workers
        self.pg = None
        self.prefetched_nodes: list[str] = []
        self.actors = []
        # A bundle needs some resource: workers that ask for none (the synthetic engine) still get a
        # token CPU share, so they too are spread over the nodes and named after where they run.
        cpus = cpus if cpus > 0 or gpus > 0 else TOKEN_CPU
        bundle = {k: v for k, v in (("GPU", gpus), ("CPU", cpus)) if v > 0}
        self.pg = _reserve(run_id, workers, bundle)
        try:
            self._start(spec, run_id, gpus, cpus, data)
        except BaseException:
            self.shutdown()
            raise
        self._kinds: dict[Any, tuple[str, int, ShardTask | None]] = {}

    def _start(self, spec, run_id: str, gpus: float, cpus: float, data: Dataset) -> None:
        ray = self._ray
        nodes = _bundle_nodes(self.pg, self.size)
        self.prefetched_nodes = _prefetch_weights(spec.model, sorted({n for n in nodes if n}))
        addresses = _node_addresses()
        remote = ray.remote(BenchWorker)
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        for i in range(self.size):
            strategy = PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i)
            slot = nodes[:i].count(nodes[i])
            where = f"{addresses.get(nodes[i], nodes[i][:8])}:{'gpu' if gpus else 'cpu'}{slot}"
            self.actors.append(
                remote.options(
                    name=f"raybench:{run_id}:w{i}@{where}",
                    num_gpus=gpus,
                    num_cpus=cpus,
                    max_restarts=spec.max_restarts,
                    max_task_retries=0,  # the driver re-queues shards itself, counting attempts
                    scheduling_strategy=strategy,
                ).remote(spec.worker_config(), i, run_id)
            )
        self.handles = data.handles(nodes, self.actors)  # the first worker may be the one to prepare it
        self._begin_setup()

    def _begin_setup(self) -> None:
        """Every worker starts loading now, handed its node's prepared data; `setup` collects them."""
        self._setups = [a.setup.remote(h) for a, h in zip(self.actors, self.handles)]

    def setup(self) -> list[WorkerInfo]:
        try:
            return self._ray.get(self._setups)
        except self._ray.exceptions.RayActorError as exc:
            raise RunFailed(f"a worker died while loading its model or engine: {first_line(exc)}") from exc

    def submit(self, worker: int, shard: ShardTask) -> Any:
        ref = self.actors[worker].run_shard.remote(shard, self.handles[worker])
        self._kinds[ref] = ("shard", worker, shard)
        return ref

    def ping(self, worker: int) -> Any:
        ref = self.actors[worker].pid.remote()
        self._kinds[ref] = ("ping", worker, None)
        return ref

    def wait(self, handles: list[Any], timeout_s: float) -> list[Outcome]:
        ray = self._ray
        ready, rest = ray.wait(handles, num_returns=1, timeout=timeout_s)
        if ready and rest:  # collect whatever else has finished, without waiting
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        outcomes = []
        for ref in ready:
            kind, worker, shard = self._kinds.pop(ref)
            try:
                value = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                if kind == "ping":
                    outcomes.append(Outcome(ref, None, died=True, alive=False))
                else:
                    message = f"worker {worker} died: {first_line(exc)}"
                    outcomes.append(Outcome(ref, died_result(shard, worker, message), died=True))
                continue
            outcomes.append(Outcome(ref, value if kind == "shard" else None, died=False))
        return outcomes

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            try:
                self._ray.kill(actor, no_restart=True)
            except self._ray.exceptions.RayError as exc:  # the cluster lost it already: nothing left to stop
                log.debug("could not kill worker actor %s: %s", actor, exc)
        if self.pg is not None:
            remove_placement_group(self.pg)


def _reserve(run_id: str, workers: int, bundle: dict[str, float]):
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group([dict(bundle) for _ in range(workers)], strategy="SPREAD", name=f"raybench:{run_id}")
    ready, _ = ray.wait([pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
    if not ready:
        remove_placement_group(pg)
        raise UserError(
            f"workers: the cluster could not place {workers} workers x {bundle} within "
            f"{PLACEMENT_TIMEOUT_S:.0f} s (resources busy or too few); lower workers or free the cluster"
        )
    return pg


def _bundle_nodes(pg, workers: int) -> list[str]:
    """Node id of each worker's bundle."""
    from ray.util import placement_group_table

    table = placement_group_table(pg)["bundles_to_node_id"]
    return [table.get(i, "") for i in range(workers)]


def _node_addresses() -> dict[str, str]:
    import ray

    return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}


def _prefetch_weights(model, node_ids: list[str]) -> list[str]:
    """Download hub weights once on each node that will run workers, before the actors fan out.

    Returns the node ids that fetched. Local folders and random models need nothing.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from workers.models import fetch_weights, needs_fetch

    if not needs_fetch(model) or not node_ids:
        return []
    fetch = ray.remote(num_cpus=0, max_retries=1)(fetch_weights)
    refs = [fetch.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(model)
            for n in node_ids]
    try:
        ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(getattr(exc, "cause", None), UserError) else None
        raise (cause or UserError(f"model.source: fetching weights failed: {first_line(exc)}")) from exc
    return node_ids
