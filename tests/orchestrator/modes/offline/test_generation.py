"""Offline generation end to end (one worker in this process), on the synthetic generator of known
cost: the row's TTFT and TPOT are the truth within 1 ms, queueing behind earlier batches counts
from the pass's start, and every request's tokens are in the run folder and checked."""

import pyarrow.parquet as pq
import pytest

from orchestrator.driver import run_job
from orchestrator.spec import validate
from tests.builders import job

TINY_LLAMA = {"model_type": "llama", "vocab_size": 128, "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "max_position_embeddings": 128}


def generate_job(requests: int, bs: int, prefill_ms: float, decode_ms: float, **fields) -> dict:
    return job(task={"name": "generate", "input_tokens": 16, "max_new_tokens": 8}, model={"random": TINY_LLAMA},
               engine={"name": "synthetic", "prefill_ms_per_token": prefill_ms, "decode_ms_per_step": decode_ms},
               data={"synthetic": {"seed": 0, "size": requests}}, bs=bs, warmup=1, workers=1,
               verdict={"min_duration_s": 0, "min_batches": 0}, **fields)


def test_one_batch_at_one_worker_has_the_known_ttft_and_tpot(tmp_path):
    """8 requests of 16 tokens in one batch: prefill 128 tokens x 0.25 ms = 32 ms, then a token every 5 ms."""
    row = run_job(validate(generate_job(8, 8, 0.25, 5.0), "t"), results_dir=tmp_path, in_process=True).row
    assert row.requests == 8 and row.items_infer == 64 and row.item_unit == "tok"
    assert row.ttft_p50 == pytest.approx(0.032, abs=0.001)
    assert row.tpot_p50 == pytest.approx(0.005, abs=0.001) and row.itl_p50 == pytest.approx(0.005, abs=0.001)
    assert row.e2e_p50 == pytest.approx(0.032 + 7 * 0.005, abs=0.002)
    assert row.input_tokens_mean == 16 and row.output_tokens_mean == 8
    assert row.prefill_tokens_per_s == pytest.approx(128 / 0.032, rel=0.05)


def test_later_batches_wait_from_the_pass_start_and_the_tokens_are_kept_and_checked(tmp_path):
    """4 batches of 4 on one worker, each 16 ms of prefill and 35 ms of decode: the k-th batch's
    requests wait for k batches before their first token (MLPerf's Offline: all arrive at once)."""
    spec = validate(generate_job(16, 4, 0.25, 5.0, invariance_check=16), "t")
    result = run_job(spec, results_dir=tmp_path, in_process=True)
    row = result.row
    batch = 0.016 + 0.035
    truth = sorted(k * batch + 0.016 for k in range(4) for _ in range(4))
    # each batch behind another adds its 51 ms and the loop's own few ms on a busy machine
    assert row.ttft_p50 == pytest.approx((truth[7] + truth[8]) / 2, abs=0.008)
    assert row.ttft_p99 == pytest.approx(3 * batch + 0.016, abs=0.012)
    assert row.tpot_p99 == pytest.approx(0.005, abs=0.001)  # queueing is in TTFT, never in TPOT
    assert row.invariance_checked == 16 and row.invariance_flips == 0 and row.verdict == "VALID"
    run = tmp_path / "runs" / row.run_id
    predictions = pq.read_table(run / "predictions.parquet").to_pylist()
    assert len(predictions) == 16 and all(len(p["prompt_ids"]) == 16 and len(p["output_ids"]) == 8 for p in predictions)
    requests = pq.read_table(run / "requests.parquet").to_pylist()
    assert sorted(r["ttft_s"] for r in requests) == pytest.approx(truth, abs=0.012)
