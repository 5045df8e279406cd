"""LoadGen driving a running server (an endpoint job with `load: {kind: loadgen}`) against the mock of
known behaviour (tests/fakes/openai_server.py): SingleStream's TTFT and TPOT are the mock's, as
LoadGen's own detail log says them, and the row carries them; a Server below the mock's capacity is
VALID and far above it INVALID for LoadGen's reason, the queue showing in TTFT and not in TPOT; a
request that fails is counted and makes the row INVALID; bad input is one line, exit 2, nothing stored.
Clients run in this process (as `--no-ray`); tests/orchestrator/modes/endpoint/test_endpoint_cluster.py
runs them as actors on two nodes, against the mock and a real `transformers serve`.

Timing on this shared 2-core machine: other processes preempt the mock and the driver for tens of
ms now and then, so p99s are asked only where the run's story is hundreds of ms; medians within a
few ms of the mock's truth."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.fakes.openai_server import serve
from tests.orchestrator.modes.endpoint.helpers import requests_table
from tests.orchestrator.modes.endpoint.test_bad_inputs import closed_port, refused, submit

TTFT_MS, ITL_MS, TOKENS = 20.0, 4.0, 16


def loadgen_job(url: str, load: dict, **fields) -> dict:
    prompts = {"max_tokens": TOKENS, "input_tokens": 16, **fields.pop("prompts", {})}
    return {"name": "lg", "endpoint": {"url": url, "model": "mock-model", **fields.pop("endpoint", {})},
            "load": {"kind": "loadgen", **load}, "prompts": prompts, **fields}


def run(raw: dict, results: Path):
    from orchestrator.driver import run_all
    from orchestrator.spec import validate

    (done,) = run_all(validate(raw, "job.yaml"), results_dir=results, in_process=True)
    return done


def detail(run_dir) -> dict:
    """LoadGen's detail log: key -> value, read with this test's own parser."""
    out = {}
    for line in (Path(run_dir) / "loadgen" / "mlperf_log_detail.txt").read_text().splitlines():
        if line.startswith(":::MLLOG"):
            entry = json.loads(line.removeprefix(":::MLLOG "))
            out[entry["key"]] = entry["value"]
    return out


@pytest.mark.slow
def test_single_stream_token_latencies_are_the_servers_and_the_row_has_loadgens_own(tmp_path):
    """The mock: first token 20 ms after the request, then one every 4 ms, 16 of them. LoadGen's
    TTFT p50 is the 20 ms plus the HTTP and hand-over (a few ms at most), its TPOT the 4 ms, its
    query latency 20 + 15 x 4 ms; every response's data is the answer's text (LoadGen's accuracy log
    holds them all at accuracy_log_probability 1)."""
    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS, output_tokens=TOKENS) as url:
        done = run(loadgen_job(url, {"scenario": "single_stream", "accuracy_log_probability": 1.0}), tmp_path)
    row, log = done.row, detail(done.run_dir)
    assert row.verdict == "VALID" and row.loadgen_result == "VALID", row.verdict_reasons
    assert log["num_errors"] == 0 and log["requested_use_token_latencies"] is True
    ttft_ms = log["result_first_token_50.00_percentile_latency_ns"] / 1e6
    tpot_ms = log["result_time_per_output_token_50.00_percentile_ns"] / 1e6
    assert TTFT_MS - 0.5 <= ttft_ms <= TTFT_MS + 4, ttft_ms
    assert tpot_ms == pytest.approx(ITL_MS, abs=0.5)
    assert row.query_latency_p50 * 1e3 == pytest.approx(TTFT_MS + (TOKENS - 1) * ITL_MS, abs=5)
    for level in (50, 90, 99):
        assert getattr(row, f"loadgen_ttft_p{level}") == log[f"result_first_token_{level}.00_percentile_latency_ns"] / 1e9
        assert getattr(row, f"loadgen_tpot_p{level}") == log[f"result_time_per_output_token_{level}.00_percentile_ns"] / 1e9
    assert row.loadgen_tokens_per_s == pytest.approx(log["result_completed_tokens_per_second"], rel=1e-5)
    # the samples' requests: one per query, every one answered with the mock's 16 tokens
    assert row.load == "loadgen" and row.scenario == "single_stream" and row.endpoint_url == url
    assert row.requests == row.query_count == len(requests_table(done)) and row.request_errors == 0
    assert row.output_tokens_mean == TOKENS and row.ttft_p50 == pytest.approx(row.loadgen_ttft_p50, abs=0.002)
    accuracy = json.loads((Path(done.run_dir) / "loadgen" / "mlperf_log_accuracy.json").read_text())
    assert len(accuracy) == row.query_count
    assert {bytes.fromhex(a["data"]).decode() for a in accuracy} == {"".join(f" t{i}" for i in range(TOKENS))}


@pytest.fixture(scope="module")
def server_runs(tmp_path_factory):
    """The mock at capacity 4 answers 4 requests at a time, each in 20 + 15 x 4 = 80 ms: 50 requests/s.
    Offered 30 QPS (smoke: 459 queries) it keeps up; offered 90 QPS for 200 queries its queue grows
    by ~40 a second. 128 slots: every request goes to the server at once, so the wait is the server's."""
    runs = {}
    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS, output_tokens=TOKENS, capacity=4) as url:
        for name, load in (("below", {"target_qps": 30, "rules": "smoke"}),
                           ("above", {"target_qps": 90, "min_queries": 200, "ttft_latency_ms": 200})):
            raw = loadgen_job(url, {"scenario": "server", **load}, slots_per_client=128)
            runs[name] = run(raw, tmp_path_factory.mktemp(name))
    return runs


