"""One scenario grid point from spec to stored row (driver.py hands every non-offline point here).

The same steps as an Offline point, with LoadGen in the middle:
    data prepared once -> workers set up and warmed -> LoadGen test(s) -> merge -> scenario columns -> store
The batches the workers ran go through Offline's merge (core throughput, batch latencies, memory,
accuracy, MFU); LoadGen's own figures and verdict are added by `columns.scenario_columns`.
Written to the run folder besides Offline's files:
    loadgen/                 LoadGen's logs (mlperf_log_summary.txt, _detail.txt, _accuracy.json, _trace.json)
    loadgen/qps-<rate>/      find_peak: the logs of each rate tried
    queries.parquet          the headline test's per-query latencies, read from LoadGen's trace
    find_peak.parquet        find_peak: each rate tried, LoadGen's verdict, achieved QPS and p99
A LoadGen test cannot be resumed (LoadGen owns the schedule), so `--resume` of such a run is refused.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from orchestrator.metrics.merge import headline_records, merge
from orchestrator.metrics.store import ResultsStore, RunFolder
from orchestrator.run.loadgen.bridge import BridgeOptions
from orchestrator.run.loadgen.columns import ScenarioFigures, scenario_columns
from orchestrator.run.loadgen.meter import ScenarioMeter
from orchestrator.run.loadgen.runner import LoadGenTest, find_peak, run_test
from orchestrator.run.loadgen.settings import build_test_settings, latency_bound_s
from orchestrator.run.loadgen.summary import query_latencies_ns
from orchestrator.run.loadgen.workers import SampleWorkers, sample_workers
from orchestrator.spec import JobSpec, dump_spec
from workers.errors import UserError


def run_scenario_point(spec: JobSpec, store: ResultsStore, session, in_process: bool, progress: bool):
    from orchestrator.run.data import check_preparations_agree
    from orchestrator.run.progress import RunProgress
    from orchestrator.run.steps import (
        RunInterrupted,
        RunResult,
        check_workers_agree,
        finish_run,
        keep_build_logs,
        open_dataset,
        open_pool,
    )

    run = session.run
    if run.exists():
        raise UserError(f"--resume {run.run_id}: a LoadGen {spec.scenario} run cannot be resumed (LoadGen owns the "
                        "schedule); submit the job again")
    with RunProgress(enabled=progress) as bar, _log_root(run) as logs:
        bar.status(f"run {run.run_id}: preparing the data, setting up the workers (model, engine)")
        data = open_dataset(spec, in_process)
        pool = open_pool(spec, run.run_id, in_process, data)
        try:
            data_infos = data.infos()
            prepared = check_preparations_agree(data_infos)
            infos = pool.setup()
            keep_build_logs(run, infos)
            examples = check_workers_agree(infos, prepared)
            _check_dataset(spec, examples)
            run.create(dump_spec(spec), started_at=session.started_at, sweep_id=session.sweep_id,
                       weights_fetched_on=pool.prefetched_nodes)
            workers = sample_workers(pool, spec.loadgen.hand_over)
            head, tests, warmed = _serve(spec, workers, examples, logs, bar, run.run_id)
        except KeyboardInterrupt:
            interrupted = RunInterrupted(run.run_id, False, store.shown_uri)  # exit 130, as Offline's
            interrupted.args = (f"interrupted: run {run.run_id}; workers stopped; a LoadGen run cannot be resumed "
                                "(submit the job again)",)
            raise interrupted from None
        finally:
            pool.shutdown()
        _keep_logs(run, logs)
        _write_tables(run, spec, head, tests, examples)
    failed = [r for test in tests for r in test.failed]
    row = merge(spec=spec, run_id=run.run_id, results=head.results, infos=infos, data=data_infos,
                e2e_seconds=session.prior_seconds + time.perf_counter() - session.started, retries=len(failed),
                item_unit=infos[0].item_unit, sweep_id=session.sweep_id)
    columns = scenario_columns(_figures(spec, head, examples, tests, workers.hand_over))
    # the warm-ups before LoadGen's first query, and of restarted workers, happened outside the measured
    # batches: count them as Offline does
    warmups = row.warmup_batches + sum(warmed) + workers.warmed_again
    row = row.model_copy(update={**columns, "warmup_batches": warmups})
    predictions = headline_records(row, head.results)
    finish_run(store, run, spec, row, head.results, infos, failed, predictions)
    return RunResult(run.run_id, row, run.path, head.results, infos, data_infos, failed, predictions)


def _serve(spec: JobSpec, workers: SampleWorkers, examples: int, logs: Path, bar,
           run_id: str) -> tuple[LoadGenTest, list[LoadGenTest], list[int]]:
    """Warm the workers, then run the mode's LoadGen test(s): the headline test, every test, warm-ups."""
    options = spec.loadgen
    pass_name = "infer" if "infer" in spec.passes else "val"
    bridge = BridgeOptions(pass_name, spec.bs, options.max_batch_wait_ms / 1e3, spec.max_attempts,
                           keep_data=options.mode == "accuracy")
    meter = ScenarioMeter(run_id)

    def probe(qps: float | None, folder: Path) -> LoadGenTest:
        settings = build_test_settings(spec.scenario, options, examples, accuracy=options.mode == "accuracy",
                                       target_qps=qps)
        rate = f" at {qps:g} QPS" if qps else ""
        bar.status(f"run {run_id}: LoadGen {spec.scenario} {options.mode}{rate}")
        return run_test(settings, workers, bridge, examples, folder, meter, options.trace, target_qps=qps)

    try:
        bar.status(f"run {run_id}: warming up {workers.size} worker(s)")
        warmed = workers.warm_up(pass_name)
        if options.mode == "find_peak":
            head, tests = find_peak(lambda qps: probe(qps, logs / f"qps-{qps:.6g}"), options.target_qps,
                                    options.find_peak_tolerance, options.find_peak_max_runs)
        else:
            head = probe(options.target_qps, logs)
            tests = [head]
    finally:
        workers.close()
    return head, tests, warmed


