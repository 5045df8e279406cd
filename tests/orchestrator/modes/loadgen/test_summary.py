"""LoadGen's logs read back, on logs LoadGen itself wrote (a null SUT in this process, under a second:
the `logs` fixture, conftest.py)."""

import pytest

from orchestrator.modes.loadgen.summary import LoadGenSummary, loadgen_percentile, parse_summary, query_latencies_ns


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
