"""Where a run's actors go on Ray: placement groups reserved whole or not at all, the nodes their
bundles landed on, and model weights fetched once per node before the actors fan out."""

from __future__ import annotations

from typing import Any

from workers.errors import UserError, first_line

PLACEMENT_TIMEOUT_S = 60.0


def reserve(run_id: str, workers: int, bundle: dict[str, float]):
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


def bundle_nodes(pg, workers: int) -> list[str]:
    """Node id of each worker's bundle."""
    from ray.util import placement_group_table

    table = placement_group_table(pg)["bundles_to_node_id"]
    return [table.get(i, "") for i in range(workers)]


def node_addresses() -> dict[str, str]:
    import ray

    return {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}


def prefetch_weights(model, node_ids: list[str]) -> list[str]:
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

