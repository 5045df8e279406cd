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
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from orchestrator.cluster.bring_up import bring_up, open_dataset, open_pool
from orchestrator.cluster.live import ScenarioMeter
from orchestrator.metrics.merge import assemble, judge
from orchestrator.metrics.passes import headline_records
from orchestrator.metrics.store import RunFolder
from orchestrator.modes.loadgen.bridge import BridgeOptions
from orchestrator.modes.loadgen.columns import ScenarioFigures, loadgen_rules, scenario_columns
from orchestrator.modes.loadgen.runner import LoadGenTest, run_test
from orchestrator.modes.loadgen.settings import build_test_settings, latency_bound_s, token_bounds_s
from orchestrator.modes.loadgen.summary import query_latencies_ns
from orchestrator.modes.search import Search, find_peak
from orchestrator.point import Point, finish
from orchestrator.session import RunResult
from orchestrator.spec import EngineJob
from orchestrator.targets.base import Target
from orchestrator.targets.engines import engine_target
from workers.errors import RunInterrupted, UserError


def run_point(point: Point) -> RunResult:
    """One LoadGen grid point: bring-up, warm-up, the mode's test(s), the row (module docstring)."""
    spec, run = point.spec, point.run
    load = spec.load
    if run.exists():
        raise UserError(f"--resume {run.run_id}: a LoadGen {load.scenario} run cannot be resumed (LoadGen owns the "
                        "schedule); submit the job again")
    with _log_root(run) as logs:
        data = open_dataset(spec, point.in_process)
        pool = open_pool(spec, run.run_id, point.in_process, data)
        try:
            ready = bring_up(point, pool, data, check=lambda prepared: _check_dataset(spec, prepared.num_examples))
            target = engine_target(pool, load.hand_over, _slots(spec))
            served = _serve(point, target, ready.prepared.num_examples, logs)
        except KeyboardInterrupt:
            raise RunInterrupted(run.run_id, False, point.store.shown_uri,
                                 why="; workers stopped; a LoadGen run cannot be resumed (submit the job again)") from None
        finally:
            pool.shutdown()
        _keep_logs(run, logs)
        _write_tables(run, spec, served, ready.prepared.num_examples)
    head = served.head
    failed = [r for test in served.tests for r in test.failed]
    lost = _lost(pool.lost, target.lost, ready.infos)
    generates = type(spec.task).generates
    merged = assemble(spec=spec, run_id=run.run_id, results=head.results, infos=ready.infos, data=ready.data,
                      e2e_seconds=point.session.e2e_seconds(), retries=len(failed), item_unit=ready.infos[0].item_unit,
                      sweep_id=point.session.sweep_id, ray_start_seconds=point.ray_start_seconds,
                      workers_lost=lost, watched=head.watched, requests=head.requests if generates else None)
    figures = _figures(spec, head, ready.prepared.num_examples, served.search, target.hand_over)
    # the warm-ups before LoadGen's first query, and of restarted workers, happened outside the measured
    # batches: count them as Offline does
    warmups = merged.row.warmup_batches + sum(served.warmed) + target.warmed_again
    row = judge(merged, spec, [loadgen_rules(figures)], {**scenario_columns(figures), "warmup_batches": warmups})
    predictions = headline_records(row, head.results)
    return finish(point, row, head.results, ready.infos, ready.data, failed, predictions,
                  head.requests if generates else None)


def _slots(spec: EngineJob) -> int:
    """Places per worker: bs for an engine that takes requests while others run (continuous batching:
    each sample goes to a worker as it arrives, up to bs at once, and joins its running batch), else 1
    (a worker runs one batch of up to bs samples at a time)."""
    return spec.bs if type(spec.task).generates and type(spec.engine).continuous else 1


