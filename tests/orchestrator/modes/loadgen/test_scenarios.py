"""LoadGen scenarios on a real local Ray with the synthetic engine: LoadGen's verdicts, its figures in
the row, the report, and a worker killed mid-run."""

import json
import os
import signal
import threading
import time

import pyarrow.parquet as pq
import pytest

from orchestrator.driver import run_job
from orchestrator.metrics.stats import percentiles
from orchestrator.spec import validate
from tests.builders import job, stored_rows

pytestmark = pytest.mark.slow


def synthetic(scenario: str, loadgen: dict, *, workers: int, latency_ms: float, bs: int, size: int = 256) -> dict:
    """The null SUT: a fixed wait per batch, no device and no core needed."""
    return job(engine={"name": "synthetic", "latency_ms": latency_ms}, passes=["infer"],
               load={"kind": "loadgen", "scenario": scenario, **loadgen}, workers=workers, gpus_per_worker=0,
               cpus_per_worker=0, bs=bs, data={"synthetic": {"seed": 1, "size": size}})


def mllog(run_dir, folder: str = "") -> dict:
    """Every key of LoadGen's detail log (its first value), read with this test's own parsing: the
    `:::MLLOG {json}` lines MLPerf's submission checker reads."""
    values: dict = {}
    for line in (run_dir / "loadgen" / folder / "mlperf_log_detail.txt").read_text().splitlines():
        if line.startswith(":::MLLOG "):
            entry = json.loads(line[len(":::MLLOG "):])
            values.setdefault(entry["key"], entry["value"])
    return values


@pytest.fixture(scope="module")
def below_capacity(ray_local, tmp_path_factory):
    """2 workers x bs 8 x 2 ms per batch take thousands of QPS; 500 are offered, under a 500 ms bound."""
    results = tmp_path_factory.mktemp("server")
    raw = synthetic("server", {"target_qps": 500, "latency_bound_ms": 500}, workers=2, latency_ms=2, bs=8)
    return results, run_job(validate(raw, "x"), results_dir=results)


def test_server_below_capacity_is_valid_at_the_offered_rate(below_capacity):
    _, result = below_capacity
    row = result.row
    assert row.scenario == "server" and row.loadgen_result == "VALID" and row.verdict == "VALID", row.verdict_reasons
    assert abs(row.achieved_qps - 500) <= 0.1 * 500
    assert row.target_qps == 500 and row.latency_bound == 0.5 and row.workers == 2
    assert row.items_infer >= 459 and row.p_infer_core > 0  # the batches the workers ran, merged as Offline's


def test_server_row_equals_loadgens_detail_log(below_capacity):
    results, result = below_capacity
    row, stored = result.row, stored_rows(results)[0]
    logged = mllog(result.run_dir)
    assert (row.loadgen_result, row.achieved_qps) == (logged["result_validity"], logged["result_completed_samples_per_sec"])
    latencies = (row.query_latency_p50, row.query_latency_p90, row.query_latency_p99)
    assert latencies == tuple(logged[f"result_{p}.00_percentile_latency_ns"] / 1e9 for p in (50, 90, 99))
    assert stored["achieved_qps"] == logged["result_completed_samples_per_sec"]
    assert (row.query_count, row.loadgen_errors, row.latency_percentile) == (logged["result_query_count"], 0, 99)
    assert row.overlatency_queries == logged["result_overlatency_query_count"] and row.overlatency_allowed == 5
    assert json.loads(row.loadgen_settings)["target_qps"] == 500 and logged["num_errors"] == 0
    queries = pq.read_table(result.run_dir / "queries.parquet").column("latency_s").to_pylist()
    (p99,) = percentiles(queries, (99,), method="loadgen")
    assert p99 == pytest.approx(row.query_latency_p99, abs=1e-9)
    assert 0 <= row.issue_delay_p99 < 0.05  # LoadGen's own issue delay, from its trace


def test_report_shows_loadgens_figures_and_the_query_latency_distribution(below_capacity):
    from orchestrator.views.html_report import report_run

    results, result = below_capacity
    md, _ = report_run(results, result.row.run_id)
    text = md.read_text()
    assert "## LoadGen (latencies in s per query)" in text and "## Per-query latency (LoadGen)" in text
    assert (md.parent / "report-queries.png").stat().st_size > 1000


