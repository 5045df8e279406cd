"""The job's `load: {kind: loadgen, ...}` (and its older spelling, `scenario:` + `loadgen:`): bad input in one
line, and the LoadGen settings made from it."""

import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.spec.load import LoadGenLoad
from orchestrator.modes.loadgen.settings import MAX_GENERATED_QUERIES, Calibration, build_test_settings
from orchestrator.spec import dump_spec, load_spec_text, validate
from tests.builders import job

SERVER = {"target_qps": 50}


def loadgen(scenario: str, **fields) -> dict:
    return {"kind": "loadgen", "scenario": scenario, **fields}


BAD = {
    "server without target_qps": (job(load=loadgen("server")), "load: target_qps is missing"),
    "latency bound 0": (job(load=loadgen("server", **SERVER, latency_bound_ms=0)),
                        "load.latency_bound_ms: Input should be greater than 0"),
    "tensor-parallel worker": (job(load=loadgen("server", **SERVER), parallel={"tp": 2}),
                               "load: scenario server runs single-device workers; parallel.tp=2"),
    "engine profile without bs 1": (job(load=loadgen("single_stream"), engine={"name": "tensorrt", "min_bs": 4}),
                                    "engine.min_bs is 4 (set it to 1)"),
    "find_peak off server": (job(load=loadgen("multi_stream", mode="find_peak")),
                             "load: mode find_peak searches a server QPS"),
    "loadgen fields on offline": (job(load={"kind": "offline", **SERVER}), "load.target_qps: unknown field"),
    "unknown scenario": (job(load=loadgen("serve")), "load.scenario: Input should be 'server'"),
    "unknown load": (job(load={"kind": "sharded"}), "load: Input tag 'sharded' found using 'kind' does not match"),
    "target_qps on a stream": (job(load=loadgen("single_stream", **SERVER)), "target_qps is for scenario server"),
    "repeats under loadgen": (job(load=loadgen("single_stream"), repeats=2), "repeats=2 is for offline runs"),
    "unknown mlperf model": (job(load=loadgen("server", **SERVER, rules="mlperf", mlperf_model="bert-99")),
                             "load: mlperf_model: 'bert-99' is not in LoadGen's mlperf.conf (MLPerf's own names: bert, "
                             "not bert-99); one of: 3d-unet, bert,"),
    "mlperf rules without a model": (job(load=loadgen("server", **SERVER, rules="mlperf")),
                                     "load: rules mlperf reads mlperf.conf for mlperf_model; name one of: 3d-unet"),
    "an LLM model on a task that does not generate": (
        job(load=loadgen("server", **SERVER, rules="mlperf", mlperf_model="llama2-70b")),
        "load: mlperf_model llama2-70b is an LLM of mlperf.conf (its rules are TTFT and TPOT); task masked_lm makes "
        "no tokens: use task generate"),
    "an audit that does not exist": (job(load=loadgen("server", **SERVER, audit="TEST99")),
                                     "load: audit: 'TEST99' is neither TEST01, TEST04 nor an audit.config file"),
    "an audit beside an accuracy run": (job(load=loadgen("server", **SERVER, audit="TEST04", mode="accuracy")),
                                        "load: audit: a compliance test runs beside a performance run"),
    "a batch wait in a stream": (job(load=loadgen("single_stream", max_batch_wait_ms=5)),
                                 "load: max_batch_wait_ms: scenario single_stream issues the next query only when"),
    "issue threads from Python": (job(load=loadgen("server", **SERVER, server_num_issue_query_threads=2)),
                                  "load: server_num_issue_query_threads: LoadGen's Python bindings cannot register"),
    "old spelling on an offline load": (job(load={"kind": "offline"}, loadgen=SERVER),
                                        "loadgen: is only read with scenario server"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scenario_input_is_one_line_exit_2_and_nothing_stored(tmp_path, case):
    raw, expected = BAD[case]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    outcome = CliRunner().invoke(app, ["submit", str(path), "--results", str(results), "--no-ray"])
    assert outcome.exit_code == 2, outcome.output
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], outcome.stderr
    assert not results.exists() or not any(p.is_file() for p in results.rglob("*"))


def test_load_specs_survive_the_stored_job_yaml():
    for raw in (job(load=loadgen("server", **SERVER, mode="find_peak")), job(load=loadgen("multi_stream")), job()):
        spec = validate(raw, "x")
        assert load_spec_text(dump_spec(spec), "job.yaml") == spec
    assert validate(job(), "x").load.kind == "offline"


def test_the_older_spelling_still_runs_as_the_same_load_and_says_so_in_one_line(caplog):
    """Jobs written before `load:` (`scenario:` + `loadgen:`) validate to the same spec, with one warning."""
    old = validate(job(scenario="server", loadgen={**SERVER, "latency_bound_ms": 20}), "x")
    assert old == validate(job(load=loadgen("server", **SERVER, latency_bound_ms=20)), "x")
    assert [r.getMessage() for r in caplog.records] == [
        "scenario:/loadgen: are now load: {kind: loadgen, scenario: server, ...}; this job runs as written"]
    assert validate(job(scenario="offline"), "x") == validate(job(), "x")
    with pytest.raises(Exception, match="loadgen: is only read with scenario server"):
        validate(job(loadgen=SERVER), "x")
    # beside a load: (an old --set on a new job file) they apply on top of it
    on_top = validate(job(load=loadgen("server", **SERVER), loadgen={"mode": "find_peak"}), "x").load
    assert (on_top.scenario, on_top.target_qps, on_top.mode) == ("server", 50, "find_peak")
    switched = validate(job(load=loadgen("server", **SERVER), scenario="single_stream",
                            loadgen={"target_qps": None}), "x").load
    assert (switched.scenario, switched.target_qps) == ("single_stream", None)


def test_quick_rules_give_early_stopping_room_for_a_tail_and_smoke_rules_are_the_fewest_queries():
    server = build_test_settings(LoadGenLoad(scenario="server", target_qps=40, latency_bound_ms=25), 100)
    assert (server.settings.min_duration_ms, server.settings.min_query_count) == (1000, 1307)  # 5 may be late
    assert server.settings.server_target_qps == 40 and server.settings.server_target_latency_ns == 25_000_000
    assert server.deviations == [] and server.settings.server_max_async_queries == 0
    smoke = build_test_settings(LoadGenLoad(scenario="server", target_qps=40, rules="smoke"), 100)
    assert smoke.settings.min_query_count == 459
    stream = build_test_settings(LoadGenLoad(scenario="multi_stream", samples_per_query=3, min_queries=10,
                                             qsl_rng_seed=7), 100).settings
    assert (stream.min_query_count, stream.multi_stream_samples_per_query, stream.qsl_rng_seed) == (10, 3, 7)
    accuracy = build_test_settings(LoadGenLoad(scenario="single_stream"), 100, accuracy=True).settings
    assert accuracy.mode.name == "AccuracyOnly"


def test_stream_expectations_come_from_the_warmed_workers_and_never_pre_generate_millions():
    measured = Calibration(query_s=0.02, batch_s=0.1, bs=8, workers=2)
    quick = build_test_settings(LoadGenLoad(scenario="single_stream"), 100, calibration=measured).settings
    assert quick.single_stream_expected_latency_ns == 0.01 * 1e9  # half the measured query
    long = build_test_settings(LoadGenLoad(scenario="single_stream", min_duration_s=600), 100,
                               calibration=Calibration(1e-5, 1e-4, 8, 1)).settings
    assert round(2 * 600 / (long.single_stream_expected_latency_ns / 1e9)) <= MAX_GENERATED_QUERIES
    offline = build_test_settings(LoadGenLoad(scenario="offline"), 100, calibration=measured).settings
    assert offline.offline_expected_qps == 2 * 8 / 0.1  # the workers' measured samples per second


def test_find_peak_probes_stop_issuing_once_far_more_is_outstanding_than_the_bound_allows():
    probe = build_test_settings(LoadGenLoad(scenario="server", target_qps=1000, latency_bound_ms=100,
                                            mode="find_peak"), 100, target_qps=2000).settings
    assert probe.server_max_async_queries == 2000  # 10 x 2000 QPS x 0.1 s
    given = build_test_settings(LoadGenLoad(scenario="server", target_qps=10, server_max_async_queries=7,
                                            server_coalesce_queries=True), 100).settings
    assert (given.server_max_async_queries, given.server_coalesce_queries) == (7, True)


def test_mlperf_rules_read_loadgens_own_mlperf_conf_and_name_every_deviation():
    bert = build_test_settings(LoadGenLoad(scenario="server", rules="mlperf", mlperf_model="bert", target_qps=300), 64)
    settings = bert.settings
    assert settings.min_duration_ms == 600_000 and settings.server_target_latency_ns == 130_000_000  # BERT Server
    assert settings.qsl_rng_seed != 0 and settings.server_target_qps == 300
    assert settings.performance_sample_count_override == 64  # mlperf.conf's 10833, clamped to the data we have
    assert bert.deviations == ["performance_sample_count 64 (mlperf.conf: 10833; the dataset has 64 examples)"]
    changed = build_test_settings(LoadGenLoad(scenario="multi_stream", rules="mlperf", mlperf_model="resnet50",
                                              min_duration_s=2, qsl_rng_seed=1), 2000)
    assert changed.settings.min_query_count == 662 and changed.settings.min_duration_ms == 2000
    assert changed.deviations == ["min_duration 2s (mlperf.conf: 600s)",
                                  f"qsl_rng_seed 1 (mlperf.conf: {bert.settings.qsl_rng_seed})"]
    exact = build_test_settings(LoadGenLoad(scenario="server", rules="mlperf", mlperf_model="bert", target_qps=300),
                                20000)
    assert exact.deviations == []


def test_a_user_conf_sets_a_submitters_own_keys_and_a_fixed_one_is_a_deviation(tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("bert.Server.target_qps = 123\n*.Server.min_duration = 60000\n")
    built = build_test_settings(LoadGenLoad(scenario="server", rules="mlperf", mlperf_model="bert",
                                            target_qps=123, user_conf=str(conf)), 20000)
    assert built.settings.server_target_qps == 123 and built.settings.min_duration_ms == 60000
    assert built.deviations == ["min_duration 60s (mlperf.conf: 600s)"]


def test_scenario_code_does_not_load_loadgen_until_a_scenario_runs():
    """`bench --help`, spec loading and Offline runs import the scenario modules' names only."""
    code = ("import sys, orchestrator.cli, orchestrator.spec, orchestrator.driver, orchestrator.modes.loadgen.point, "
            "orchestrator.views.html_report; print('mlperf_loadgen' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
