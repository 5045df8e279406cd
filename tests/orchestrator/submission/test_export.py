"""`bench export mlperf`: a LoadGen run with TEST01 laid out as a submission tree, checked by the
submission checker's rules; the problems a quick run has are named, and a tree with them fixed passes."""

import hashlib
import json
import re

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.driver import run_job
from orchestrator.metrics.store import ResultsStore
from orchestrator.spec import mlperf_conf, validate
from orchestrator.submission import rules
from orchestrator.submission.check import check_tree
from orchestrator.submission.tree import Identity, _devices, export_runs
from orchestrator.views.query import find_row
from tests.orchestrator.modes.loadgen.test_runner import synthetic


def test_the_checkers_names_map_to_mlperf_conf_and_back():
    assert rules.conf_model_of("bert-99.9") == rules.conf_model_of("bert-99") == "bert"
    assert rules.conf_model_of("resnet") == "resnet50" and rules.conf_model_of("retinanet") == "retinanet"
    assert rules.benchmark_of("bert") == "bert-99" and rules.benchmark_of("llama3_1-8b") == "llama3.1-8b"
    assert set(rules.CONF_OF.values()) <= set(mlperf_conf.models())  # every mapped name is LoadGen's
    assert _devices("8x NVIDIA H100 80GB HBM3") == (8, "NVIDIA H100 80GB HBM3") and _devices("cpu") == (0, "")


def set_mllog(path, **values) -> None:
    """Rewrite the first entry of each key in a detail log (a stand-in for a 600 s run's logs)."""
    lines = path.read_text().splitlines()
    for key, value in values.items():
        for n, line in enumerate(lines):
            if f'"key": "{key}"' in line:
                lines[n] = re.sub(r'"value": [^,]+,', f'"value": {json.dumps(value)},', line, count=1)
                break
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    load = {"rules": "smoke", "min_duration_s": 0.2, "target_qps": 200, "latency_bound_ms": 1000, "audit": "TEST01"}
    row = run_job(validate(synthetic("server", load, latency_ms=0, bs=4, size=300), "x"), results_dir=results,
                  in_process=True).row
    return results, row


@pytest.mark.slow
def test_an_audited_run_exports_as_a_tree_the_checkers_rules_accept_once_its_settings_are_mlperfs(audited_run,
                                                                                                    tmp_path):
    results, row = audited_run
    store = ResultsStore(results)
    system, problems = export_runs(store, [find_row(store, row.run_id)], tmp_path, Identity(benchmark="bert-99"))
    scenario = system / "bert-99" / "Server"
    for name in ("performance/run_1/mlperf_log_summary.txt", "performance/run_1/mlperf_log_detail.txt",
                 "accuracy/mlperf_log_detail.txt", "accuracy/accuracy.txt", "accuracy/mlperf_log_accuracy.json",
                 "TEST01/verify_performance.txt", "TEST01/verify_accuracy.txt",
                 "TEST01/performance/run_1/mlperf_log_detail.txt", "user.conf", "README.md", "measurements.json"):
        assert (scenario / name).stat().st_size > 0, name
    assert "bert.Server.target_qps = 200" in (scenario / "user.conf").read_text()
    full = (results / "runs" / row.run_id / "loadgen" / "accuracy" / "mlperf_log_accuracy.json").read_bytes()
    assert len(full) > rules.MAX_ACCURACY_LOG_SIZE  # 300 samples: the log must be truncated
    kept = (scenario / "accuracy" / "mlperf_log_accuracy.json").read_bytes()
    assert len(kept) <= rules.MAX_ACCURACY_LOG_SIZE and kept.startswith(full[:4096]) and kept.endswith(full[-4096:])
    accuracy = (scenario / "accuracy" / "accuracy.txt").read_text()
    assert f"hash={hashlib.sha256(full).hexdigest()}" in accuracy
    # raybench's accuracy script over the full log: every one of the 300 examples answered once
    assert re.match(r"accuracy=\d\.\d{6} \(raybench task masked_lm: \d+ of \d+ correct; 300 examples answered, "
                    r"0 missing\)", accuracy), accuracy
    assert "TEST PASS" in (scenario / "TEST01" / "verify_performance.txt").read_text()

    # a quick run is no submission: the checker's rules name why, file by file
    text = "\n".join(problems)
    for detail in ("performance/run_1", "TEST01/performance/run_1"):
        assert f"{detail}/mlperf_log_detail.txt: min_duration 200 ms, MLPerf's is 600000 ms" in text
        assert f"{detail}/mlperf_log_detail.txt: qsl_rng_seed 0, mlperf.conf's is " in text
        assert f"{detail}/mlperf_log_detail.txt: performance sample count 300, bert-99 needs 10833" in text
    assert "empty, the checker wants an answer: system_type, status, host_processor_model_name" in text
    assert "accuracy/mlperf_log_detail.txt: the accuracy run covers 300 samples, bert-99's dataset has 10833" in text
    assert not [p for p in problems if "missing" in p]

    # the same tree with a 600 s run's settings and the submitter's system fields passes (MLPerf's own
    # checker, tools/submission/submission_checker at v6.1, said "submission looks OK" on such a tree
    # in the open division: docs/scenarios.md)
    seeds = {f"effective_{s}": int(mlperf_conf.value("bert", "Server", s))
             for s in ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed")}
    for detail in (scenario / "performance" / "run_1", scenario / "TEST01" / "performance" / "run_1"):
        set_mllog(detail / "mlperf_log_detail.txt", effective_min_duration_ms=600000,
                  effective_performance_sample_count=10833, result_validity="VALID",
                  early_stopping_met=True, **seeds)  # VALID, whatever this busy machine's latencies were
    set_mllog(scenario / "accuracy" / "mlperf_log_detail.txt", effective_accuracy_sample_count=10833)
    system_json = next((tmp_path / "open" / "raybench" / "systems").glob("*.json"))
    fields = json.loads(system_json.read_text())
    fields.update({name: "given" for name in rules.SYSTEM_MEANINGFUL if not str(fields[name]).strip()})
    fields.update(status="available", system_type="datacenter")
    system_json.write_text(json.dumps(fields))
    assert check_tree(tmp_path) == []
    # and each rule can fail: a missing log, an error LoadGen logged, a failed compliance test
    (scenario / "accuracy" / "mlperf_log_summary.txt").unlink()
    with open(scenario / "performance" / "run_1" / "mlperf_log_detail.txt", "a") as log:
        log.write(':::MLLOG {"key": "error_runtime", "value": "Attempted to complete a sample twice.", '
                  '"metadata": {"is_error": true}}\n')
    (scenario / "TEST01" / "verify_performance.txt").write_text("TEST FAIL\n")
    assert sorted(p.split(": ", 1)[1] for p in check_tree(tmp_path)) == [
        "1 LoadGen error(s): error_runtime: Attempted to complete a sample twice.", "missing or empty", "no TEST PASS"]


@pytest.mark.slow
def test_bench_export_prints_each_problem_and_exits_1(audited_run, tmp_path):
    results, row = audited_run
    out = CliRunner().invoke(app, ["export", "mlperf", row.run_id[-6:], str(tmp_path / "tree"), "--results",
                                   str(results), "--benchmark", "bert-99"])
    assert out.exit_code == 1, out.output
    assert out.output.startswith("submission tree: ") and "problem(s) by the submission checker's rules" in out.output
    alone = CliRunner().invoke(app, ["export", "mlperf", str(tmp_path / "tree2"), "--results", str(results)])
    assert alone.exit_code == 2 and "give one or more run ids and then the output folder" in alone.output