def test_server_far_above_capacity_is_invalid_with_loadgens_reason(ray_local, tmp_path):
    """One worker at bs 1 and 20 ms per batch takes under 50 QPS; 300 are offered."""
    loadgen = {"target_qps": 300, "min_queries": 100, "min_duration_s": 0.3}
    row = run_job(validate(synthetic("server", loadgen, workers=1, latency_ms=20, bs=1), "x"), results_dir=tmp_path).row
    assert row.loadgen_result == "INVALID" and row.verdict == "INVALID"
    assert row.verdict_reasons.startswith("LoadGen INVALID: Reduce target QPS to improve latency")
    assert row.query_latency_p99 > 0.1 and row.achieved_qps < 100


@pytest.mark.parametrize("hand_over", ["direct", "actor_call"])
def test_single_stream_issues_the_next_query_when_the_last_is_done(ray_local, tmp_path, hand_over):
    result = run_job(validate(synthetic("single_stream", {"hand_over": hand_over}, workers=1, latency_ms=20, bs=4),
                              "x"), results_dir=tmp_path)
    row, logged = result.row, mllog(result.run_dir)
    assert row.loadgen_result == "VALID" and row.items_infer == row.measured_batches >= 64  # one sample per batch
    assert row.query_latency_p90 >= 0.020 and row.achieved_qps * row.query_latency_p50 <= 1.0
    assert json.loads(row.loadgen_settings)["hand_over"] == hand_over
    # MLPerf's SingleStream metric is the early-stopping estimate: the row's headline is the log's
    assert row.query_latency_es == logged["early_stopping_latency_ss"] / 1e9 >= row.query_latency_p90
    assert row.achieved_qps == logged["result_qps_with_loadgen_overhead"] and row.latency_percentile == 90


def test_a_worker_the_driver_cannot_reach_directly_leaves_the_run_on_actor_calls(ray_local, tmp_path, monkeypatch,
                                                                              caplog):
    """A node whose free ports the driver cannot reach (a firewall refusing the connection) costs the
    run its direct hand-over, not the run: one warning naming the worker, actor calls, and the row says so."""
    from orchestrator.targets import lane_client as lane

    def refused(address, timeout=None):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(lane, "create_connection", refused)  # the driver's one way out to a worker's port
    row = run_job(validate(synthetic("single_stream", {"min_queries": 64}, workers=2, latency_ms=5, bs=4), "x"),
                  results_dir=tmp_path).row
    hand_over = json.loads(row.loadgen_settings)["hand_over"]
    assert row.loadgen_result == "VALID" and hand_over.startswith("actor_call: no direct connection to worker 0 at ")
    assert hand_over.endswith("(ConnectionRefusedError: [Errno 111] Connection refused)")
    warned = [r.getMessage() for r in caplog.records if "load.hand_over" in r.getMessage()]
    assert len(warned) == 1 and "worker 0" in warned[0] and "Connection refused" in warned[0]


