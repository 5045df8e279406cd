"""LoadGen tests through the bridge with the in-process worker (the --no-ray path), and find_peak's search."""

import json
import threading

import pyarrow.parquet as pq
import pytest

from orchestrator.driver import run_job
from orchestrator.spec import validate
from tests.builders import job, stored_rows
from workers.errors import RunFailed


def synthetic(scenario: str, loadgen: dict, latency_ms: float = 1, size: int = 40, **fields) -> dict:
    return job(engine={"name": "synthetic", "latency_ms": latency_ms, **fields.pop("engine", {})}, passes=["infer"],
               load={"kind": "loadgen", "scenario": scenario, **loadgen}, workers=1,
               data={"synthetic": {"seed": 1, "size": size}}, **fields)


@pytest.mark.slow
def test_accuracy_mode_scores_every_sample_once_through_a_crashed_batch(tmp_path):
    """Batch 2 crashes once (fail_shards names batch ids in LoadGen runs): its samples are re-issued,
    LoadGen's accuracy log has each sample once, and the counts equal the Offline run's."""
    raw = synthetic("server", {"target_qps": 400, "mode": "accuracy"}, engine={"fail_shards": [2]}, bs=4)
    result = run_job(validate(raw, "x"), results_dir=tmp_path, in_process=True)
    plain = {k: v for k, v in raw.items() if k != "load"}
    offline = run_job(validate(dict(plain, engine={"name": "synthetic", "latency_ms": 1}), "x"), results_dir=tmp_path,
                      in_process=True).row
    row = result.row
    assert row.retries == 1 and row.verdict == "VALID" and row.loadgen_result is None
    logged = json.loads((result.run_dir / "loadgen" / "mlperf_log_accuracy.json").read_text())
    assert sorted(entry["qsl_idx"] for entry in logged) == list(range(40))
    assert (row.examples, row.scored_infer, row.correct_infer) == (40, offline.scored_infer, offline.correct_infer)
    retried = pq.read_table(result.run_dir / "retries.parquet").to_pylist()
    assert [r["shard_id"] for r in retried] == [2] and "injected failure" in retried[0]["message"]


def test_a_user_error_in_a_batch_ends_loadgen_and_the_run_in_one_line(tmp_path, monkeypatch):
    from workers.engines.synthetic import Synthetic
    from workers.errors import UserError

    def refuse(self, shard):
        if shard.shard_id == 3:
            raise UserError("engine: batch outside the profile")

    monkeypatch.setattr(Synthetic, "before_shard", refuse)
    with pytest.raises(RunFailed) as err:
        run_job(validate(synthetic("single_stream", {}), "x"), results_dir=tmp_path, in_process=True)
    assert "failed on attempt 1/3 on worker 0: engine: batch outside the profile" in str(err.value)
    assert stored_rows(tmp_path) == []


def test_samples_per_query_above_the_dataset_is_one_line_and_leaves_no_run(tmp_path):
    from workers.errors import UserError

    with pytest.raises(UserError, match="load.samples_per_query: 50 is more than the dataset's 40 examples"):
        run_job(validate(synthetic("multi_stream", {"samples_per_query": 50}), "x"), results_dir=tmp_path,
                in_process=True)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_max_batch_wait_lets_an_idle_worker_wait_for_a_fuller_batch(tmp_path):
    """400 QPS on a worker with no engine wait: without a wait it runs each sample as it comes;
    with max_batch_wait_ms 30 (4 arrivals take ~10 ms) its batches are mostly full (bs 4)."""
    loadgen = {"target_qps": 400, "max_batch_wait_ms": 30, "latency_bound_ms": 200}
    row = run_job(validate(synthetic("server", loadgen, latency_ms=0, bs=4), "x"), results_dir=tmp_path,
                  in_process=True).row
    assert row.items_infer / row.measured_batches >= 3 and row.loadgen_result == "VALID"


