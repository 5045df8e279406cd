"""The steps every run point shares, Offline or under LoadGen: opening its data and workers,
checking that the workers agree on the data, and writing the run folder and the row at the end.

Why a module of their own: the driver (orchestrator/run/driver.py) runs Offline points and hands
scenario points to orchestrator/run/loadgen/point.py; both call these, and neither imports the other's
steps.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.metrics.merge import completed
from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.store import ResultsStore, RunFolder
from orchestrator.run.data import Dataset, LocalDataset, RayDataset
from orchestrator.run.plan import plan_resources
from orchestrator.run.pool import InProcessPool, Pool, RayPool
from orchestrator.spec import JobSpec
from workers.contract import DataInfo, ShardResult, WorkerInfo
from workers.errors import RunFailed, UserError


@dataclass
class RunResult:
    run_id: str
    row: MetricsRow
    run_dir: Path | str  # a local Path, or where the run is in a remote store (s3://bucket/prefix/runs/<id>)
    results: list[ShardResult]
    infos: list[WorkerInfo]
    data: list[DataInfo]  # the data preparation (one per node that prepared it)
    failed_attempts: list[ShardResult] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)  # per-question records of the measured pass (mmlu)
    timeline: dict = field(default_factory=dict)  # where the time went (orchestrator/run/timeline.py)


class RunInterrupted(RunFailed):
    """Ctrl-C: the workers were stopped; the run folder keeps every finished shard."""

    def __init__(self, run_id: str, resumable: bool, results: str) -> None:
        self.run_id = run_id
        self.resumable = resumable
        how = (f"; workers stopped, finished shards kept: bench submit --resume {run_id} --results {shlex.quote(results)}"
               if resumable else "; workers stopped before any shard finished (nothing to resume)")
        super().__init__(f"interrupted: run {run_id}{how}")


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


def open_dataset(spec: JobSpec, in_process: bool) -> Dataset:
    """Start preparing the point's data (in this process with --no-ray, else as a Ray task)."""
    if in_process:
        return LocalDataset(spec.worker_config())
    return RayDataset(spec.worker_config())


def open_pool(spec: JobSpec, run_id: str, in_process: bool, data: Dataset) -> Pool:
    if in_process:
        return InProcessPool(spec.worker_config(), run_id, data)
    if spec.parallel.tp > 1:
        from orchestrator.run.groups import open_groups

        return open_groups(spec, run_id, data)
    from orchestrator.run.connect import cluster_resources

    gpus, cpus = cluster_resources()
    res = plan_resources(spec.workers, spec.gpus_per_worker, spec.cpus_per_worker, gpus, cpus)
    return RayPool(spec, run_id, res.workers, res.gpus_per_worker, res.cpus_per_worker, data)


def keep_build_logs(run: RunFolder, infos: list[WorkerInfo]) -> None:
    """A failed engine build leaves its builder log in the run folder (and no row)."""
    for info in infos:
        if info.error is not None and info.error.detail:
            path = run.write_text(f"build-w{info.worker_id}.log", info.error.detail)
            raise UserError(f"{info.error.message} (builder log: {path})")


def finish_run(store: ResultsStore, run: RunFolder, spec: JobSpec, row: MetricsRow, results: list[ShardResult],
               infos: list[WorkerInfo], failed: list[ShardResult], predictions: list[dict]) -> None:
    """The run folder's tables and metrics.md, then the row: the row is added last, so a run that
    fails on the way adds none."""
    from orchestrator.views.report import metrics_markdown

    run.write_shards_table(results, infos)
    run.write_workers_table(infos)
    records = [dict(rec, **{"pass": r.pass_name, "repeat": r.repeat})
               for r in completed(results).values() for rec in r.records]
    run.write_records("predictions.parquet", records)
    run.write_records("retries.parquet", [
        {"pass": r.pass_name, "repeat": r.repeat, "shard_id": r.shard_id, "attempt": r.attempt, "worker_id": r.worker_id,
         "node_id": r.node_id, "kind": r.error.kind, "message": r.error.message}
        for r in failed
    ])
    text = metrics_markdown([row])
    if spec.task.name == "mmlu":
        from orchestrator.metrics.subjects import subjects_markdown

        text += "\n" + subjects_markdown(predictions, scoring=spec.task.scoring)
    run.write_text("metrics.md", text)
    store.append_rows([row])
