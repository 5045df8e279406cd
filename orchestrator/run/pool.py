"""Worker pools: the Ray one (actors in a placement group) and an in-process one (no Ray).

The driver's dispatch loop talks to either through the same calls: `setup`, `submit`, `wait`,
`ping`, `retire`, `replace`. A handle is whatever the pool returns from submit/ping/replace; `wait`
yields the handles that finished since the last call with their outcome (the pool keeps track of
what is in flight, so a call costs the same with 8 workers or 4,096), converting a dead actor into
a `ShardResult` whose error says so.
"""

from __future__ import annotations

import logging
import queue
import time
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
REPING_S = 0.5  # a ping that found the worker "temporarily unavailable" (mid-restart) is sent again after this
TOKEN_CPU = 0.01


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

    Failures: a worker that dies while it sets up is asked once more (Ray restarts it, up to
    `max_restarts`) and dropped if it dies again, so one lost process does not fail the run. A
    worker Ray restarted on another node (its node was lost, its bundle moved) is handed that
    node's data (prepared there if the data is node-local). A retired worker's replacement gets a
    placement group of its own, so it never lands on the retired worker's device (that bundle
    stays reserved until the run ends) and waits, without holding the run, until the cluster has room.
    """

    def __init__(self, spec, run_id: str, workers: int, gpus: float, cpus: float, data: Dataset):
        import ray

        self._ray = ray
        self.size = workers
        self.pg = None
        self.prefetched_nodes: list[str] = []
        self.actors = []
        self.lost: dict[int, str] = {}
        self._init_tracking(spec, run_id, data)
        # A bundle needs some resource: workers that ask for none (the synthetic engine) still get a
        # token CPU share, so they too are spread over the nodes and named after where they run.
        cpus = cpus if cpus > 0 or gpus > 0 else TOKEN_CPU
        self.bundle = {k: v for k, v in (("GPU", gpus), ("CPU", cpus)) if v > 0}
        self._resources = (gpus, cpus)
        self.pg = _reserve(run_id, workers, self.bundle)
        try:
            self._start(spec, run_id, gpus, cpus, data)
        except BaseException:
            self.shutdown()
            raise

    def _init_tracking(self, spec, run_id: str, data: Dataset) -> None:
        """What both pools keep to follow work in flight and to rehome, retire and replace workers."""
        self._spec, self._run_id, self.data = spec, run_id, data
        self._kinds: dict[Any, tuple[str, int, Any, Any]] = {}  # ref -> (kind, worker, payload, future)
        self._finished: queue.Queue = queue.Queue()
        self.placements: list[tuple[Any, int]] = []  # each worker's (placement group, bundle index)
        self.spare_pgs: list[Any] = []
        self._remote = None
        self._repings: list[tuple[float, int, Any]] = []  # (when, worker, the ping's first handle)

    def _start(self, spec, run_id: str, gpus: float, cpus: float, data: Dataset) -> None:
        nodes = _bundle_nodes(self.pg, self.size)
        self.prefetched_nodes = _prefetch_weights(spec.model, sorted({n for n in nodes if n}))
        addresses = _node_addresses()
        for i in range(self.size):
            slot = nodes[:i].count(nodes[i])
            where = f"{addresses.get(nodes[i], nodes[i][:8])}:{'gpu' if gpus else 'cpu'}{slot}"
            self.placements.append((self.pg, i))
            self.actors.append(self._new_actor(i, where))
        self.nodes = list(nodes)
        self.handles = self.data.handles(nodes, self.actors)  # the first worker may be the one to prepare it
        self._begin_setup()

    def _new_actor(self, worker: int, where: str):
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        pg, index = self.placements[worker]
        gpus, cpus = self._resources
        if self._remote is None:
            self._remote = self._ray.remote(BenchWorker)
        return self._remote.options(
            name=f"raybench:{self._run_id}:w{worker}@{where}",
            num_gpus=gpus,
            num_cpus=cpus,
            max_restarts=self._spec.max_restarts,
            max_task_retries=0,  # the driver re-queues shards itself, counting attempts
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index),
        ).remote(self._spec.worker_config(), worker, self._run_id)

    def _begin_setup(self) -> None:
        """Every worker starts loading now, handed its node's prepared data; `setup` collects them."""
        self._setups = [a.setup.remote(h) for a, h in zip(self.actors, self.handles)]

    def setup(self) -> list[WorkerInfo]:
        """Every worker's setup; one that died is asked again (a restarted process), then dropped."""
        infos, died = self._collect(dict(enumerate(self._setups)))
        stale = self._refresh_handles()
        failed_on_stale_data = {w for w in stale if w in infos and infos[w].error is not None}
        if died or failed_on_stale_data:
            again = {w: self.actors[w].setup.remote(self.handles[w]) for w in sorted({*died, *failed_on_stale_data})}
            more, died = self._collect(again)
            infos.update(more)
        for worker, why in died.items():
            self.lost[worker] = f"died while loading its model or engine, twice: {why}"
            self.retire(worker)
        if not infos:
            raise RunFailed(f"every worker died while loading its model or engine: {next(iter(died.values()))}")
        return [infos[w] for w in sorted(infos)]

    def _refresh_handles(self) -> set[int]:
        """Workers whose data handle changed since they were handed it: the worker preparing the data
        died, and a task prepared it again (data.py, `RayDataset.infos`)."""
        fresh = self.data.handles(self.nodes)
        stale = {w for w, (old, new) in enumerate(zip(self.handles, fresh)) if old.ref != new.ref}
        for w in stale:
            self.handles[w] = fresh[w]
        return stale

    def _collect(self, refs: dict[int, Any]) -> tuple[dict[int, WorkerInfo], dict[int, str]]:
        ray = self._ray
        ray.wait(list(refs.values()), num_returns=len(refs))
        infos, died = {}, {}
        for worker, ref in refs.items():
            try:
                infos[worker] = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                died[worker] = first_line(exc)
        return infos, died

    def _track(self, ref: Any, kind: str, worker: int, payload: Any) -> Any:
        """Follow a ref to completion without a `ray.wait` over everything in flight: Ray calls back
        when it is done and `wait` reads a queue."""
        future = ref.future()
        self._kinds[ref] = (kind, worker, payload, future)
        future.add_done_callback(lambda _done, ref=ref: self._finished.put(ref))
        return ref

    def submit(self, worker: int, shard: ShardTask) -> Any:
        return self._track(self.actors[worker].run_shard.remote(shard, self.handles[worker]), "shard", worker, shard)

    def ping(self, worker: int, first: Any = None) -> Any:
        """`first`: the handle the dispatcher holds for a ping sent again (its outcome answers that)."""
        return self._track(self.actors[worker].pid.remote(), "ping", worker, first)

    def wait(self, timeout_s: float) -> list[Outcome]:
        now = time.monotonic()
        for due in [r for r in self._repings if r[0] <= now]:
            self._repings.remove(due)
            self.ping(due[1], due[2])
        if self._repings:
            timeout_s = min(timeout_s, max(0.0, min(r[0] for r in self._repings) - now))
        try:
            refs = [self._finished.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while True:
            try:
                refs.append(self._finished.get_nowait())
            except queue.Empty:
                break
        outcomes = [self._outcome(ref) for ref in refs]
        return [o for o in outcomes if o is not None]

    def _outcome(self, ref: Any) -> Outcome | None:
        ray = self._ray
        kind, worker, payload, future = self._kinds.pop(ref)
        try:
            value = future.result()
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
            if kind == "ping" and isinstance(exc, ray.exceptions.ActorUnavailableError):
                # The call met the process mid-restart (its node just went, say): ask again, since
                # only ActorDiedError means Ray gave up on it.
                self._repings.append((time.monotonic() + REPING_S, worker, payload or ref))
                return None
            if kind == "ping":
                log.warning("worker %d is gone for good: %s", worker, first_line(exc))
                return Outcome(payload or ref, None, died=True, alive=False)
            if kind == "setup":
                return Outcome(payload, None, died=True, added=worker)
            return Outcome(ref, died_result(payload, worker, f"worker {worker} died: {first_line(exc)}"), died=True)
        if kind == "place":
            self._start_replacement(ref, payload)
            return None
        if kind == "setup":
            return Outcome(payload, None, died=False, added=worker, info=value)
        if kind == "ping":
            self._rehome(worker)
            return Outcome(payload or ref, None, died=False)
        return Outcome(ref, value, died=False)

    def _rehome(self, worker: int) -> None:
        """A worker that answers after dying may run on another node now (its node was lost and its
        bundle moved): the data object of the old node may be gone with it, so it gets that node's
        data, prepared there when the data is node-local (orchestrator/run/data.py)."""
        node = self._node_of(worker)
        if node and node != self.nodes[worker]:
            log.info("worker %d now runs on node %s: handing it that node's data", worker, node[:8])
            self.nodes[worker] = node
            self.handles[worker] = self.data.handles([node])[0]

    def _node_of(self, worker: int) -> str:
        from ray.util import placement_group_table

        pg, index = self.placements[worker]
        return placement_group_table(pg)["bundles_to_node_id"].get(index, "")

    def retire(self, worker: int) -> None:
        try:
            self._ray.kill(self.actors[worker], no_restart=True)
        except self._ray.exceptions.RayError as exc:  # the cluster lost it already: nothing left to stop
            log.debug("could not kill worker actor %d: %s", worker, exc)

    def replace(self, worker: int) -> Any | None:
        from ray.util.placement_group import placement_group

        pg = placement_group([dict(self.bundle)], name=f"raybench:{self._run_id}:spare{len(self.spare_pgs)}")
        self.spare_pgs.append(pg)
        return self._track(pg.ready(), "place", worker, pg)

    def _start_replacement(self, handle: Any, pg: Any) -> None:
        """The spare bundle is placed: start the new worker there and have it set up; its setup's
        outcome answers the handle `replace` returned."""
        worker = len(self.actors)
        self.placements.append((pg, 0))
        node = self._node_of(worker)
        self.nodes.append(node)
        self.handles.append(self.data.handles([node])[0])
        self.actors.append(self._new_actor(worker, f"{_node_addresses().get(node, node[:8])}:spare"))
        self._track(self.actors[worker].setup.remote(self.handles[worker]), "setup", worker, handle)

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            try:
                self._ray.kill(actor, no_restart=True)
            except self._ray.exceptions.RayError as exc:  # the cluster lost it already: nothing left to stop
                log.debug("could not kill worker actor %s: %s", actor, exc)
        for pg in [self.pg, *self.spare_pgs]:
            if pg is not None:
                remove_placement_group(pg)


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