class RecordingMeter:
    """Stands for the Ray metrics (absent in-process): records what the bridge reports."""

    def __init__(self, run_id: str) -> None:
        self.issued, self.latencies, self.depths = 0, [], []

    def query_issued(self, queries: int, samples_waiting: int) -> None:
        self.issued += queries

    def query_completed(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def queue_depth(self, worker: int, samples: int, samples_waiting: int) -> None:
        self.depths.append((worker, samples))


def test_live_metrics_count_every_query_issued_and_completed(tmp_path, monkeypatch):
    import orchestrator.modes.loadgen.serve as point

    meters: list[RecordingMeter] = []
    monkeypatch.setattr(point, "ScenarioMeter", lambda run_id: meters.append(RecordingMeter(run_id)) or meters[-1])
    result = run_job(validate(synthetic("single_stream", {"min_duration_s": 0.1}, latency_ms=0), "x"),
                     results_dir=tmp_path, in_process=True)
    (meter,) = meters
    queries = pq.read_table(result.run_dir / "queries.parquet").num_rows
    assert meter.issued == len(meter.latencies) == queries == result.row.items_infer
    assert {d for _, d in meter.depths} == {0, 1} and {w for w, _ in meter.depths} == {0}  # one sample in flight
    assert all(0 < t < 1 for t in meter.latencies)


@pytest.mark.slow
def test_multi_stream_queries_carry_their_samples(tmp_path):
    raw = synthetic("multi_stream", {"samples_per_query": 3, "min_duration_s": 0.2}, bs=3)
    result = run_job(validate(raw, "x"), results_dir=tmp_path, in_process=True)
    row = result.row
    queries = pq.read_table(result.run_dir / "queries.parquet").to_pylist()
    assert len(queries) == 662  # quick rules: the fewest queries LoadGen's early stopping takes
    assert {q["samples"] for q in queries} == {3}
    assert row.items_infer == 3 * 662 and row.verdict == row.loadgen_result == "VALID"
    assert row.achieved_qps is None and row.query_latency_p99 >= row.query_latency_p50 >= 0.001


@pytest.mark.slow
def test_find_peak_reports_the_highest_valid_rate_and_every_rate_tried(tmp_path):
    """One worker, bs 1, 2 ms a batch (under 500 QPS), a 50 ms p99 bound: from 300 QPS, 600 must fail (a backlog that grows)."""
    loadgen = {"mode": "find_peak", "target_qps": 300, "latency_bound_ms": 50, "min_duration_s": 0.2,
               "find_peak_tolerance": 0.3, "find_peak_max_runs": 3}
    result = run_job(validate(synthetic("server", loadgen, latency_ms=2, bs=1), "x"), results_dir=tmp_path,
                     in_process=True)
    row = result.row
    probes = pq.read_table(result.run_dir / "find_peak.parquet").to_pylist()
    valid = [p["target_qps"] for p in probes if p["loadgen_result"] == "VALID"]
    assert any(p["loadgen_result"] == "INVALID" for p in probes)
    assert probes[0]["target_qps"] == 300 and len(probes) == 3 and valid
    assert row.target_qps == max(valid) and row.loadgen_result == "VALID" and row.loadgen_mode == "find_peak"
    assert row.find_peak_stop.startswith(("converged", "runs ran out"))  # said, whichever it was
    assert ("find_peak: " in row.verdict_reasons) == (not row.find_peak_stop.startswith("converged"))
    assert all(p["target_qps"] > row.target_qps for p in probes if p["loadgen_result"] == "INVALID")
    assert all(p["verdict_reasons"].startswith("LoadGen INVALID") == (p["loadgen_result"] == "INVALID") for p in probes)
    assert {f"qps-{p['target_qps']:.6g}" for p in probes} == {d.name for d in (result.run_dir / "loadgen").iterdir()}

    from orchestrator.views.html_report import report_run

    md, html = report_run(tmp_path, row.run_id)
    text = md.read_text()
    assert "QPS searched vs p99 (find_peak)" in text and "Per-query latency (LoadGen)" in text
    assert "| loadgen_result | VALID |" in text and html.stat().st_size > 10_000


@pytest.mark.slow
def test_accuracy_mode_on_mmlu_tiny_gives_the_offline_predictions_question_for_question(tmp_path):
    """jobs/mmlu_tiny.yaml, 8 questions per subject (24, bs 4): Offline batches by prompt length within
    shards; LoadGen's server queries arrive in LoadGen's order and are batched as they wait. The
    predictions must not care."""
    from orchestrator.spec import load_spec
    from tests.builders import TEST_DATA_CACHE

    # invariance_check=0: the bs-1 rerun is not what this test compares (tests/orchestrator/modes/offline/test_invariance_check.py)
    common = ["passes=[infer]", "task.limit=8", f"data_cache={TEST_DATA_CACHE}", "invariance_check=0"]
    offline = run_job(load_spec("jobs/mmlu_tiny.yaml", common), results_dir=tmp_path, in_process=True)
    served = run_job(load_spec("jobs/mmlu_tiny.yaml", common + ["load.kind=loadgen", "load.scenario=server",
                                                                  "load.mode=accuracy", "load.target_qps=200"]),
                     results_dir=tmp_path, in_process=True)

    def predicted(run) -> dict[tuple[str, int], str]:
        return {(r["subject"], r["question_index"]): r["predicted"] for r in run.predictions}

    assert len(predicted(offline)) == 24 and predicted(served) == predicted(offline)
    assert served.row.acc_infer == offline.row.acc_infer and served.row.verdict == "VALID"
    logged = json.loads((served.run_dir / "loadgen" / "mlperf_log_accuracy.json").read_text())
    assert sorted(entry["qsl_idx"] for entry in logged) == list(range(24))  # every question once
    letters = {r["example"]: r["predicted"] for r in offline.predictions}  # each response: the chosen letter
    assert {e["qsl_idx"]: "ABCD"[int.from_bytes(bytes.fromhex(e["data"]), "little", signed=True)]
            for e in logged} == letters
    # raybench's accuracy script: the log scored again with the run's own data gives the Offline accuracy
    from orchestrator.metrics.store import ResultsStore
    from orchestrator.modes.loadgen.accuracy import accuracy_of_run

    again = accuracy_of_run(ResultsStore(tmp_path).run(served.row.run_id))
    assert (again.examples, again.missing, again.scored) == (24, 0, 24)
    assert again.accuracy == offline.row.acc_infer
    shapes = pq.read_table(served.run_dir / "shards.parquet").column("examples").to_pylist()
    assert max(shapes) > 1 and len(shapes) >= 6  # batched as the queries waited, not as Offline's shards


@pytest.mark.slow
def test_loadgen_logs_and_tables_land_in_a_remote_results_store(moto_s3, monkeypatch):
    """LoadGen writes its logs to a local folder; with the results on S3 they are copied into the run."""
    from orchestrator.metrics.store import ResultsStore

    for key, value in moto_s3.env().items():
        monkeypatch.setenv(key, value)
    uri = f"s3://{moto_s3.new_bucket()}/results"
    row = run_job(validate(synthetic("single_stream", {"min_duration_s": 0.1}, latency_ms=1), "x"), results_dir=uri,
                  in_process=True).row
    run = ResultsStore(uri).run(row.run_id)
    for name in ("summary.txt", "detail.txt", "accuracy.json", "trace.json"):
        assert run.has(f"loadgen/mlperf_log_{name}"), name
    assert "Result is : VALID" in run.read_text("loadgen/mlperf_log_summary.txt")
    assert run.read_table("queries.parquet").num_rows == row.items_infer


@pytest.mark.slow
def test_ctrl_c_ends_the_loadgen_test_and_stores_no_row(tmp_path):
    """Ctrl-C while LoadGen runs (an 8 s test): the bridge completes everything at once, LoadGen runs
    out its schedule (it has no abort), the run stops with RunInterrupted, and no row is added. The
    next LoadGen test in the process runs: the first was over before it was destroyed."""
    import _thread
    import time

    from workers.errors import RunInterrupted

    def interrupt_once_loadgen_runs() -> None:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("runs/*/loadgen/mlperf_log_detail.txt")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        started.append(time.monotonic())
        _thread.interrupt_main()

    started: list[float] = []
    threading.Thread(target=interrupt_once_loadgen_runs, daemon=True).start()
    with pytest.raises(RunInterrupted, match="a LoadGen run cannot be resumed"):
        run_job(validate(synthetic("single_stream", {"min_duration_s": 8}, latency_ms=5), "x"), results_dir=tmp_path,
                in_process=True)
    assert started and time.monotonic() - started[0] < 12 and stored_rows(tmp_path) == []
    after = run_job(validate(synthetic("single_stream", {"min_duration_s": 0.1}, latency_ms=1), "x"),
                    results_dir=tmp_path, in_process=True).row
    assert after.loadgen_result == "VALID"


def test_a_loadgen_run_cannot_be_resumed(tmp_path):
    from orchestrator.driver import run_all
    from workers.errors import UserError

    from orchestrator.metrics.store import METRICS_FOLDER

    spec = validate(synthetic("single_stream", {"min_duration_s": 0.05}, latency_ms=1), "x")
    row = run_job(spec, results_dir=tmp_path, in_process=True).row
    for table in (tmp_path / METRICS_FOLDER).glob(f"*{row.run_id}.parquet"):
        table.unlink()  # the run folder as an interrupted run leaves it: no row yet
    with pytest.raises(UserError, match=f"--resume {row.run_id}: a LoadGen single_stream run cannot be resumed"):
        run_all(spec, results_dir=tmp_path, in_process=True, run_id=row.run_id, resume=True)
    assert stored_rows(tmp_path) == []