def kill_worker_during_run(results, after_s: float, killed: list[int]) -> threading.Thread:
    """SIGKILL worker 1's process `after_s` after LoadGen opened its logs (the test has begun)."""
    import ray

    def kill() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            if list(results.glob("runs/*/loadgen/mlperf_log_detail.txt")):
                time.sleep(after_s)
                name = next(n for n in ray.util.list_named_actors() if ":w1@" in n)
                pid = ray.get(ray.get_actor(name).pid.remote())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def test_a_killed_worker_loses_no_sample_and_completes_none_twice(ray_local, tmp_path, caplog):
    """Accuracy mode: LoadGen issues every sample once; worker 1 dies mid-run and is restarted by Ray.
    Its in-flight samples are re-issued; LoadGen's accuracy log and the row count each sample once.
    The restarted worker is rebuilt and warmed over a new lane before it takes samples again."""
    loadgen = {"target_qps": 150, "mode": "accuracy"}  # 900 samples: 6 s, time for Ray to restart worker 1
    killed: list[int] = []
    watcher = kill_worker_during_run(tmp_path, 0.5, killed)
    # 2 workers x bs 2 x 20 ms take 200 QPS at most: at 150 both are busy most of the time
    result = run_job(validate(synthetic("server", loadgen, workers=2, latency_ms=20, bs=2, size=900), "x"),
                     results_dir=tmp_path)
    watcher.join(timeout=5)
    assert killed, "the watcher never killed a worker"
    row = result.row
    logged = json.loads((result.run_dir / "loadgen" / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in logged) == list(range(900))
    assert row.examples == 900 and row.verdict == "VALID", row.verdict_reasons
    assert row.retries >= 1
    retries = pq.read_table(result.run_dir / "retries.parquet").to_pylist()
    assert all(r["worker_id"] == 1 and "died" in r["message"] for r in retries)
    assert json.loads(row.loadgen_settings)["hand_over"] == "direct"
    restarted = [r for r in result.results if r.worker_id == 1 and r.pid not in (0, killed[0])]
    assert restarted and not any("load.hand_over" in r.getMessage() for r in caplog.records)
    # warm before its first batch: no measured batch of the restarted worker warmed it, the row counts it
    assert all(r.warmup_batches == 0 for r in restarted) and row.warmup_batches == 7
    # 2 workers x (warmup 1 + the calibration's 2 batches) + the restarted worker's warm-up 1


def test_a_restarted_worker_without_a_new_lane_gets_actor_calls_and_the_row_names_it(ray_local, tmp_path,
                                                                                     monkeypatch, caplog):
    """A mixed run: both workers start on their lanes; worker 1 is killed, and once Ray has restarted
    it, its new lane cannot be opened (the driver's connections after the first two are refused):
    it alone takes its batches as actor calls, and the row's hand_over says so, with why."""
    from orchestrator.targets import lane_client as lane

    real, dialled = lane.create_connection, []

    def first_lanes_only(address, timeout=None):
        dialled.append(address)
        if len(dialled) > 2:
            raise ConnectionRefusedError(111, "Connection refused")
        return real(address, timeout=timeout)

    monkeypatch.setattr(lane, "create_connection", first_lanes_only)
    killed: list[int] = []
    watcher = kill_worker_during_run(tmp_path, 0.5, killed)
    loadgen = {"target_qps": 150, "min_duration_s": 6, "latency_bound_ms": 2000}  # 6 s: time for Ray's restart
    result = run_job(validate(synthetic("server", loadgen, workers=2, latency_ms=5, bs=4), "x"),
                     results_dir=tmp_path)
    watcher.join(timeout=5)
    assert killed, "the watcher never killed a worker"
    restarted = [r for r in result.results if r.worker_id == 1 and r.pid not in (0, killed[0])]
    assert restarted, "the restarted worker ran no batch"
    hand_over = json.loads(result.row.loadgen_settings)["hand_over"]
    assert hand_over == "direct; worker 1: actor_call after restart (ConnectionRefusedError: [Errno 111] " \
                        "Connection refused)", hand_over
    assert len(dialled) == 3  # worker 0 kept its lane: only worker 1 was dialled again
    warned = [r.getMessage() for r in caplog.records if "load.hand_over" in r.getMessage()]
    assert len(warned) == 1 and "restarted worker 1" in warned[0]


@pytest.mark.parametrize("how", ["crash at setup", "killed while loading"])
def test_a_worker_lost_at_setup_is_dropped_and_the_loadgen_run_finishes(ray_local, tmp_path, how):
    """The bring-up every mode shares: a worker whose setup crashed (an error as a value) or whose
    process was killed while it loaded (no restarts left) is dropped, the LoadGen test runs on the
    others, and the row says so (workers_lost, and the verdict names it) as an Offline row does."""
    raw = synthetic("server", {"target_qps": 200, "latency_bound_ms": 500}, workers=3, latency_ms=2, bs=4)
    killed: list = []
    if how == "crash at setup":
        raw["engine"]["fail_setup_workers"] = [1]
    else:
        from tests.orchestrator.modes.offline.test_reliability import kill_a_worker_while_it_loads

        raw["max_restarts"] = 0
        watcher = kill_a_worker_while_it_loads(killed, count=3)
    result = run_job(validate(raw, "x"), results_dir=tmp_path)
    row = result.row
    if how == "killed while loading":
        watcher.join(timeout=5)
        assert killed and ".setup" in killed[0][1], killed
    assert (row.workers, row.workers_lost, row.loadgen_result) == (2, 1, "VALID")
    assert row.verdict == "INVALID" and "1 worker(s) lost > max_workers_lost 0: worker " in row.verdict_reasons
    assert row.verdict_profile == "quick+loadgen-quick"
    expected = "setup failed: InjectedFailure" if how == "crash at setup" else "died while loading"
    assert expected in row.verdict_reasons, row.verdict_reasons
    assert len({r.worker_id for r in result.results}) == 2 and row.items_infer >= 459
    assert row.ray_start_time is None or row.ray_start_time >= 0
    assert {"data_ready", "workers_ready", "row_written"} <= set(result.timeline["steps"])
