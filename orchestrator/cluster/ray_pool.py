"""Single-device workers on Ray: one actor per device, gang-scheduled in a SPREAD placement group."""

from __future__ import annotations

from typing import Any

from orchestrator.cluster.actor_pool import ActorPool
from orchestrator.cluster.data import Dataset
from orchestrator.cluster.placement import bundle_nodes, node_addresses, prefetch_weights, reserve
from workers.actor import BenchWorker

TOKEN_CPU = 0.01


class RayPool(ActorPool):
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

    def __init__(self, spec: Any, run_id: str, workers: int, gpus: float, cpus: float, data: Dataset) -> None:
        super().__init__(spec, run_id, workers, data)
        self.pg = None
        self.spare_pgs: list[Any] = []
        self._remote = None
        # A bundle needs some resource: workers that ask for none (the synthetic engine) still get a
        # token CPU share, so they too are spread over the nodes and named after where they run.
        cpus = cpus if cpus > 0 or gpus > 0 else TOKEN_CPU
        self.bundle = {k: v for k, v in (("GPU", gpus), ("CPU", cpus)) if v > 0}
        self._resources = (gpus, cpus)
        self.pg = reserve(run_id, workers, self.bundle)
        try:
            self._start(gpus)
        except BaseException:
            self.shutdown()
            raise

    def _start(self, gpus: float) -> None:
        nodes = bundle_nodes(self.pg, self.size)
        self.prefetched_nodes = prefetch_weights(self._spec.model, sorted({n for n in nodes if n}))
        addresses = node_addresses()
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

    def retire(self, worker: int) -> None:
        self._kill(self.actors[worker])

    def replace(self, worker: int) -> Any | None:
        from ray.util.placement_group import placement_group

        pg = placement_group([dict(self.bundle)], name=f"raybench:{self._run_id}:spare{len(self.spare_pgs)}")
        self.spare_pgs.append(pg)
        return self._track(pg.ready(), "place", worker, pg)

    def _placed(self, handle: Any, pg: Any) -> None:
        """The spare bundle is placed: start the new worker there and have it set up; its setup's
        outcome answers the handle `replace` returned."""
        worker = len(self.actors)
        self.placements.append((pg, 0))
        node = self._node_of(worker)
        self.nodes.append(node)
        self.handles.append(self.data.handles([node])[0])
        self.actors.append(self._new_actor(worker, f"{node_addresses().get(node, node[:8])}:spare"))
        self._track(self.actors[worker].setup.remote(self.handles[worker]), "setup", worker, handle)

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            self._kill(actor)
        for pg in [self.pg, *self.spare_pgs]:
            if pg is not None:
                remove_placement_group(pg)
