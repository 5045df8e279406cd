"""The driver: one job from spec to stored row.

    preflight -> connect -> data prepared (once) -> workers set up (model, engine) -> plan shards ->
    val phase -> infer phase -> merge -> store

The next phase starts only when every shard of the current one is done, so a pass's wall span is
not mixed with the other pass. Every finished shard is written to the run folder at once; a run
resumed after the driver died (`resume=RUN_ID`) re-runs only the shards that are not there.
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.metrics.invariance import InvarianceCheck, compared
from orchestrator.metrics.merge import Pause, completed, headline_records, merge
from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.store import ResultsStore, RunFolder, ShardSaver
from orchestrator.run.data import Dataset, LocalDataset, RayDataset, check_preparations_agree
from orchestrator.run.dispatch import Dispatcher
from orchestrator.run.invariance import run_invariance_check
from orchestrator.run.meter import RunMeter
from orchestrator.run.plan import make_plan, plan_resources
from orchestrator.run.policy import broken_at_setup
from orchestrator.run.pool import InProcessPool, Pool, RayPool
from orchestrator.run.preflight import preflight
from orchestrator.run.resume import PLAN_FILE, RunComplete, check_resume, save_plan
from orchestrator.run.sessions import pauses_between, record_session
from orchestrator.run.timeline import TIMELINE_FILE, Timeline
from orchestrator.spec import JobSpec, dump_spec
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


def new_run_id(name: str) -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{name}-{secrets.token_hex(3)}"


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


@dataclass
class Session:
    """This driver process's part of a run: its clock and, when resuming, what was done before:
    the finished shards, the seconds earlier drivers ran it, and when no driver was running it."""

    run: RunFolder
    started: float
    done: dict[tuple[str, int, int], ShardResult]
    prior_seconds: float
    sweep_id: str | None
    pauses: tuple[Pause, ...] = ()

    @property
    def started_at(self) -> float:
        """This session's start in epoch seconds (`started` is a perf_counter reading)."""
        return time.time() - (time.perf_counter() - self.started)


def _open_session(store: ResultsStore, run_id: str, resume: bool, sweep_id: str | None, started: float) -> Session:
    """`started` is the perf_counter the point's e2e_time counts from: submit for the first point
    (so cluster connect is in it), the end of the previous point for the next ones."""
    run = store.run(run_id)
    if not resume:
        return Session(run, started, {}, 0.0, sweep_id)
    if not run.exists():
        raise UserError(f"--resume {run_id}: no such run in {store.location}")
    saved = run.load_shards()
    meta = json.loads(run.read_text("run.json")) if run.has("run.json") else {}
    session = Session(run, started, completed(saved), 0.0, meta.get("sweep_id"))
    starts = record_session(run, session.started_at)
    session.pauses = pauses_between(starts, [r.end_ts for r in saved])
    paused = sum(to - since for since, to in session.pauses)
    session.prior_seconds = max(0.0, starts[-1] - starts[0] - paused)
    return session


def run_job(spec: JobSpec, **options) -> RunResult:
    """Run a single-point job (no `sweep`) and store its row. See `run_all` for the options."""
    if spec.sweep:
        raise ValueError("run_job runs one point; use run_all for a sweep")
    return run_all(spec, **options)[0]


