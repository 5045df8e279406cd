"""The job's `load: {kind: loadgen, ...}` (and its older spelling, `scenario:` + `loadgen:`): bad input in one
line, and the LoadGen settings made from it."""

import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.spec.load import LoadGenLoad
from orchestrator.modes.loadgen.settings import build_test_settings
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


def test_quick_rules_are_the_shortest_run_loadgen_calls_valid():
    server = build_test_settings("server", LoadGenLoad(scenario="server", target_qps=40, latency_bound_ms=25), 100)
    assert (server.min_duration_ms, server.min_query_count) == (1000, 459)
    assert server.server_target_qps == 40 and server.server_target_latency_ns == 25_000_000
    stream = build_test_settings("multi_stream", LoadGenLoad(scenario="multi_stream", samples_per_query=3,
                                                             min_queries=10, qsl_rng_seed=7), 100)
    assert (stream.min_query_count, stream.multi_stream_samples_per_query, stream.qsl_rng_seed) == (10, 3, 7)
    accuracy = build_test_settings("single_stream", LoadGenLoad(scenario="single_stream"), 100, accuracy=True)
    assert accuracy.mode.name == "AccuracyOnly"


def test_mlperf_rules_read_loadgens_own_mlperf_conf():
    bert = build_test_settings("server", LoadGenLoad(scenario="server", rules="mlperf", mlperf_model="bert",
                                                     target_qps=300), 64)
    assert bert.min_duration_ms == 600_000 and bert.server_target_latency_ns == 130_000_000  # MLPerf BERT Server
    assert bert.qsl_rng_seed != 0 and bert.server_target_qps == 300
    assert bert.performance_sample_count_override == 64  # mlperf.conf's 10833, clamped to the data we have
    shared = build_test_settings("multi_stream", LoadGenLoad(scenario="multi_stream", rules="mlperf",
                                                             min_duration_s=2), 64)
    assert shared.min_query_count == 662 and shared.min_duration_ms == 2000  # the job's field wins


def test_scenario_code_does_not_load_loadgen_until_a_scenario_runs():
    """`bench --help`, spec loading and Offline runs import the scenario modules' names only."""
    code = ("import sys, orchestrator.cli, orchestrator.spec, orchestrator.driver, orchestrator.modes.loadgen.point, "
            "orchestrator.views.html_report; print('mlperf_loadgen' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
