"""LoadGen with token latencies on the synthetic generator of known cost: SingleStream's TTFT and
TPOT are the truth, a Server below capacity is VALID and above it INVALID with the queueing in its
TTFT, the row carries LoadGen's own figures (read back here from its detail log), and the first
token reaches LoadGen the moment it exists, over the direct lane and over a Ray streaming call."""

import json

import pytest

from orchestrator.driver import run_job
from orchestrator.spec import validate
from tests.builders import job
from tests.orchestrator.modes.offline.test_generation import TINY_LLAMA

pytestmark = pytest.mark.slow


def generate_job(load: dict, *, prefill_ms: float, decode_ms: float, bs: int = 8, new_tokens: int = 8, **fields) -> dict:
    return job(task={"name": "generate", "input_tokens": 16, "max_new_tokens": new_tokens},
               model={"random": TINY_LLAMA}, load={"kind": "loadgen", **load}, bs=bs, warmup=1, workers=1,
               engine={"name": "synthetic", "prefill_ms_per_token": prefill_ms, "decode_ms_per_step": decode_ms},
               data={"synthetic": {"seed": 0, "size": 64}}, gpus_per_worker=0, cpus_per_worker=0, **fields)


def detail(run_dir) -> dict:
    """LoadGen's detail log: key -> value, read with this test's own parser."""
    out = {}
    for line in (run_dir / "loadgen" / "mlperf_log_detail.txt").read_text().splitlines():
        if line.startswith(":::MLLOG"):
            entry = json.loads(line.removeprefix(":::MLLOG "))
            out[entry["key"]] = entry["value"]
    return out


def test_single_stream_ttft_and_tpot_at_one_worker_are_the_known_costs(tmp_path):
    """16 prompt tokens x 0.5 ms = 8 ms to the first token, then one token every 5 ms."""
    raw = generate_job({"scenario": "single_stream"}, prefill_ms=0.5, decode_ms=5.0)
    row = run_job(validate(raw, "t"), results_dir=tmp_path, in_process=True).row
    assert row.loadgen_result == "VALID", row.verdict_reasons
    for ttft, tpot in ((row.ttft_p50, row.tpot_p50), (row.loadgen_ttft_p50, row.loadgen_tpot_p50)):
        assert ttft == pytest.approx(0.008, abs=0.001) and tpot == pytest.approx(0.005, abs=0.001)
    assert row.requests >= 64 and row.output_tokens_mean == 8


@pytest.fixture(scope="module")
def server_runs(tmp_path_factory):
    """One worker, bs 8: a batch costs 8 x 16 x 0.05 ms prefill + 7 x 1 ms decode, ~13 ms for 8
    requests: about 600 requests/s. Offered 100/s (VALID) and 3000/s (INVALID: the queue grows)."""
    runs = {}
    for name, qps in (("below", 100), ("above", 3000)):
        results = tmp_path_factory.mktemp(name)
        raw = generate_job({"scenario": "server", "target_qps": qps, "ttft_latency_ms": 50, "tpot_latency_ms": 10},
                           prefill_ms=0.05, decode_ms=1.0)
        runs[name] = (results, run_job(validate(raw, "t"), results_dir=results, in_process=True).row)
    return runs


def test_server_below_capacity_is_valid_and_above_it_invalid(server_runs):
    _, below = server_runs["below"]
    _, above = server_runs["above"]
    assert below.loadgen_result == "VALID" and below.verdict == "VALID", below.verdict_reasons
    assert above.loadgen_result == "INVALID" and above.verdict == "INVALID"
    assert (below.ttft_bound, below.tpot_bound) == (0.05, 0.01)
    assert above.loadgen_ttft_p99 > 0.05


def test_under_a_server_load_the_queueing_shows_in_ttft_not_in_tpot(server_runs):
    _, below = server_runs["below"]
    _, above = server_runs["above"]
    assert below.ttft_p50 < 0.015
    assert above.ttft_p50 > 10 * below.ttft_p50 and above.ttft_p99 > 10 * below.ttft_p99
    assert above.tpot_p50 == pytest.approx(0.001, abs=0.001) and below.tpot_p50 == pytest.approx(0.001, abs=0.001)


def test_the_rows_token_figures_equal_loadgens_detail_log(server_runs):
    results, row = server_runs["below"]
    log = detail(results / "runs" / row.run_id)
    assert log["requested_use_token_latencies"] is True
    for level in (50, 90, 99):
        assert getattr(row, f"loadgen_ttft_p{level}") == log[f"result_first_token_{level}.00_percentile_latency_ns"] / 1e9
        assert getattr(row, f"loadgen_tpot_p{level}") == log[f"result_time_per_output_token_{level}.00_percentile_ns"] / 1e9
    assert row.loadgen_tokens_per_s == pytest.approx(log["result_completed_tokens_per_second"], rel=1e-5)
    assert log["num_errors"] == 0
    # raybench's own TTFT (the driver's clock, from each query's issue) tells the same story as LoadGen's
    assert row.ttft_p50 == pytest.approx(row.loadgen_ttft_p50, abs=0.002)
    assert row.tpot_p50 == pytest.approx(row.loadgen_tpot_p50, abs=0.001)


@pytest.mark.parametrize("hand_over", ["direct", "actor_call"])
def test_the_first_token_reaches_loadgen_before_its_batch_ends(ray_local, tmp_path, hand_over):
    """A sample takes 2 ms to its first token and 7 x 20 ms more: LoadGen's TTFT must be the 2 ms
    plus the hand-over, not the 140 ms the batch holds it (Ray workers: the lane, or a streaming call)."""
    raw = generate_job({"scenario": "single_stream", "hand_over": hand_over}, prefill_ms=0.125, decode_ms=20.0,
                       bs=1)
    row = run_job(validate(raw, "t"), results_dir=tmp_path).row
    assert row.loadgen_result == "VALID", row.verdict_reasons
    assert row.loadgen_ttft_p50 < 0.020 and row.query_latency_p50 > 0.140
    assert row.loadgen_tpot_p50 == pytest.approx(0.020, abs=0.002)


def test_find_peak_searches_under_both_bounds(tmp_path):
    """The TTFT bound holds the rate: the peak found is VALID, and above it TTFT broke its bound. A
    TPOT bound below the generator's step fails at every rate: no peak (the row says so, INVALID)."""
    load = {"scenario": "server", "mode": "find_peak", "target_qps": 200, "ttft_latency_ms": 20, "tpot_latency_ms": 5,
            "find_peak_max_runs": 3, "find_peak_tolerance": 0.5}
    raw = generate_job(load, prefill_ms=0.02, decode_ms=1.0, new_tokens=4)
    row = run_job(validate(raw, "t"), results_dir=tmp_path / "ttft", in_process=True).row
    assert row.loadgen_result == "VALID" and row.target_qps >= 200, row.verdict_reasons
    assert row.loadgen_tpot_p99 <= 0.005 and row.loadgen_ttft_p99 <= 0.020
    tight = generate_job({**load, "tpot_latency_ms": 0.5, "find_peak_max_runs": 2}, prefill_ms=0.02, decode_ms=1.0,
                         new_tokens=4)
    row = run_job(validate(tight, "t"), results_dir=tmp_path / "tpot", in_process=True).row
    assert row.verdict == "INVALID" and "no passing rate" in (row.find_peak_stop or ""), row.find_peak_stop