def _lost(dropped: dict[int, str], gone: dict[int, str], infos: list) -> tuple[str, ...]:
    """One line per worker the run lost: dropped at bring-up, or gone for good during the test
    (`gone` counts the target's places: the workers that set up, in order)."""
    where = {i.worker_id: f" on {i.hostname} ({i.device})" for i in infos}
    kept = [i.worker_id for i in infos]
    lines = [f"worker {w}: {why}" for w, why in sorted(dropped.items())]
    lines += [f"worker {kept[p]}{where.get(kept[p], '')}: {why}" for p, why in sorted(gone.items())]
    return tuple(lines)


@dataclass
class Served:
    """What a point's LoadGen tests gave: the headline test, every test, the warm-up batches of each
    worker, and find_peak's search (None in the other modes)."""

    head: LoadGenTest
    tests: list[LoadGenTest]
    warmed: list[int]
    search: Search | None = None


def _serve(point: Point, workers: Target, examples: int, logs: Path) -> Served:
    """Warm the workers, then run the mode's LoadGen test(s)."""
    spec = point.spec
    options = spec.load
    generates = type(spec.task).generates
    bridge = BridgeOptions(spec.measured_pass, spec.bs if _slots(spec) == 1 else 1, options.max_batch_wait_ms / 1e3,
                           spec.max_attempts,
                           keep_data=options.mode == "accuracy", generates=generates,
                           token_latencies=options.uses_tokens(generates))
    meter = ScenarioMeter(point.run_id)

    def probe(qps: float | None, folder: Path) -> LoadGenTest:
        settings = build_test_settings(options.scenario, options, examples, accuracy=options.mode == "accuracy",
                                       target_qps=qps, generates=generates)
        rate = f" at {qps:g} QPS" if qps else ""
        point.status(f"LoadGen {options.scenario} {options.mode}{rate}")
        return run_test(settings, workers, bridge, examples, folder, meter, options.trace, target_qps=qps)

    try:
        point.status(f"warming up {workers.size} worker(s)")
        warmed = workers.warm_up(spec.measured_pass)
        if options.mode == "find_peak":
            search = find_peak(lambda qps: probe(qps, logs / f"qps-{qps:.6g}"), lambda test: test.valid,
                               lambda test: test.target_qps, options.target_qps, options.find_peak_tolerance,
                               options.find_peak_max_runs)
            return Served(search.best, search.probes, warmed, search)
        head = probe(options.target_qps, logs)
        return Served(head, [head], warmed)
    finally:
        workers.close()


def _check_dataset(spec: EngineJob, examples: int) -> None:
    """What only the prepared data can tell, checked before any worker is set up."""
    if spec.load.scenario == "multi_stream" and spec.load.samples_per_query > examples:
        raise UserError(f"load.samples_per_query: {spec.load.samples_per_query} is more than the dataset's "
                        f"{examples} examples")


def _figures(spec: EngineJob, test: LoadGenTest, examples: int, search: Search | None = None,
             hand_over: str = "") -> ScenarioFigures:
    """The figures of one test; `search`: find_peak's, when `test` is its headline (a search that did
    not converge is no peak: its stop reason is a reason of the row's)."""
    options = spec.load
    note = search.problem if search is not None else ""
    return ScenarioFigures(
        scenario=options.scenario, mode=options.mode, rules=options.rules, summary=test.summary,
        target_qps=test.target_qps, latency_bound_s=latency_bound_s(options.scenario, options, test.settings),
        examples=examples, scored_examples=sum(r.examples for r in test.results), note=note, hand_over=hand_over,
        find_peak_stop=search.stop if search is not None else None,
        tokens=test.tokens, token_bounds_s=token_bounds_s(test.settings),
    )


def _write_tables(run: RunFolder, spec: EngineJob, served: Served, examples: int) -> None:
    queries = _queries_table(served.head.log_dir)
    if queries is not None:
        run.file("queries.parquet").write_table(queries)
    if spec.load.mode == "find_peak":
        keep = ("target_qps", "loadgen_result", "achieved_qps", "query_latency_p99", "latency_bound")
        rows = []
        for order, test in enumerate(served.tests):
            figures = _figures(spec, test, examples)
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
