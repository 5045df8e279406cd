"""LoadGen's figures -> the row's LoadGen columns and LoadGen's rule set (orchestrator/modes/loadgen/columns.py)."""

from orchestrator.metrics.verdict import RuleSet
from orchestrator.modes.loadgen.columns import ScenarioFigures, loadgen_rules, scenario_columns
from orchestrator.modes.loadgen.summary import LoadGenSummary, parse_summary


def figures(summary: LoadGenSummary, scenario: str = "server", **fields) -> ScenarioFigures:
    base = dict(scenario=scenario, mode="performance", rules="quick", summary=summary, target_qps=None,
                latency_bound_s=None, examples=10, scored_examples=10)
    return ScenarioFigures(**{**base, **fields})


def test_columns_are_loadgens_figures_in_seconds(logs):
    summary = parse_summary((logs["server"] / "mlperf_log_summary.txt").read_text())
    columns = scenario_columns(figures(summary, target_qps=400.0, latency_bound_s=0.001))
    assert columns["achieved_qps"] == summary.completed_samples_per_s
    assert columns["query_latency_p99"] == summary.latency_ns[99.0] / 1e9
    assert columns["loadgen_result"] == "INVALID" and "verdict" not in columns  # one verdict per row: the merge's
    assert loadgen_rules(figures(summary)).reasons == (summary.invalid_reason(),)


def test_stream_bounds_and_accuracy_counts_decide_loadgens_rule_set_too():
    valid = LoadGenSummary("SingleStream", "PerformanceOnly", "VALID", latency_ns={90.0: 25_000_000})
    assert loadgen_rules(figures(valid, "single_stream", latency_bound_s=0.03)) == RuleSet("loadgen-quick")
    late = loadgen_rules(figures(valid, "single_stream", latency_bound_s=0.02))
    assert late.reasons == ("p90 query latency 25 ms > latency_bound_ms 20",)
    accuracy = LoadGenSummary("Server", "AccuracyOnly", None)
    assert loadgen_rules(figures(accuracy, mode="accuracy")).reasons == ()
    short = loadgen_rules(figures(accuracy, mode="accuracy", scored_examples=9, rules="mlperf"))
    assert short == RuleSet("loadgen-mlperf", ("accuracy run scored 9 of 10 samples",))
