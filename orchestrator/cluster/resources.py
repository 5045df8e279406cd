"""How many worker actors a cluster gives a job, each asking Ray for what (pure: the cluster's totals in).

`workers: auto` is one worker per GPU (`gpus_per_worker` each), or one without GPUs; a count the
cluster cannot hold is one line naming the field, before any actor starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.errors import UserError


@dataclass(frozen=True)
class Resources:
    workers: int
    gpus_per_worker: float
    cpus_per_worker: float


def plan_resources(
    workers: int | str, gpus_per_worker: float | None, cpus_per_worker: float, cluster_gpus: float, cluster_cpus: float
) -> Resources:
    """How many worker actors, each asking Ray for what; a clear error when the cluster is too small."""
    gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    if workers == "auto":
        count = int(cluster_gpus // gpus) if gpus > 0 else 1
    else:
        count = int(workers)
    if count < 1:
        raise UserError(f"workers: the cluster has {cluster_gpus:g} GPUs, fewer than gpus_per_worker={gpus:g}")
    if gpus > 0 and count * gpus > cluster_gpus + 1e-9:
        raise UserError(
            f"workers: {count} workers x {gpus:g} GPU need {count * gpus:g} GPUs; the cluster has {cluster_gpus:g} "
            "(lower workers, or use workers: auto)"
        )
    if count * cpus_per_worker > cluster_cpus + 1e-9:
        raise UserError(
            f"workers: {count} workers x {cpus_per_worker:g} CPU need {count * cpus_per_worker:g} CPUs; the cluster "
            f"has {cluster_cpus:g} (lower workers or cpus_per_worker)"
        )
    return Resources(count, gpus, cpus_per_worker)
