"""LoadGen's logs read back (orchestrator/modes/loadgen/logs.py), on logs LoadGen itself wrote (a null
SUT in this process, under a second each: conftest.py), and early stopping against LoadGen's verdicts."""

import pytest

from orchestrator.metrics.stats import percentiles
from orchestrator.modes.loadgen.early_stopping import server_overlatency_allowed
from orchestrator.modes.loadgen.logs import parse_detail, query_latencies_ns
from tests.orchestrator.modes.loadgen.conftest import null_sut_logs


def detail_of(folder):
    return parse_detail((folder / "mlperf_log_detail.txt").read_text())


def test_the_detail_log_gives_loadgens_figures_verdict_and_settings(logs):
    detail = detail_of(logs["server"])
    assert (detail.scenario, detail.accuracy, detail.result) == ("Server", False, "INVALID")
    assert detail.get("result_perf_constraints_met") is False and detail.errors == ()
    assert 100 < detail.samples_per_s < 500 and detail.samples_per_s == detail.get("result_completed_samples_per_sec")
    assert detail.settings()["target_qps"] == 400 and detail.settings()["min_query_count"] == 120
    assert detail.target_percentile == 0.99 and detail.latency_ns(50) >= 2_000_000  # the SUT's 2 ms
    reason = detail.invalid_reason()
    assert reason.startswith("LoadGen INVALID: Reduce target QPS to improve latency"), reason
    assert "early stopping: * Run unsuccessful. * Processed 120 queries" in reason


@pytest.mark.parametrize("name, per_query", [("server", False), ("multi", True)])
def test_latencies_from_the_trace_give_loadgens_own_percentiles(logs, name, per_query):
    with open(logs[name] / "mlperf_log_trace.json") as lines:
        latencies = [latency for _, latency in query_latencies_ns(lines).values()]
    detail = detail_of(logs[name])
    expected = [detail.latency_ns(p, per_query) for p in (50, 90, 99)]
    assert percentiles(latencies, (50, 90, 99), method="loadgen") == expected


def test_multistream_queries_count_all_their_samples_and_its_metric_is_the_estimate(logs):
    with open(logs["multi"] / "mlperf_log_trace.json") as lines:
        queries = query_latencies_ns(lines)
    assert len(queries) >= 20 and {samples for samples, _ in queries.values()} == {4}
    detail = detail_of(logs["multi"])
    assert detail.early_stopping_ns is None  # 20 queries: too few for a p99 estimate (662)
    assert detail.result == "INVALID" and "early stopping" in detail.invalid_reason()


def test_an_error_loadgen_logs_is_counted_even_when_loadgen_says_valid(tmp_path):
    """A sample completed twice: LoadGen's run stays VALID, its log has the error (MLPerf rejects it)."""
    detail = detail_of(null_sut_logs(tmp_path / "twice", "SingleStream", latency_s=0.001, twice={3},
                                     min_query_count=64, min_duration_ms=0))
    assert detail.result == "VALID" and detail.get("num_errors") == 1
    assert detail.errors == ("error_runtime: Attempted to complete a sample twice.",)


@pytest.mark.parametrize("slow_queries, valid", [(1, True), (2, False)])
def test_early_stopping_tolerates_what_our_table_says_at_662_server_queries(tmp_path, slow_queries, valid):
    """662 queries tolerate one over the bound (early_stopping.py), and LoadGen agrees: one slow
    query is VALID, two are INVALID, though the raw p99 is under the bound both times."""
    assert server_overlatency_allowed(662) == 1
    # a 300 ms bound and 0.5 s slow queries: a busy machine's scheduling delays stay far below both
    detail = detail_of(null_sut_logs(tmp_path / "es", "Server", latency_s=0.0005, slow=set(range(slow_queries)),
                                     slow_s=0.5, server_target_qps=1000, server_target_latency_ns=300_000_000,
                                     min_query_count=662, min_duration_ms=0))
    assert detail.get("result_query_count") == 662
    assert detail.get("result_overlatency_query_count") == slow_queries
    assert (detail.result == "VALID") == valid and detail.get("early_stopping_met") == valid
