"""What every pool of worker actors on Ray shares: setting them up, following their calls, pings and restarts.

`ActorPool` is the base of `RayPool` (single-device workers, orchestrator/cluster/ray_pool.py) and
`GroupPool` (tensor-parallel groups, orchestrator/cluster/groups.py). A subclass places its actors
(`_start`: it fills `actors`, `handles`, `nodes`, `placements` and calls `_begin_setup`) and says how
a worker is retired, replaced and shut down; the base follows every call to completion without a
`ray.wait` over everything in flight (Ray calls back when each is done and `wait` reads a queue), so
a call costs the same with 8 workers or 4,096. A worker that died while it set up is asked once
more (Ray restarts it, up to `max_restarts`) and dropped if it dies again; one that answers a ping
after dying may run on another node now and is handed that node's data.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any

from orchestrator.cluster.data import Dataset
from orchestrator.cluster.policy import REPING_S
from orchestrator.cluster.pool import Outcome, died_result
from workers.contract import ShardTask, WorkerInfo
from workers.errors import RunFailed, first_line

log = logging.getLogger(__name__)


class ActorPool:
    """Setup, submit, ping and wait over `actors` (one per worker: a single-device worker, or a
    tensor-parallel group's rank 0). Subclasses place the actors and override the lifecycle hooks."""

    def __init__(self, spec: Any, run_id: str, size: int, data: Dataset) -> None:
        import ray

        self._ray = ray
        self.size = size
        self._spec, self._run_id, self.data = spec, run_id, data
        self.prefetched_nodes: list[str] = []
        self.actors: list[Any] = []
        self.handles: list[Any] = []
        self.nodes: list[str] = []
        self.lost: dict[int, str] = {}  # workers `setup` dropped (died while loading, not restarted) -> why
        self.placements: list[tuple[Any, int]] = []  # each worker's (placement group, bundle index)
        self._kinds: dict[Any, tuple[str, int, Any, Any]] = {}  # ref -> (kind, worker, payload, future)
        self._finished: queue.Queue = queue.Queue()
        self._repings: list[tuple[float, int, Any]] = []  # (when, worker, the ping's first handle)
        self._setups: list[Any] = []

    def retire(self, worker: int) -> None:
        """Kill a worker for good; its calls in flight come back from `wait` as died."""
        raise NotImplementedError

    def replace(self, worker: int) -> Any | None:
        """Start a new worker in a retired one's stead (a handle answered once it is set up), or None."""
        return None

    def _placed(self, handle: Any, pg: Any) -> None:
        """A replacement's placement group is ready (only pools that replace workers get here)."""
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def _kill(self, actor: Any) -> None:
        """Stop an actor for good; one the cluster lost already has nothing left to stop."""
        try:
            self._ray.kill(actor, no_restart=True)
        except self._ray.exceptions.RayError as exc:
            log.debug("could not kill worker actor %s: %s", actor, exc)

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
            self._placed(ref, payload)
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
        data, prepared there when the data is node-local (orchestrator/cluster/data.py)."""
        node = self._node_of(worker)
        if node and node != self.nodes[worker]:
            log.info("worker %d now runs on node %s: handing it that node's data", worker, node[:8])
            self.nodes[worker] = node
            self.handles[worker] = self.data.handles([node])[0]

    def _node_of(self, worker: int) -> str:
        from ray.util import placement_group_table

        pg, index = self.placements[worker]
        return placement_group_table(pg)["bundles_to_node_id"].get(index, "")
