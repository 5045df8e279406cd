"""MLPerf's compliance tests (TEST01, TEST04) judged by their own criteria, an audit.config left in the
working directory ignored, and MLPerf Offline through LoadGen. The end-to-end runs use the
in-process worker (--no-ray) and smoke rules (459 queries) to stay short."""

import json

import pytest

from orchestrator.driver import run_job
from orchestrator.modes.loadgen.compliance import audit_config, test01 as judge_test01, test04 as judge_test04
from orchestrator.modes.loadgen.logs import DetailLog
from orchestrator.spec import validate
from orchestrator.spec.load import LoadGenLoad
from tests.orchestrator.modes.loadgen.test_runner import synthetic


def detail(scenario="Server", valid=True, samples_per_s=100.0, same=False, estimate_ns=None) -> DetailLog:
    values = {"effective_scenario": scenario, "result_validity": "VALID" if valid else "INVALID",
              "result_completed_samples_per_sec": samples_per_s, "effective_performance_issue_same": same}
    if estimate_ns is not None:
        values["early_stopping_latency_ss"] = estimate_ns
    return DetailLog(values)


def accuracy_log(path, entries: dict[int, bytes]):
    path.write_text(json.dumps([{"seq_id": n, "qsl_idx": idx, "data": data.hex()}
                                for n, (idx, data) in enumerate(entries.items())]))
    return path


def test_test01_fails_when_a_performance_response_differs_from_accuracy_modes(tmp_path):
    truth = accuracy_log(tmp_path / "acc.json", {0: b"\x01", 1: b"\x02", 2: b"\x03"})
    same = accuracy_log(tmp_path / "same.json", {1: b"\x02", 2: b"\x03"})
    other = accuracy_log(tmp_path / "other.json", {1: b"\x02", 2: b"\x07"})
    passed = judge_test01(detail(), detail(samples_per_s=105), truth, same)
    assert passed.passed and passed.result.startswith("PASS: 2 sampled responses equal")
    wrong = judge_test01(detail(), detail(), truth, other)
    assert not wrong.passed and "1 of 2 sampled responses differ" in wrong.why and "[2]" in wrong.why
    slower = judge_test01(detail(), detail(samples_per_s=80), truth, same)  # logging changed the figure
    assert not slower.passed and "beyond 10%" in slower.why
    none = judge_test01(detail(), detail(), truth, accuracy_log(tmp_path / "none.json", {}))
    assert not none.passed and none.why == "no sampled response to compare"


def test_test04_fails_when_the_same_sample_is_much_faster():
    assert judge_test04(detail(), detail(samples_per_s=109, same=True)).passed
    cached = judge_test04(detail(), detail(samples_per_s=111, same=True))
    assert not cached.passed and cached.result.startswith("FAIL: the same sample scored 111")
    assert not judge_test04(detail(), detail(samples_per_s=100, same=False)).passed  # LoadGen did not repeat
    # streams: 1 / the early-stopping estimate, 20 % allowed
    stream = detail("SingleStream", estimate_ns=1_000_000)
    assert judge_test04(stream, detail("SingleStream", estimate_ns=850_000, same=True)).passed
    assert not judge_test04(stream, detail("SingleStream", estimate_ns=800_000, same=True)).passed


def test_audit_configs_are_the_compliance_tests_own_keys():
    assert "*.*.mode = 2" in audit_config("TEST01") and "accuracy_log_sampling_target = 4096" in audit_config("TEST01")
    assert "*.Server.performance_issue_same = 1" in audit_config("TEST04")


def test_the_trace_is_off_by_default_under_mlperf_rules_and_on_when_asked():
    assert LoadGenLoad(kind="loadgen", scenario="server", target_qps=10).keeps_trace
    mlperf = LoadGenLoad(kind="loadgen", scenario="server", target_qps=10, rules="mlperf", mlperf_model="bert-99")
    assert not mlperf.keeps_trace
    assert LoadGenLoad(kind="loadgen", scenario="server", target_qps=10, rules="mlperf", mlperf_model="bert-99",
                       trace=True).keeps_trace