def run_all(
    spec: JobSpec,
    *,
    results_dir: str | Path = "results",
    address: str | None = None,
    in_process: bool = False,
    progress: bool = False,
    verbose: bool = False,
    node_ip: str | None = None,
    run_id: str | None = None,
    resume: bool = False,
) -> list[RunResult]:
    """Run a job, or every point of its sweep on the same cluster, one stored row per point.

    Raises UserError (bad input) or RunFailed (the run could not finish); on Ctrl-C,
    RunInterrupted after the workers are stopped; RunComplete for a resume of a finished run.
    """
    submitted = time.perf_counter()
    store = ResultsStore(results_dir)
    points = spec.points()
    if resume and len(points) > 1:
        raise UserError("--resume takes the run id of one point; every point of a sweep is its own run")
    if resume and run_id and store.has_row(run_id):  # before starting Ray: nothing will run
        raise RunComplete(f"run {run_id} is already complete (its row is in {store.location}); nothing to resume, "
                          "nothing added")
    sweep_id = new_run_id(f"{spec.name}-sweep") if len(points) > 1 else None
    for point in points:
        preflight(point, data_on_nodes=address is not None and not in_process)
        if in_process and point.workers not in ("auto", 1):
            raise UserError("workers: in-process mode (--no-ray) runs exactly one worker")
        if in_process and point.parallel.tp > 1:
            raise UserError(f"parallel.tp: in-process mode (--no-ray) is one process; a worker of tp={point.parallel.tp} "
                            "ranks needs Ray (drop --no-ray)")
    started_ray = False
    current = run_id or ""
    ray: tuple[float, float] | None = None  # (seconds to start or join Ray, when it was ready), for the first point
    try:
        if not in_process:
            from orchestrator.run.connect import connect

            before = time.perf_counter()
            started_ray = connect(address, verbose=verbose, node_ip=node_ip)
            ray = (time.perf_counter() - before, time.perf_counter() - submitted)
        out = []
        for point in points:
            current = run_id if run_id and len(points) == 1 else new_run_id(point.name)
            session = _open_session(store, current, resume, sweep_id, submitted)
            out.append(_run_point(point, store, session, in_process, progress, ray))
            submitted, ray = time.perf_counter(), None
        return out
    except KeyboardInterrupt:
        raise RunInterrupted(current, store.run(current).exists(), store.shown_uri) from None
    finally:
        if started_ray:
            from orchestrator.run.connect import disconnect

            disconnect()


def _run_point(spec: JobSpec, store: ResultsStore, session: Session, in_process: bool, progress: bool,
               ray: tuple[float, float] | None = None) -> RunResult:
    """One grid point: `repeats` rounds of fresh workers; the first also runs the reference pass.
    `ray`: how long starting or joining Ray took and when it was ready (the command's first point)."""
    if spec.scenario != "offline":  # a LoadGen scenario: same data, workers and row, LoadGen in the middle
        from orchestrator.loadgen.point import run_scenario_point

        return run_scenario_point(spec, store, session, in_process, progress)
    from orchestrator.run.progress import RunProgress

    with RunProgress(enabled=progress) as bar:
        point = PointRun(spec, session, bar)
        if ray is not None:
            point.timeline.mark("ray_started", ray[1])
        bar.status(f"run {session.run.run_id}: preparing the data")
        data = open_dataset(spec, in_process)
        try:
            for repeat in range(spec.repeats):
                pool = open_pool(spec, session.run.run_id, in_process, data)
                try:
                    point.run_repeat(pool, repeat, data)
                finally:
                    pool.shutdown()
        finally:
            point.saver.close()  # every finished shard is on disk before the row or the error
        point.saver.check()
    run = session.run
    e2e = session.prior_seconds + time.perf_counter() - session.started
    row = merge(spec=spec, run_id=run.run_id, results=point.results, infos=point.infos, data=point.data,
                e2e_seconds=e2e, retries=len(point.failed), item_unit=point.infos[0].item_unit,
                resumed=bool(session.done), pauses=session.pauses, sweep_id=session.sweep_id,
                ray_start_seconds=ray[0] if ray else None, invariance=point.invariance,
                workers_lost=tuple(point.lost))
    predictions = headline_records(row, point.results)
    if point.invariance is not None:
        run.write_records("invariance.parquet", compared(predictions, point.invariance))
    _finish_run(store, run, spec, row, point.results, point.infos, point.failed, predictions)
    point.timeline.mark("row_written")
    timeline = point.timeline.record(point.results)
    run.write_text(TIMELINE_FILE, json.dumps(timeline))
    return RunResult(run.run_id, row, run.path, point.results, point.infos, point.data, point.failed, predictions,
                     timeline)