def _check_dataset(spec: JobSpec, examples: int) -> None:
    """What only the prepared data can tell, checked before the run folder exists."""
    if spec.scenario == "multi_stream" and spec.loadgen.samples_per_query > examples:
        raise UserError(f"loadgen.samples_per_query: {spec.loadgen.samples_per_query} is more than the dataset's "
                        f"{examples} examples")


def _figures(spec: JobSpec, test: LoadGenTest, examples: int,
             tests: list[LoadGenTest] | None = None, hand_over: str = "") -> ScenarioFigures:
    """The figures of one test; `tests`: every test of a find_peak search, when `test` is its headline."""
    options = spec.loadgen
    note = ""
    if tests and options.mode == "find_peak" and not test.valid:
        note = f"find_peak: no rate tried was VALID (lowest {test.target_qps:g} QPS, {len(tests)} LoadGen runs)"
    return ScenarioFigures(
        scenario=spec.scenario, mode=options.mode, rules=options.rules, summary=test.summary,
        target_qps=test.target_qps, latency_bound_s=latency_bound_s(spec.scenario, options, test.settings),
        examples=examples, scored_examples=sum(r.examples for r in test.results), note=note, hand_over=hand_over,
    )


def _write_tables(run: RunFolder, spec: JobSpec, head: LoadGenTest, tests: list[LoadGenTest], examples: int) -> None:
    queries = _queries_table(head.log_dir)
    if queries is not None:
        run.file("queries.parquet").write_table(queries)
    if spec.loadgen.mode == "find_peak":
        keep = ("target_qps", "loadgen_result", "achieved_qps", "query_latency_p99", "latency_bound", "verdict_reasons")
        rows = []
        for order, test in enumerate(tests):
            columns = scenario_columns(_figures(spec, test, examples))
            rows.append({"run": order, **{k: columns[k] for k in keep}})
        run.file("find_peak.parquet").write_table(pa.Table.from_pylist(rows))


def _queries_table(log_dir: Path) -> pa.Table | None:
    """Per-query latency (s) and sample count of one test, from LoadGen's trace (None without a trace)."""
    trace = log_dir / "mlperf_log_trace.json"
    if not trace.exists():
        return None
    with trace.open(encoding="utf-8", errors="replace") as lines:
        queries = query_latencies_ns(lines)
    order = sorted(queries)
    return pa.table({"query": pa.array(order, pa.int64()),
                     "samples": pa.array([queries[q][0] for q in order], pa.int32()),
                     "latency_s": pa.array([queries[q][1] / 1e9 for q in order], pa.float64())})


@contextlib.contextmanager
def _log_root(run: RunFolder) -> Iterator[Path]:
    """Where LoadGen writes its logs: the run folder when it is local, else a temporary folder that
    `_keep_logs` copies into the results store."""
    local = run.root.local_path
    if local is not None:
        yield Path(local) / "loadgen"
        return
    folder = Path(tempfile.mkdtemp(prefix="raybench-loadgen-"))
    try:
        yield folder / "loadgen"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _keep_logs(run: RunFolder, logs: Path) -> None:
    if run.root.local_path is not None or not logs.exists():
        return
    for path in sorted(p for p in logs.rglob("*") if p.is_file()):
        run.file(f"loadgen/{path.relative_to(logs).as_posix()}").write_bytes(path.read_bytes())