@pytest.mark.slow
def test_server_below_the_mocks_capacity_is_valid(server_runs):
    row = server_runs["below"].row
    assert row.verdict == "VALID" and row.loadgen_result == "VALID", row.verdict_reasons
    assert row.query_count >= 459 and row.requests == row.query_count and row.request_errors == 0
    assert row.loadgen_ttft_p50 * 1e3 == pytest.approx(TTFT_MS, abs=4)
    assert row.loadgen_tpot_p50 * 1e3 == pytest.approx(ITL_MS, abs=0.5)


@pytest.mark.slow
def test_server_far_above_the_mocks_capacity_is_invalid_for_loadgens_reason(server_runs):
    """The queue is the server's: TTFT grows by hundreds of ms, TPOT stays the mock's 4 ms, and the
    samples went to the server as they were issued (no wait for a client slot)."""
    row = server_runs["above"].row
    assert row.loadgen_result == "INVALID" and row.verdict == "INVALID"
    assert "LoadGen INVALID: TTFT constrain not met" in row.verdict_reasons, row.verdict_reasons
    assert row.loadgen_ttft_p99 > 0.4 and row.loadgen_ttft_p50 > 5 * TTFT_MS / 1e3
    assert row.loadgen_tpot_p50 * 1e3 == pytest.approx(ITL_MS, abs=1)
    assert "client slots busy" not in row.verdict_reasons
    requests = requests_table(server_runs["above"])
    in_flight = [sum(o["sent_s"] <= r["arrival_s"] < o["end_s"] for o in requests) for r in requests]
    assert 30 < max(in_flight) < 128  # the server's queue held them: never every slot busy


@pytest.mark.slow
def test_find_peak_searches_the_servers_qps(tmp_path):
    """The mock answers one request at a time, each in 5 + 5 x 1 ms (under 100 requests/s with the
    HTTP): from 60 QPS (VALID under a 150 ms TTFT bound) the search doubles to 120, where the mock's
    queue grows for seconds and TTFT breaks the bound. Two runs: the runs ran out before the
    tolerance, so the row is the passing probe's, INVALID for the search's reason."""
    load = {"scenario": "server", "mode": "find_peak", "target_qps": 60, "rules": "smoke", "ttft_latency_ms": 150,
            "find_peak_max_runs": 2, "find_peak_tolerance": 0.5}
    with serve(ttft_ms=5, itl_ms=1, output_tokens=6, capacity=1) as url:
        done = run(loadgen_job(url, load, prompts={"max_tokens": 6}), tmp_path)
    probes = pq.read_table(Path(done.run_dir) / "find_peak.parquet").to_pylist()
    assert [(p["target_qps"], p["loadgen_result"]) for p in probes] == [(60, "VALID"), (120, "INVALID")], probes
    assert "TTFT constrain not met" in probes[1]["verdict_reasons"]
    row = done.row
    assert row.target_qps == 60 and row.loadgen_result == "VALID" and row.loadgen_mode == "find_peak"
    assert row.find_peak_stop.startswith("runs ran out") and "find_peak: runs ran out" in row.verdict_reasons
    assert row.verdict == "INVALID" and row.request_errors == 0 and row.requests == row.query_count >= 459
    assert {d.name for d in (Path(done.run_dir) / "loadgen").iterdir()} == {"qps-60", "qps-120"}


