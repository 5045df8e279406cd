"""The `scenario`/`loadgen:` fields: bad input in one line, and the LoadGen settings made from them."""

import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.loadgen.settings import LoadGenSpec, build_test_settings
from orchestrator.spec import dump_spec, load_spec_text, validate
from tests.builders import job

SERVER = {"target_qps": 50}
BAD = {
    "server without target_qps": (job(scenario="server"), "loadgen: target_qps is missing"),
    "latency bound 0": (job(scenario="server", loadgen={**SERVER, "latency_bound_ms": 0}),
                        "loadgen.latency_bound_ms: Input should be greater than 0"),
    "tensor-parallel worker": (job(scenario="server", loadgen=SERVER, parallel={"tp": 2}),
                               "loadgen: scenario server runs single-device workers; parallel.tp=2"),
    "engine profile without bs 1": (job(scenario="single_stream", engine={"name": "tensorrt", "min_bs": 4}),
                                    "engine.min_bs is 4 (set it to 1)"),
    "find_peak off server": (job(scenario="multi_stream", loadgen={"mode": "find_peak"}),
                             "loadgen: mode find_peak searches a server QPS"),
    "loadgen on offline": (job(loadgen=SERVER), "loadgen: only read with scenario server"),
    "unknown scenario": (job(scenario="serve"), "scenario: Input should be 'offline', 'server'"),
    "target_qps on a stream": (job(scenario="single_stream", loadgen=SERVER), "target_qps is for scenario server"),
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


def test_scenario_specs_survive_the_stored_job_yaml():
    for raw in (job(scenario="server", loadgen={**SERVER, "mode": "find_peak"}), job(scenario="multi_stream"), job()):
        spec = validate(raw, "x")
        assert load_spec_text(dump_spec(spec), "job.yaml") == spec
    assert validate(job(), "x").loadgen is None and validate(job(), "x").scenario == "offline"


def test_quick_rules_are_the_shortest_run_loadgen_calls_valid():
    server = build_test_settings("server", LoadGenSpec(target_qps=40, latency_bound_ms=25), 100)
    assert (server.min_duration_ms, server.min_query_count) == (1000, 459)
    assert server.server_target_qps == 40 and server.server_target_latency_ns == 25_000_000
    stream = build_test_settings("multi_stream", LoadGenSpec(samples_per_query=3, min_queries=10, qsl_rng_seed=7), 100)
    assert (stream.min_query_count, stream.multi_stream_samples_per_query, stream.qsl_rng_seed) == (10, 3, 7)
    assert build_test_settings("single_stream", LoadGenSpec(), 100, accuracy=True).mode.name == "AccuracyOnly"


def test_mlperf_rules_read_loadgens_own_mlperf_conf():
    bert = build_test_settings("server", LoadGenSpec(rules="mlperf", mlperf_model="bert", target_qps=300), 64)
    assert bert.min_duration_ms == 600_000 and bert.server_target_latency_ns == 130_000_000  # MLPerf BERT Server
    assert bert.qsl_rng_seed != 0 and bert.server_target_qps == 300
    assert bert.performance_sample_count_override == 64  # mlperf.conf's 10833, clamped to the data we have
    shared = build_test_settings("multi_stream", LoadGenSpec(rules="mlperf", min_duration_s=2), 64)
    assert shared.min_query_count == 662 and shared.min_duration_ms == 2000  # the job's field wins


def test_scenario_code_does_not_load_loadgen_until_a_scenario_runs():
    """`bench --help`, spec loading and Offline runs import the scenario modules' names only."""
    code = ("import sys, orchestrator.cli, orchestrator.spec, orchestrator.run.driver, orchestrator.loadgen.point, "
            "orchestrator.views.html_report; print('mlperf_loadgen' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
