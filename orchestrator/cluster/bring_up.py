"""One bring-up for every mode: data ready -> workers set up -> broken ones dropped -> agreement
checked -> run folder created, each step marked on the point's timeline.

Every mode calls `bring_up` (Offline once per repeat, on fresh workers; LoadGen once), so every row
has the same setup figures and the same fault rules: a worker that died while loading is restarted
or dropped by the pool (orchestrator/cluster/pool.py), a worker whose setup crashed (an error as a
value: a bad device, a group that cannot form) is dropped while the others go on
(`policy.broken_at_setup`), a failed engine build leaves its builder log and fails the run in one
line, and workers that see other data than the preparation fail it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from orchestrator.cluster.data import Dataset, LocalDataset, RayDataset, check_preparations_agree
from orchestrator.cluster.policy import broken_at_setup
from orchestrator.cluster.pool import InProcessPool, Pool
from orchestrator.cluster.resources import plan_resources
from orchestrator.metrics.store import RunFolder
from orchestrator.point import Point
from orchestrator.spec import EngineJob, dump_spec
from workers.contract import DataInfo, WorkerInfo
from workers.errors import RunFailed, UserError


@dataclass
class BroughtUp:
    data: list[DataInfo]  # every preparation (one per node that prepared its own copy)
    prepared: DataInfo  # what they agree on
    infos: list[WorkerInfo]  # the workers that set up (broken ones dropped)


def open_dataset(spec: EngineJob, in_process: bool) -> Dataset:
    """Start preparing the point's data (in this process with --no-ray, else as a Ray task)."""
    if in_process:
        return LocalDataset(spec.worker_config())
    return RayDataset(spec.worker_config())


def open_pool(spec: EngineJob, run_id: str, in_process: bool, data: Dataset) -> Pool:
    """The point's workers, starting to set up at once (one in this process with --no-ray)."""
    if in_process:
        return InProcessPool(spec.worker_config(), run_id, data)
    if spec.parallel.tp > 1:
        from orchestrator.cluster.groups import open_groups

        return open_groups(spec, run_id, data)
    from orchestrator.cluster.connect import cluster_resources
    from orchestrator.cluster.ray_pool import RayPool

    gpus, cpus = cluster_resources()
    res = plan_resources(spec.workers, spec.gpus_per_worker, spec.cpus_per_worker, gpus, cpus)
    return RayPool(spec, run_id, res.workers, res.gpus_per_worker, res.cpus_per_worker, data)


def bring_up(point: Point, pool: Pool, data: Dataset, check: Callable[[DataInfo], None] | None = None) -> BroughtUp:
    """The point's data and workers, ready to take work. `check` is the mode's own look at the
    prepared data before any worker is set up (Offline: its shard plan against a resumed run's)."""
    point.status(f"preparing the data, setting up {pool.size} worker(s) (model, engine)")
    infos_data = data.infos()  # first: a preparation's user error is the one to report
    point.timeline.mark("data_ready")
    prepared = check_preparations_agree(infos_data)
    if check is not None:
        check(prepared)
    infos = pool.setup()
    point.timeline.mark("workers_ready")
    keep_build_logs(point.run, infos)
    infos = drop_broken(pool, infos)
    check_workers_agree(infos, prepared)
    if not point.run.exists():
        session = point.session
        point.run.create(dump_spec(point.spec), started_at=session.started_at, sweep_id=session.sweep_id,
                         weights_fetched_on=pool.prefetched_nodes)  # the first session's start
    return BroughtUp(infos_data, prepared, infos)


def keep_build_logs(run: RunFolder, infos: list[WorkerInfo]) -> None:
    """A failed engine build leaves its builder log in the run folder (and no row)."""
    for info in infos:
        if info.error is not None and info.error.detail:
            path = run.write_text(f"build-w{info.worker_id}.log", info.error.detail)
            raise UserError(f"{info.error.message} (builder log: {path})")


def drop_broken(pool: Pool, infos: list[WorkerInfo]) -> list[WorkerInfo]:
    """Workers whose setup crashed are dropped while others set up (policy.broken_at_setup)."""
    broken = broken_at_setup(infos)
    for worker, why in broken.items():
        pool.retire(worker)
        pool.lost[worker] = f"setup failed: {why}"
    return [i for i in infos if i.worker_id not in broken]


def check_workers_agree(infos: list[WorkerInfo], prepared: DataInfo) -> int:
    """Every worker must see the prepared dataset, or shards would mean different things on each."""
    for info in infos:
        if info.error is not None:
            where = f"worker {info.worker_id} on {info.hostname} ({info.device_name})"
            if info.error.kind == "user":
                raise UserError(f"{info.error.message} [{where}]")
            raise RunFailed(f"{where}: {info.error.message}")
    prints = {(i.num_examples, i.dataset_fingerprint) for i in infos} | {(prepared.num_examples, prepared.fingerprint)}
    if len(prints) > 1:
        raise RunFailed(f"workers see different datasets {sorted(prints)}: is data.path the same file on every node?")
    return prepared.num_examples
