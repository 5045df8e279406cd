"""Tensor-parallel workers on Ray: how many groups of `tp` ranks fit where, and the pool that runs them.

A worker with `parallel.tp: N` is a group of N rank actors on one node sharing one model
(`workers.rank.RankWorker`). Each group is its own placement group of N bundles, one per rank
({GPU: 1, CPU: cpus_per_worker}, or CPUs only for CPU ranks), with strategy STRICT_PACK, so its ranks
share a node and its NVLink. Groups are steered apart (a soft hint per group, the node with the most
room left), as single-device workers are spread today. To the driver's dispatch loop a group is one
worker: `GroupPool` is an `ActorPool` whose actors are the groups' ranks 0 (setup, submit, ping and
wait come from there, orchestrator/cluster/actor_pool.py).

`gpus_per_worker` and `cpus_per_worker` are what each rank asks for; a group asks N times that.
A rank owns one whole GPU or none (CPU ranks over gloo).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.cluster.actor_pool import ActorPool
from orchestrator.cluster.data import Dataset
from orchestrator.cluster.placement import PLACEMENT_TIMEOUT_S, node_addresses, prefetch_weights
from orchestrator.cluster.ray_pool import TOKEN_CPU
from workers.errors import UserError


@dataclass(frozen=True)
class NodeCapacity:
    node_id: str
    address: str
    gpus: float
    cpus: float


@dataclass(frozen=True)
class GroupPlan:
    groups: int
    tp: int
    gpus_per_rank: float  # 1, or 0 for CPU ranks
    cpus_per_rank: float
    targets: tuple[str, ...]  # node id each group is steered to (a soft hint; Ray may place it elsewhere)

    @property
    def bundle(self) -> dict[str, float]:
        return {k: v for k, v in (("GPU", self.gpus_per_rank), ("CPU", self.cpus_per_rank)) if v > 0}


def _groups_on(node: NodeCapacity, tp: int, gpus: float, cpus: float) -> int:
    """Whole groups of `tp` ranks that fit on one node."""
    by_cpu = int(node.cpus // (tp * cpus) + 1e-9) if cpus > 0 else None
    by_gpu = int(node.gpus // tp) if gpus > 0 else None
    fits = [n for n in (by_cpu, by_gpu) if n is not None]
    return min(fits) if fits else 0


def _bundle_text(tp: int, gpus: float, cpus: float) -> str:
    per_rank = " + ".join(f"{v:g} {k}" for k, v in (("GPU", gpus), ("CPU", cpus)) if v > 0)
    return f"{tp} ranks x ({per_rank})"


def plan_groups(workers: int | str, tp: int, gpus_per_worker: float | None, cpus_per_worker: float,
                nodes: list[NodeCapacity]) -> GroupPlan:
    """How many groups, each rank asking for what, and where each goes; one-line errors when they cannot fit.

    `workers: auto` is the cluster's GPUs / tp groups (one group without GPUs). On GPU clusters tp
    must divide every GPU node's GPU count: otherwise GPUs are left over on each node, which is
    almost always a typo (tp 3 on 8-GPU nodes). STRICT_PACK never places a group that no single
    node can hold, so that is refused here instead of timing out.
    """
    cluster_gpus = sum(n.gpus for n in nodes)
    gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    if gpus not in (0.0, 1.0):
        raise UserError(f"gpus_per_worker: with parallel.tp {tp} each rank owns one whole GPU (gpus_per_worker: 1) "
                        f"or none (0, CPU ranks); got {gpus:g}")
    cpus = cpus_per_worker if cpus_per_worker > 0 or gpus > 0 else TOKEN_CPU
    capacity = [_groups_on(n, tp, gpus, cpus) for n in nodes]
    if not any(capacity):
        largest = max(nodes, key=lambda n: (n.gpus, n.cpus)) if nodes else NodeCapacity("", "none", 0, 0)
        raise UserError(f"parallel.tp: a group of {_bundle_text(tp, gpus, cpus)} must fit on one node; the largest "
                        f"node has {largest.gpus:g} GPUs and {largest.cpus:g} CPUs (lower tp or cpus_per_worker)")
    if gpus:
        for node in nodes:
            if node.gpus >= 1 and int(node.gpus) % tp:
                raise UserError(f"parallel.tp: {tp} does not divide the {node.gpus:g} GPUs of node {node.address}; "
                                "a group's ranks share one node, so tp must divide every node's GPU count")
    count = (int(cluster_gpus // tp) if gpus else 1) if workers == "auto" else int(workers)
    if count > sum(capacity):
        raise UserError(f"workers: {count} groups of {_bundle_text(tp, gpus, cpus)} do not fit: the nodes hold "
                        f"{sum(capacity)} such groups (each on one node); lower workers or cpus_per_worker")
    return GroupPlan(count, tp, gpus, cpus, spread(count, [n.node_id for n in nodes], capacity))


def spread(count: int, node_ids: list[str], capacity: list[int]) -> tuple[str, ...]:
    """A node for each group: always the one with the most room left (first listed on ties)."""
    room = list(capacity)
    targets = []
    for _ in range(count):
        best = max(range(len(room)), key=lambda i: (room[i], -i))
        room[best] -= 1
        targets.append(node_ids[best])
    return tuple(targets)


def cluster_nodes() -> list[NodeCapacity]:
    """The alive nodes' total GPUs and CPUs (what a placement group can be given, not what is free now)."""
    import ray

    return [NodeCapacity(n["NodeID"], n["NodeManagerAddress"], float(n["Resources"].get("GPU", 0.0)),
                         float(n["Resources"].get("CPU", 0.0)))
            for n in ray.nodes() if n.get("Alive")]


