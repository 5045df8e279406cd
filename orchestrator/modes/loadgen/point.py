"""LoadGen's point: MLPerf LoadGen decides when queries arrive; the workers answer them in batches.

    bring-up (as every mode) -> workers warmed -> LoadGen test(s), the devices watched over each ->
    the row: every shared section (the batches the workers ran read as a pass: core throughput,
    batch latencies, memory, MFU, energy and health over the test), LoadGen's columns, and one
    verdict joining LoadGen's rule set with the incidents every row is judged on -> finish
Written to the run folder besides Offline's files:
    loadgen/                 LoadGen's logs (mlperf_log_summary.txt, _detail.txt, _accuracy.json, _trace.json)
    loadgen/qps-<rate>/      find_peak: the logs of each rate tried
    queries.parquet          the headline test's per-query latencies, read from LoadGen's trace
    find_peak.parquet        find_peak: each rate tried, LoadGen's verdict, achieved QPS and p99
A LoadGen test cannot be resumed (LoadGen owns the schedule), so `--resume` of such a run is refused.

The target is chosen by the job's class: engines on workers (an EngineJob: this module), or a running
server's client actors (an EndpointJob: orchestrator/modes/loadgen/endpoint_point.py, which shares
the tests, their logs and tables and LoadGen's columns from here).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from orchestrator.cluster.bring_up import bring_up, open_dataset, open_pool
from orchestrator.metrics.merge import assemble, judge
from orchestrator.metrics.passes import headline_records
from orchestrator.metrics.store import RunFolder
from orchestrator.modes.loadgen.columns import ScenarioFigures, loadgen_rules, scenario_columns
from orchestrator.modes.loadgen.logs import query_latencies_ns
from orchestrator.modes.loadgen.runner import LoadGenTest
from orchestrator.modes.loadgen.serve import Served, engine_shape, serve, slots_per_worker
from orchestrator.modes.loadgen.settings import latency_bound_s, token_bounds_s
from orchestrator.point import Point, finish
from orchestrator.session import RunResult
from orchestrator.spec import EndpointJob, EngineJob, JobBase
from orchestrator.targets.engines import engine_target
from workers.errors import RunInterrupted, UserError


def run_point(point: Point) -> RunResult:
    """One LoadGen grid point: bring-up, warm-up, the mode's test(s), the row (module docstring)."""
    spec, run = point.spec, point.run
    load = spec.load
    if run.exists():
        raise UserError(f"--resume {run.run_id}: a LoadGen {load.scenario} run cannot be resumed (LoadGen owns the "
                        "schedule); submit the job again")
    if isinstance(spec, EndpointJob):
        from orchestrator.modes.loadgen.endpoint_point import run_endpoint_point

        return run_endpoint_point(point)
    with log_root(run) as logs:
        data = open_dataset(spec, point.in_process)
        pool = open_pool(spec, run.run_id, point.in_process, data)
        try:
            ready = bring_up(point, pool, data, check=lambda prepared: _check_dataset(spec, prepared.num_examples))
            target = engine_target(pool, load.hand_over, slots_per_worker(spec))
            served = serve(point, target, ready.prepared.num_examples, logs, engine_shape(spec))
        except KeyboardInterrupt:
            raise RunInterrupted(run.run_id, False, point.store.shown_uri,
                                 why="; workers stopped; a LoadGen run cannot be resumed (submit the job again)") from None
        finally:
            pool.shutdown()
        keep_logs(run, logs)
        write_tables(run, spec, served, ready.prepared.num_examples)
    head = served.head
    failed = [r for test in served.tests for r in test.failed]
    lost = _lost(pool.lost, target.lost, ready.infos)
    generates = type(spec.task).generates
    merged = assemble(spec=spec, run_id=run.run_id, results=head.results, infos=ready.infos, data=ready.data,
                      e2e_seconds=point.session.e2e_seconds(), retries=len(failed), item_unit=ready.infos[0].item_unit,
                      sweep_id=point.session.sweep_id, ray_start_seconds=point.ray_start_seconds,
                      workers_lost=lost, watched=head.watched, requests=head.requests if generates else None)
    figures = figures_of(spec, served, ready.prepared.num_examples, target.hand_over)
    # the warm-ups before LoadGen's first query, and of restarted workers, happened outside the measured
    # batches: count them as Offline does
    warmups = merged.row.warmup_batches + sum(served.warmed) + target.warmed_again
    row = judge(merged, spec, [loadgen_rules(figures)], {**scenario_columns(figures), "warmup_batches": warmups})
    predictions = headline_records(row, head.results)
    return finish(point, row, head.results, ready.infos, ready.data, failed, predictions,
                  head.requests if generates else None)


