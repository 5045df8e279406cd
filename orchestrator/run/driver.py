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
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.metrics.invariance import InvarianceCheck, compared
from orchestrator.metrics.merge import Pause, completed, headline_records, merge
from orchestrator.metrics.store import ResultsStore, RunFolder, ShardSaver
from orchestrator.run.data import Dataset, check_preparations_agree
from orchestrator.run.dispatch import Dispatcher
from orchestrator.run.invariance import run_invariance_check
from orchestrator.run.meter import RunMeter
from orchestrator.run.plan import make_plan
from orchestrator.run.policy import broken_at_setup
from orchestrator.run.pool import Pool
from orchestrator.run.preflight import preflight
from orchestrator.run.resume import PLAN_FILE, RunComplete, check_resume, save_plan
from orchestrator.run.sessions import pauses_between, record_session
from orchestrator.run.steps import (
    RunInterrupted,
    RunResult,
    check_workers_agree,
    finish_run,
    keep_build_logs,
    open_dataset,
    open_pool,
)
from orchestrator.run.timeline import TIMELINE_FILE, Timeline
from orchestrator.spec import JobSpec, dump_spec
from workers.contract import DataInfo, ShardResult, WorkerInfo
from workers.errors import UserError


def new_run_id(name: str) -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{name}-{secrets.token_hex(3)}"


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
        from orchestrator.run.loadgen.point import run_scenario_point

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
    finish_run(store, run, spec, row, point.results, point.infos, point.failed, predictions)
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
        keep_build_logs(self.run, infos)
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
