"""LoadGen's logs read back, on logs LoadGen itself wrote (a null SUT in this process, under a second),
and the row's scenario columns and verdict made from them."""

import queue
import threading
import time

import pytest

from orchestrator.loadgen.columns import ScenarioFigures, scenario_columns
from orchestrator.loadgen.summary import LoadGenSummary, loadgen_percentile, parse_summary, query_latencies_ns


def null_sut_logs(folder, scenario: str, latency_s: float = 0.002, **settings):
    """Run LoadGen against a SUT that completes each query after `latency_s`, one at a time, on one
    thread that ends before the SUT is destroyed (LoadGen aborts the process when a thread that
    completed samples is still unwinding as the next test starts); returns the log folder."""
    import mlperf_loadgen as lg

    pending: queue.SimpleQueue = queue.SimpleQueue()

    def serve():
        while (samples := pending.get()) is not None:
            time.sleep(latency_s)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])

    server = threading.Thread(target=serve)
    server.start()

    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, scenario)
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = 300
    for key, value in settings.items():
        setattr(ts, key, value)
    log = lg.LogSettings()
    log.log_output.outdir = str(folder)
    log.log_output.copy_summary_to_stdout = False
    folder.mkdir(parents=True)
    sut, qsl = lg.ConstructSUT(pending.put, lambda: None), lg.ConstructQSL(16, 16, lambda x: None, lambda x: None)
    lg.StartTestWithLogSettings(sut, qsl, ts, log)
    pending.put(None)
    server.join()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    return folder


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("loadgen")
    return {
        "server": null_sut_logs(root / "server", "Server", server_target_qps=400, min_query_count=120,
                                server_target_latency_ns=1_000_000),  # a 1 ms bound a 2 ms SUT cannot meet
        "multi": null_sut_logs(root / "multi", "MultiStream", multi_stream_samples_per_query=4, min_query_count=20),
    }


def percentiles_from_trace(folder) -> dict[float, int]:
    with open(folder / "mlperf_log_trace.json") as lines:
        latencies = sorted(latency for _, latency in query_latencies_ns(lines).values())
    return {p: loadgen_percentile(latencies, p) for p in (50.0, 90.0, 99.0)}


def test_server_summary_fields_and_loadgens_own_reasons(logs):
    summary = parse_summary((logs["server"] / "mlperf_log_summary.txt").read_text())
    assert (summary.scenario, summary.mode, summary.result) == ("Server", "PerformanceOnly", "INVALID")
    assert summary.constraints["Performance constraints satisfied"] == "NO"
    assert 100 < summary.completed_samples_per_s < 500
    assert summary.parameters["target_qps"] == "400" and summary.parameters["min_query_count"] == "120"
    assert summary.latency_ns[50.0] >= 2_000_000  # the SUT's 2 ms
    reason = summary.invalid_reason()
    assert reason.startswith("LoadGen INVALID: not satisfied: Performance constraints")
    assert "Reduce target QPS to improve latency" in reason


@pytest.mark.parametrize("name", ["server", "multi"])
def test_per_query_latencies_from_the_trace_give_loadgens_percentiles(logs, name):
    summary = parse_summary((logs[name] / "mlperf_log_summary.txt").read_text())
    assert percentiles_from_trace(logs[name]) == {p: summary.latency_ns[p] for p in (50.0, 90.0, 99.0)}


def test_multistream_queries_count_all_their_samples(logs):
    with open(logs["multi"] / "mlperf_log_trace.json") as lines:
        queries = query_latencies_ns(lines)
    assert len(queries) >= 20 and {samples for samples, _ in queries.values()} == {4}


def figures(summary: LoadGenSummary, scenario: str = "server", **fields) -> ScenarioFigures:
    base = dict(scenario=scenario, mode="performance", rules="quick", summary=summary, target_qps=None,
                latency_bound_s=None, examples=10, scored_examples=10)
    return ScenarioFigures(**{**base, **fields})


def test_columns_are_loadgens_figures_in_seconds(logs):
    summary = parse_summary((logs["server"] / "mlperf_log_summary.txt").read_text())
    columns = scenario_columns(figures(summary, target_qps=400.0, latency_bound_s=0.001))
    assert columns["achieved_qps"] == summary.completed_samples_per_s
    assert columns["query_latency_p99"] == summary.latency_ns[99.0] / 1e9
    assert (columns["verdict"], columns["loadgen_result"]) == ("INVALID", "INVALID")
    assert columns["verdict_reasons"] == summary.invalid_reason()


def test_stream_bounds_and_accuracy_counts_decide_the_verdict_too():
    valid = LoadGenSummary("SingleStream", "PerformanceOnly", "VALID", latency_ns={90.0: 25_000_000})
    assert scenario_columns(figures(valid, "single_stream", latency_bound_s=0.03))["verdict"] == "VALID"
    late = scenario_columns(figures(valid, "single_stream", latency_bound_s=0.02))
    assert late["verdict"] == "INVALID" and late["verdict_reasons"] == "p90 query latency 25 ms > latency_bound_ms 20"
    accuracy = LoadGenSummary("Server", "AccuracyOnly", None)
    assert scenario_columns(figures(accuracy, mode="accuracy"))["verdict"] == "VALID"
    short = scenario_columns(figures(accuracy, mode="accuracy", scored_examples=9))
    assert short["verdict_reasons"] == "accuracy run scored 9 of 10 samples"