# a generous bound: these tests are about the compliance logic, not capacity (CI machines are busy)
SMOKE = {"rules": "smoke", "min_duration_s": 0.2, "target_qps": 200, "latency_bound_ms": 1000}


@pytest.mark.slow
def test_an_audit_config_in_the_working_directory_is_not_read(tmp_path, monkeypatch):
    """LoadGen's default reads ./audit.config: a TEST04 one left there would issue one sample over and
    over. raybench names a path inside the test's log folder, which exists only with `audit`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "audit.config").write_text(audit_config("TEST04"))
    result = run_job(validate(synthetic("server", SMOKE, latency_ms=0, bs=4), "x"), results_dir=tmp_path / "r",
                     in_process=True)
    settings = json.loads(result.row.loadgen_settings)
    assert settings["performance_issue_same"] is False and settings["performance_issue_unique"] is False
    assert result.row.loadgen_result == "VALID" and result.row.compliance_test is None
    assert not (result.run_dir / "loadgen" / "audit.config").exists()


@pytest.mark.slow
def test_test04_runs_the_same_sample_and_passes_on_an_engine_without_a_cache(tmp_path):
    # 200 QPS: the repeated sample (index 3) may be one of the longer ones; both runs must be VALID
    result = run_job(validate(synthetic("server", dict(SMOKE, audit="TEST04"), latency_ms=0, bs=4),
                              "x"),
                     results_dir=tmp_path, in_process=True)
    row, logs = result.row, result.run_dir / "loadgen"
    assert row.compliance_test == "TEST04" and row.compliance_result.startswith("PASS: the same sample scored")
    assert (logs / "TEST04" / "audit.config").exists() and not (logs / "performance" / "audit.config").exists()
    audited = (logs / "TEST04" / "mlperf_log_detail.txt").read_text()
    assert '"key": "effective_performance_issue_same", "value": true' in audited
    assert row.verdict == "VALID" and row.loadgen_result == "VALID"  # the headline is the reference run


@pytest.mark.slow
def test_test01_compares_sampled_performance_responses_with_accuracy_modes(tmp_path):
    result = run_job(validate(synthetic("server", dict(SMOKE, audit="TEST01"), latency_ms=0, bs=4), "x"),
                     results_dir=tmp_path, in_process=True)
    row, logs = result.row, result.run_dir / "loadgen"
    assert {d.name for d in logs.iterdir() if d.is_dir()} == {"performance", "accuracy", "TEST01"}
    sampled = json.loads((logs / "TEST01" / "mlperf_log_accuracy.json").read_text())
    assert sampled and any(e["data"] for e in sampled)  # performance mode answers (an example with no mask: empty)
    assert row.compliance_test == "TEST01"
    assert row.compliance_result.startswith("PASS: "), row.compliance_result
    assert f"{len(sampled)} sampled responses equal" in row.compliance_result


@pytest.mark.slow
def test_mlperf_offline_through_loadgen_is_one_query_of_every_sample(tmp_path):
    """scenario offline under kind loadgen: LoadGen's one query, sized from the warmed workers' rate
    (or expected_qps), next to raybench's sharded Offline (kind offline). expected_qps above what one
    worker at 2 ms per batch of 8 takes (4,000/s), so the query outlasts min_duration (else INVALID)."""
    result = run_job(validate(synthetic("offline", {"min_duration_s": 0.2, "expected_qps": 8000}, latency_ms=2,
                                        bs=8), "x"), results_dir=tmp_path, in_process=True)
    row = result.row
    text = (result.run_dir / "loadgen" / "mlperf_log_detail.txt").read_text()
    values = {}
    for line in text.splitlines():
        if line.startswith(":::MLLOG "):
            entry = json.loads(line[len(":::MLLOG "):])
            values.setdefault(entry["key"], entry["value"])
    assert values["effective_scenario"] == "Offline" and values["result_validity"] == "VALID"
    assert row.scenario == "offline" and row.load == "loadgen" and row.query_count == 1
    assert row.achieved_qps == values["result_samples_per_second"]
    assert row.items_infer == values["effective_samples_per_query"] >= 8000 * 0.2  # one query of them all
