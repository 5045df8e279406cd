"""Offline's point: every example as fast as the workers go, cut into shards.

    bring-up -> plan checked against a resumed run -> val phase -> infer phase -> invariance check
    (repeat: fresh workers, the measured pass again) -> merge -> finish

Variable-length work is planned in length order (orchestrator/modes/offline/plan.py), so each
batch holds prompts of similar length and computes little padding (the row's `padding_share`).

The next phase starts only when every shard of the current one is done, so a pass's wall span is
not mixed with the other pass. Every finished shard is written to the run folder at once; a run
resumed after the driver died (`--resume RUN_ID`) re-runs only the shards that are not there.
"""

from __future__ import annotations

import time
from dataclasses import replace

from orchestrator.cluster.bring_up import BroughtUp, bring_up, open_dataset, open_pool
from orchestrator.cluster.data import Dataset, check_preparations_agree
from orchestrator.cluster.live import RunMeter
from orchestrator.cluster.pool import Pool
from orchestrator.metrics.invariance import InvarianceCheck, compared
from orchestrator.metrics.merge import merge
from orchestrator.metrics.passes import headline_records
from orchestrator.metrics.store import ShardSaver
from orchestrator.modes.offline.dispatch import Dispatcher
from orchestrator.modes.offline.invariance_check import run_invariance_check
from orchestrator.modes.offline.plan import Plan, make_plan
from orchestrator.modes.offline.resume import PLAN_FILE, check_resume, save_plan
from orchestrator.point import Point, finish
from orchestrator.session import RunResult
from workers.contract import DataInfo, ShardResult, WorkerInfo


def run_point(point: Point) -> RunResult:
    """One grid point: `repeats` rounds of fresh workers; the first also runs the reference pass."""
    spec, session = point.spec, point.session
    state = OfflineRun(point)
    point.status("preparing the data")
    data = open_dataset(spec, point.in_process)
    try:
        for repeat in range(spec.repeats):
            pool = open_pool(spec, point.run_id, point.in_process, data)
            try:
                state.run_repeat(pool, repeat, data)
            finally:
                pool.shutdown()
    finally:
        state.saver.close()  # every finished shard is on disk before the row or the error
    state.saver.check()
    row = merge(spec=spec, run_id=point.run_id, results=state.results, infos=state.infos, data=state.data,
                e2e_seconds=session.e2e_seconds(), retries=len(state.failed), item_unit=state.infos[0].item_unit,
                resumed=bool(session.done), pauses=session.pauses, sweep_id=session.sweep_id,
                ray_start_seconds=point.ray_start_seconds, invariance=state.invariance,
                workers_lost=tuple(state.lost))
    predictions = headline_records(row, state.results)
    if state.invariance is not None:
        point.run.write_records("invariance.parquet", compared(predictions, state.invariance))
    return finish(point, row, state.results, state.infos, state.data, state.failed, predictions)


class OfflineRun:
    """The state of one grid point across its repeats: results so far, failed attempts, live totals."""

    def __init__(self, point: Point) -> None:
        self.point = point
        self.spec = point.spec
        self.meter = RunMeter(point.run_id)
        self.saver = ShardSaver(point.run)
        self.results: list[ShardResult] = list(point.session.done.values())
        self.failed: list[ShardResult] = []
        self.infos: list[WorkerInfo] = []  # the first repeat's workers describe the row
        self.data: list[DataInfo] = []
        self.totals: dict[tuple[str, int], list[int]] = {}
        self.lost: list[str] = []  # one line per worker lost, over every repeat
        self.invariance: InvarianceCheck | None = None  # the measured pass's examples rerun at bs 1
        self.plan: Plan | None = None

    def on_result(self, result: ShardResult) -> None:
        """Every finished attempt: saved at once if it succeeded, counted for the live metrics."""
        if result.error is None:
            self.saver.save(result)
            key = (result.pass_name, result.repeat)
            done, total, scored, correct = self.totals[key]
            self.totals[key] = [done + 1, total, scored + result.scored, correct + result.correct]
            self.meter.update(result.pass_name, *self.totals[key])
        self.point.bar.advance(result)

    def _plan(self, prepared: DataInfo) -> None:
        """The shards, checked against a resumed run's before any worker is set up."""
        self.plan = make_plan(prepared.num_examples, self.spec.bs, self.spec.shard_size, prepared.costs)
        check_resume(self.point.run, prepared, self.plan, self.point.session.done.values())

    def run_repeat(self, pool: Pool, repeat: int, data: Dataset) -> None:
        spec, point = self.spec, self.point
        ready: BroughtUp = bring_up(point, pool, data, check=self._plan)
        self.data = ready.data
        self.infos = self.infos or ready.infos
        if not point.run.has(PLAN_FILE):
            save_plan(point.run, ready.prepared, self.plan)
        dispatcher = Dispatcher(pool, spec.max_attempts, self.on_result)
        done = point.session.done
        for pass_name in [p for p in spec.passes if repeat == 0 or p == spec.measured_pass]:
            shards = self.plan.shards(pass_name, repeat, warmup=spec.warmup)
            todo = [s for s in shards if (pass_name, repeat, s.shard_id) not in done]
            self.totals[(pass_name, repeat)] = [len(shards) - len(todo), len(shards), 0, 0]
            label = pass_name + (f" (repeat {repeat + 1}/{spec.repeats})" if spec.repeats > 1 else "")
            point.bar.start_pass(pass_name, label, ready.prepared.num_examples,
                                 done=sum(s.stop - s.start for s in shards if s not in todo))
            if type(spec.task).generates:  # every request of the pass arrives now (ShardTask.arrival_ts)
                began = time.time()
                todo = [replace(s, arrival_ts=began) for s in todo]
            self.results += dispatcher.run(todo)
        self.failed += dispatcher.failed_attempts
        self._count_losses(dispatcher, ready.infos, repeat)
        if repeat == 0:
            self.infos += dispatcher.joined  # replacements: their devices ran shards of the row
        self.data = data.infos()  # a worker restarted on another node may have had the data prepared there
        check_preparations_agree(self.data)
        count = spec.invariance_examples(ready.prepared.num_examples)
        if repeat == 0 and count:
            point.status(f"invariance check ({count} examples at bs 1)")
            started = point.timeline.now()
            self.invariance = run_invariance_check(spec, pool, ready.prepared.num_examples, self.plan.example_order)
            point.timeline.span("invariance", started, point.timeline.now())

    def _count_losses(self, dispatcher: Dispatcher, infos: list[WorkerInfo], repeat: int) -> None:
        where = {i.worker_id: f" on {i.hostname} ({i.device})" for i in [*infos, *dispatcher.joined]}
        when = f" in repeat {repeat + 1}" if self.spec.repeats > 1 else ""
        self.lost += [f"worker {w}{where.get(w, '')}{when}: {why}" for w, why in sorted(dispatcher.lost.items())]
