"""LoadGen's figures -> the row's LoadGen columns and LoadGen's rule set (orchestrator/modes/loadgen/columns.py):
every figure the detail log's, and every way LoadGen, MLPerf's rules or the job reject a run."""

from orchestrator.metrics.verdict import RuleSet
from orchestrator.modes.loadgen.columns import ScenarioFigures, loadgen_rules, scenario_columns
from orchestrator.modes.loadgen.logs import DetailLog, parse_detail


def figures(detail: DetailLog, scenario: str = "server", **fields) -> ScenarioFigures:
    base = dict(scenario=scenario, mode="performance", rules="quick", detail=detail, target_qps=None,
                latency_bound_s=None, examples=10, scored_examples=10)
    return ScenarioFigures(**{**base, **fields})


def stream(estimate_ns: int, p90_ns: int, result: str = "VALID", errors: tuple = ()) -> DetailLog:
    return DetailLog({"effective_scenario": "Single Stream", "result_validity": result,
                      "effective_target_latency_percentile": 0.9, "early_stopping_latency_ss": estimate_ns,
                      "result_90.00_percentile_latency_ns": p90_ns, "result_query_count": 100}, errors)


def test_columns_are_the_detail_logs_figures_in_seconds(logs):
    detail = parse_detail((logs["server"] / "mlperf_log_detail.txt").read_text())
    columns = scenario_columns(figures(detail, target_qps=400.0, latency_bound_s=0.001))
    assert columns["achieved_qps"] == detail.get("result_completed_samples_per_sec")
    assert columns["query_latency_p99"] == detail.get("result_99.00_percentile_latency_ns") / 1e9
    assert (columns["loadgen_result"], columns["loadgen_errors"], columns["latency_percentile"]) == ("INVALID", 0, 99)
    assert columns["query_count"] == 120 and columns["overlatency_allowed"] == -1  # under 459: none allowed
    assert columns["overlatency_queries"] == detail.get("result_overlatency_query_count")
    assert "verdict" not in columns  # one verdict per row: the merge's
    assert loadgen_rules(figures(detail)).reasons == (detail.invalid_reason(),)


def test_a_streams_headline_and_bound_are_its_early_stopping_estimate_not_the_raw_percentile():
    """p90 20 ms is under a 25 ms bound, but MLPerf's metric (the estimate, here the maximum) is not."""
    detail = stream(estimate_ns=35_000_000, p90_ns=20_000_000)
    columns = scenario_columns(figures(detail, "single_stream", latency_bound_s=0.025))
    assert columns["query_latency_es"] == 0.035 and columns["query_latency_p90"] == 0.020
    late = loadgen_rules(figures(detail, "single_stream", latency_bound_s=0.025))
    assert late.reasons == ("p90 early-stopping estimate 35 ms > latency_bound_ms 25",)
    assert loadgen_rules(figures(detail, "single_stream", latency_bound_s=0.04)) == RuleSet("loadgen-quick")


def test_an_error_makes_the_row_invalid_even_when_loadgen_says_valid():
    detail = stream(1_000_000, 1_000_000, errors=("error_runtime: Attempted to complete a sample twice.",))
    (reason,) = loadgen_rules(figures(detail, "single_stream")).reasons
    assert reason == "LoadGen logged 1 error(s) (MLPerf accepts none): error_runtime: Attempted to complete a sample twice."


def test_accuracy_counts_deviations_and_a_lagging_driver_each_make_a_reason():
    accuracy = DetailLog({"effective_scenario": "Server", "effective_test_mode": "AccuracyOnly"})
    assert loadgen_rules(figures(accuracy, mode="accuracy")).reasons == ()
    short = loadgen_rules(figures(accuracy, mode="accuracy", scored_examples=9, rules="mlperf"))
    assert short == RuleSet("loadgen-mlperf", ("accuracy run scored 9 of 10 samples",))
    valid = DetailLog({"effective_scenario": "Server", "result_validity": "VALID"})
    changed = loadgen_rules(figures(valid, rules="mlperf", deviations=("min_duration 1s (mlperf.conf: 600s)",)))
    assert changed.reasons == ("not MLPerf-compliant: min_duration 1s (mlperf.conf: 600s)",)
    late = figures(valid, latency_bound_s=0.1, issue_delays_ns=tuple([1_000_000] * 98 + [20_000_000] * 2))
    assert late.issue_delay_p99_s == 0.02
    assert loadgen_rules(late).reasons == ("the driver, not the system, was saturated: LoadGen's issue delay p99 20 ms "
                                           "> 10% of the 100 ms bound",)
    assert loadgen_rules(figures(valid, latency_bound_s=0.1, issue_delays_ns=(1_000_000,) * 100)).reasons == ()
    # an accuracy run's timings are no figure: a lagging driver there is no reason
    lagging = figures(accuracy, mode="accuracy", latency_bound_s=0.1, issue_delays_ns=(20_000_000,) * 100)
    assert loadgen_rules(lagging).reasons == ()