class GroupPool(ActorPool):
    """One tensor-parallel group per worker; the driver's handle on a group is its rank 0.

    Rank 0 restarts up to `max_restarts` times like any worker actor; the other ranks restart without
    limit, since rank 0 restarts them whenever its group fails (see `workers.rank`).
    """

    def __init__(self, spec, run_id: str, plan: GroupPlan, data: Dataset) -> None:
        super().__init__(spec, run_id, plan.groups, data)
        self.plan = plan
        self.pgs: list[Any] = []
        self.followers: list[Any] = []
        try:
            self.pgs = _reserve_groups(run_id, plan)
            self._start_groups(spec, run_id, data)
        except BaseException:
            self.shutdown()
            raise

    def _start_groups(self, spec, run_id: str, data: Dataset) -> None:
        from workers.rank import RankWorker

        nodes = [_group_node(pg) for pg in self.pgs]
        self.prefetched_nodes = prefetch_weights(spec.model, sorted(set(nodes)))
        self.nodes = list(nodes)
        self.placements = [(pg, 0) for pg in self.pgs]
        self.handles = data.handles(nodes)  # rank 0 hands its group's followers the same
        addresses = node_addresses()
        remote = self._ray.remote(RankWorker)
        kind = "gpu" if self.plan.gpus_per_rank else "cpu"
        for group, pg in enumerate(self.pgs):
            names = [f"raybench:{run_id}:w{group}r{rank}@{addresses.get(nodes[group], nodes[group][:8])}:{kind}"
                     for rank in range(self.plan.tp)]
            self.followers += [self._rank_actor(remote, spec, run_id, pg, group, rank, names[rank], None)
                               for rank in range(1, self.plan.tp)]
            self.actors.append(self._rank_actor(remote, spec, run_id, pg, group, 0, names[0], names[1:]))
        self._begin_setup()

    def _rank_actor(self, remote, spec, run_id: str, pg, group: int, rank: int, name: str,
                    follower_names: list[str] | None):
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return remote.options(
            name=name, num_gpus=self.plan.gpus_per_rank,
            num_cpus=self.plan.cpus_per_rank, max_restarts=spec.max_restarts if rank == 0 else -1,
            max_task_retries=0,  # the driver re-queues shards itself, counting attempts
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank),
        ).remote(spec.worker_config(), group, run_id, rank, follower_names)

    def retire(self, worker: int) -> None:
        """The whole group goes: rank 0 and its followers."""
        ranks = self.plan.tp - 1
        for actor in [self.actors[worker], *self.followers[worker * ranks:(worker + 1) * ranks]]:
            self._kill(actor)

    def replace(self, worker: int) -> None:
        """Groups are not replaced: a group needs `tp` devices on one node, rarely free mid-run."""
        return None

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for actor in [*self.actors, *self.followers]:
            self._kill(actor)
        for pg in self.pgs:
            remove_placement_group(pg)


def _reserve_groups(run_id: str, plan: GroupPlan) -> list[Any]:
    """One STRICT_PACK placement group per group, all ready, or none and one line."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    # `_soft_target_node_id` is Ray's (experimental) hint for STRICT_PACK groups: the node is tried
    # first and any other node that fits is used if it is full or gone.
    pgs = [placement_group([plan.bundle] * plan.tp, strategy="STRICT_PACK", name=f"raybench:{run_id}:g{i}",
                           _soft_target_node_id=target) for i, target in enumerate(plan.targets)]
    ready, _ = ray.wait([pg.ready() for pg in pgs], num_returns=len(pgs), timeout=PLACEMENT_TIMEOUT_S)
    if len(ready) < len(pgs):
        for pg in pgs:
            remove_placement_group(pg)
        raise UserError(
            f"workers: the cluster could not place {len(pgs)} groups of {_bundle_text(plan.tp, plan.gpus_per_rank, plan.cpus_per_rank)} "
            f"within {PLACEMENT_TIMEOUT_S:.0f} s (resources busy); lower workers or free the cluster"
        )
    return pgs


def _group_node(pg) -> str:
    from ray.util import placement_group_table

    return placement_group_table(pg)["bundles_to_node_id"].get(0, "")


def open_groups(spec, run_id: str, data: Dataset) -> GroupPool:
    plan = plan_groups(spec.workers, spec.parallel.tp, spec.gpus_per_worker, spec.cpus_per_worker, cluster_nodes())
    return GroupPool(spec, run_id, plan, data)