class PointRun:
    """The state of one grid point across its repeats: results so far, failed attempts, live totals."""

    def __init__(self, spec: JobSpec, session: Session, bar) -> None:
        self.spec = spec
        self.session = session
        self.run = session.run
        self.bar = bar
        self.meter = RunMeter(self.run.run_id)
        self.saver = ShardSaver(self.run)
        self.results: list[ShardResult] = list(session.done.values())
        self.failed: list[ShardResult] = []
        self.infos: list[WorkerInfo] = []  # the first repeat's workers describe the row
        self.data: list[DataInfo] = []
        self.totals: dict[tuple[str, int], list[int]] = {}
        self.lost: list[str] = []  # one line per worker lost, over every repeat
        self.timeline = Timeline(session.started, session.started_at)
        self.invariance: InvarianceCheck | None = None  # the measured pass's examples rerun at bs 1

    def on_result(self, result: ShardResult) -> None:
        """Every finished attempt: saved at once if it succeeded, counted for the live metrics."""
        if result.error is None:
            self.saver.save(result)
            key = (result.pass_name, result.repeat)
            done, total, scored, correct = self.totals[key]
            self.totals[key] = [done + 1, total, scored + result.scored, correct + result.correct]
            self.meter.update(result.pass_name, *self.totals[key])
        self.bar.advance(result)

    def run_repeat(self, pool: Pool, repeat: int, data: Dataset) -> None:
        spec, session = self.spec, self.session
        self.bar.status(f"run {self.run.run_id}: preparing the data, setting up {pool.size} worker(s) (model, engine)")
        self.data = data.infos()  # first: a preparation's user error is the one to report
        self.timeline.mark("data_ready")
        prepared = check_preparations_agree(self.data)
        plan = make_plan(prepared.num_examples, spec.bs, spec.shard_size, prepared.costs)
        check_resume(self.run, prepared, plan, session.done.values())  # before any worker is set up
        infos = pool.setup()
        self.timeline.mark("workers_ready")
        _keep_build_logs(self.run, infos)
        infos = _drop_broken(pool, infos)
        num_examples = check_workers_agree(infos, prepared)
        self.infos = self.infos or infos
        if not self.run.exists():
            self.run.create(dump_spec(spec), started_at=session.started_at, sweep_id=session.sweep_id,
                            weights_fetched_on=pool.prefetched_nodes)  # the first session's start
        if not self.run.has(PLAN_FILE):
            save_plan(self.run, prepared, plan)
        dispatcher = Dispatcher(pool, spec.max_attempts, self.on_result)
        measured_pass = "infer" if "infer" in spec.passes else "val"
        for pass_name in [p for p in spec.passes if repeat == 0 or p == measured_pass]:
            shards = plan.shards(pass_name, repeat)
            todo = [s for s in shards if (pass_name, repeat, s.shard_id) not in session.done]
            self.totals[(pass_name, repeat)] = [len(shards) - len(todo), len(shards), 0, 0]
            label = pass_name + (f" (repeat {repeat + 1}/{spec.repeats})" if spec.repeats > 1 else "")
            self.bar.start_pass(pass_name, label, num_examples, done=sum(s.stop - s.start for s in shards if s not in todo))
            self.results += dispatcher.run(todo)
        self.failed += dispatcher.failed_attempts
        self._count_losses(dispatcher, infos, repeat)
        if repeat == 0:
            self.infos += dispatcher.joined  # replacements: their devices ran shards of the row
        self.data = data.infos()  # a worker restarted on another node may have had the data prepared there
        check_preparations_agree(self.data)

        if repeat == 0 and spec.invariance_examples:
            self.bar.status(f"run {self.run.run_id}: invariance check ({spec.invariance_examples} examples at bs 1)")
            self.invariance = run_invariance_check(spec, pool, num_examples)

    def _count_losses(self, dispatcher: Dispatcher, infos: list[WorkerInfo], repeat: int) -> None:
        where = {i.worker_id: f" on {i.hostname} ({i.device})" for i in [*infos, *dispatcher.joined]}
        when = f" in repeat {repeat + 1}" if self.spec.repeats > 1 else ""
        self.lost += [f"worker {w}{where.get(w, '')}{when}: {why}" for w, why in sorted(dispatcher.lost.items())]


def _drop_broken(pool: Pool, infos: list[WorkerInfo]) -> list[WorkerInfo]:
    """Workers whose setup crashed are dropped while others set up (policy.broken_at_setup)."""
    broken = broken_at_setup(infos)
    for worker, why in broken.items():
        pool.retire(worker)
        pool.lost[worker] = f"setup failed: {why}"
    return [i for i in infos if i.worker_id not in broken]


def _keep_build_logs(run: RunFolder, infos: list[WorkerInfo]) -> None:
    """A failed engine build leaves its builder log in the run folder (and no row)."""
    for info in infos:
        if info.error is not None and info.error.detail:
            path = run.write_text(f"build-w{info.worker_id}.log", info.error.detail)
            raise UserError(f"{info.error.message} (builder log: {path})")


def _finish_run(store: ResultsStore, run: RunFolder, spec: JobSpec, row: MetricsRow, results: list[ShardResult],
                infos: list[WorkerInfo], failed: list[ShardResult], predictions: list[dict]) -> None:
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