@pytest.mark.slow
def test_samples_that_find_every_client_slot_busy_make_the_row_invalid(tmp_path):
    """2 slots, 30 QPS of 80 ms answers: ~2.4 in flight on average, so samples wait for a slot."""
    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS, output_tokens=TOKENS) as url:
        raw = loadgen_job(url, {"scenario": "server", "target_qps": 30, "min_queries": 100}, slots_per_client=2)
        row = run(raw, tmp_path).row
    assert row.verdict == "INVALID" and "client slots busy and waited in the driver" in row.verdict_reasons
    assert "raise slots_per_client or clients" in row.verdict_reasons and row.schedule_lag_p99 > 0.01


@pytest.mark.slow
def test_a_request_that_fails_is_counted_and_the_row_is_invalid(tmp_path):
    """Each answer takes 80 ms, and endpoint.timeout_s is 50 ms: every request times out after its first
    chunks. Each is a counted error; LoadGen got no answer (no tokens: its own errors) and the row says both."""
    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS, output_tokens=TOKENS) as url:
        done = run(loadgen_job(url, {"scenario": "single_stream", "min_queries": 8, "min_duration_s": 0.2},
                               endpoint={"timeout_s": 0.05}), tmp_path)
    row = done.row
    assert row.verdict == "INVALID" and row.request_errors == row.requests == row.query_count
    assert json.loads(row.errors_by_kind) == {"timeout": row.requests}
    assert f"{row.requests} of {row.requests} requests failed" in row.verdict_reasons
    assert row.loadgen_errors > 0 and "LoadGen logged" in row.verdict_reasons


@pytest.mark.parametrize("sets, said", [
    (["load.scenario=offline"], "load: scenario offline is not run against an endpoint"),
    (["load.scenario=multi_stream"], "load: scenario multi_stream is not run against an endpoint"),
    (["load.mode=accuracy"], "load: mode accuracy scores the responses"),
    (["load.audit=TEST01"], "load.audit: LoadGen's compliance tests audit an MLPerf submission"),
    (["load.hand_over=actor_call"], "load.hand_over: not for an endpoint job"),
    (["load.scenario=server"], "load: target_qps is missing"),
    (["load.mode=find_peak"], "load: mode find_peak searches a server QPS"),
    (["repeats=2"], "is one LoadGen run; repeats=2"),
    (["prompts.max_tokens=1"], "prompts.max_tokens: LoadGen's token latencies need at least 2 tokens"),
])
def test_what_does_not_apply_to_an_endpoint_is_refused_in_one_line(tmp_path, sets, said):
    out, seconds, results = submit(tmp_path, loadgen_job(f"http://127.0.0.1:{closed_port()}",
                                                         {"scenario": "single_stream"}), *sets)
    assert said in refused(out, results) and seconds < 5


def test_slots_are_refused_for_an_endpoint_schedule(tmp_path):
    raw = loadgen_job(f"http://127.0.0.1:{closed_port()}", {}, slots_per_client=8)
    raw["load"] = {"rate": 2.0}
    out, _, results = submit(tmp_path, raw)
    assert "slots_per_client: is for load kind loadgen" in refused(out, results)


def test_an_unreachable_server_is_one_line_before_loadgen_starts(tmp_path):
    out, seconds, results = submit(tmp_path, loadgen_job(f"http://127.0.0.1:{closed_port()}",
                                                         {"scenario": "server", "target_qps": 5}))
    assert "endpoint.url: nothing answers at http://127.0.0.1:" in refused(out, results) and seconds < 5