def _lost(dropped: dict[int, str], gone: dict[int, str], infos: list) -> tuple[str, ...]:
    """One line per worker the run lost: dropped at bring-up, or gone for good during the test
    (`gone` counts the target's places: the workers that set up, in order)."""
    where = {i.worker_id: f" on {i.hostname} ({i.device})" for i in infos}
    kept = [i.worker_id for i in infos]
    lines = [f"worker {w}: {why}" for w, why in sorted(dropped.items())]
    lines += [f"worker {kept[p]}{where.get(kept[p], '')}: {why}" for p, why in sorted(gone.items())]
    return tuple(lines)


def _check_dataset(spec: EngineJob, examples: int) -> None:
    """What only the prepared data can tell, checked before any worker is set up."""
    if spec.load.scenario == "multi_stream" and spec.load.samples_per_query > examples:
        raise UserError(f"load.samples_per_query: {spec.load.samples_per_query} is more than the dataset's "
                        f"{examples} examples")


def figures_of(spec: JobBase, served: Served, examples: int, hand_over: str = "",
               test: LoadGenTest | None = None) -> ScenarioFigures:
    """The figures of the headline test (or of `test`, a find_peak probe): a search that did not
    converge is no peak, and a failed compliance test fails the row (their reasons are the row's)."""
    load, head = spec.load, test or served.head
    notes = []
    if test is None and served.search is not None:
        notes.append(served.search.problem)
    if test is None and served.compliance is not None and served.compliance.passed is False:
        notes.append(f"compliance {served.compliance.result}")
    return ScenarioFigures(
        scenario=load.scenario, mode=load.mode, rules=load.rules, detail=head.detail,
        target_qps=head.target_qps, latency_bound_s=latency_bound_s(load, head.settings),
        examples=examples, scored_examples=head.distinct_examples,
        note="; ".join(n for n in notes if n), hand_over=hand_over,
        find_peak_stop=served.search.stop if served.search is not None and test is None else None,
        deviations=tuple(head.built.deviations), issue_delays_ns=tuple(head.issue_delays_ns),
        compliance=served.compliance if test is None else None,
        tokens=head.tokens, token_bounds_s=token_bounds_s(head.settings),
    )


def write_tables(run: RunFolder, spec: JobBase, served: Served, examples: int) -> None:
    """queries.parquet (the headline test's queries) and, for find_peak, find_peak.parquet."""
    queries = _queries_table(served.head.log_dir)
    if queries is not None:
        run.file("queries.parquet").write_table(queries)
    if spec.load.mode == "find_peak":
        keep = ("target_qps", "loadgen_result", "achieved_qps", "query_latency_p99", "latency_bound")
        rows = []
        for order, test in enumerate(served.tests):
            figures = figures_of(spec, served, examples, test=test)
            columns = scenario_columns(figures)
            rows.append({"run": order, **{k: columns[k] for k in keep},
                         "verdict_reasons": "; ".join(loadgen_rules(figures).reasons)})
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
def log_root(run: RunFolder) -> Iterator[Path]:
    """Where LoadGen writes its logs: the run folder when it is local, else a temporary folder that
    `keep_logs` copies into the results store."""
    local = run.root.local_path
    if local is not None:
        yield Path(local) / "loadgen"
        return
    folder = Path(tempfile.mkdtemp(prefix="raybench-loadgen-"))
    try:
        yield folder / "loadgen"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def keep_logs(run: RunFolder, logs: Path) -> None:
    if run.root.local_path is not None or not logs.exists():
        return
    for path in sorted(p for p in logs.rglob("*") if p.is_file()):
        run.file(f"loadgen/{path.relative_to(logs).as_posix()}").copy_from(path)  # streamed: traces are large
