"""The row's generation section from hand-made shard results: latencies pooled from every worker's
records (the one place they are computed), per-worker rates summed, MFU/MBU of each phase against
the devices' peaks and bandwidths, and a continuous engine's blank split with its reason."""

import dataclasses

import pytest

from orchestrator.metrics.generation import generation_columns, requests_table
from orchestrator.spec import validate
from tests.builders import job, worker_info
from workers.contract import DecodeTotals, ShardResult
from workers.requests import RequestRecord


def spec(engine: str = "torch"):
    return validate(job(task={"name": "generate", "input_tokens": 4, "max_new_tokens": 3},
                        model={"random": {"model_type": "llama", "vocab_size": 64, "hidden_size": 16,
                                          "num_attention_heads": 2, "num_hidden_layers": 1,
                                          "intermediate_size": 16}}, engine=engine), "test")


def request(rid: int, arrival: float, first: float, gap: float, tokens: int, prompt: int = 4) -> RequestRecord:
    times = [first + k * gap for k in range(tokens)]
    return RequestRecord(rid, arrival, arrival, token_times_s=times, token_counts=[1] * tokens, end_s=times[-1],
                         input_tokens=prompt, output_tokens=tokens)


def shard(worker: int, records: list[RequestRecord], totals: DecodeTotals) -> ShardResult:
    return ShardResult(shard_id=worker, pass_name="infer", attempt=1, worker_id=worker, node_id=f"n{worker}",
                       device_name="x", pid=worker, requests=records, decode=totals)


def infos(bandwidth: float | None, measured: float | None):
    out = []
    for w in (0, 1):
        info = worker_info(w)
        info.node_id = f"n{w}"  # two nodes: two devices, each bandwidth counted
        out.append(dataclasses.replace(info, mem_bandwidth=bandwidth, mem_bandwidth_measured=measured,
                                       mem_bandwidth_reason="" if bandwidth else "no datasheet bandwidth for CPUs"))
    return out


def test_latencies_pool_every_workers_requests_and_rates_add_up_across_workers():
    # worker 0: TTFT 0.1 and 0.3, gaps 0.01; worker 1: TTFT 0.2, gaps 0.03
    results = [
        shard(0, [request(0, 10.0, 10.1, 0.01, 3), request(1, 10.0, 10.3, 0.01, 3)],
              DecodeTotals(8, 0.5, 100.0, 2.0, 400.0, 8000.0)),
        shard(1, [request(2, 10.0, 10.2, 0.03, 3, prompt=8)], DecodeTotals(8, 0.25, 100.0, 1.0, 200.0, 2000.0)),
    ]
    peaks = {"peak_flops": 1000.0, "peak_flops_measured": 500.0}
    cols = generation_columns(spec(), results, infos(10_000.0, 4_000.0), peaks)
    assert cols["requests"] == 3
    assert cols["ttft_p50"] == pytest.approx(0.2) and cols["ttft_p99"] == pytest.approx(0.298)
    assert cols["tpot_p50"] == pytest.approx(0.01) and cols["tpot_p99"] == pytest.approx(0.0296)
    assert cols["itl_p50"] == pytest.approx(0.01)  # 6 gaps: four of 0.01, two of 0.03
    assert cols["e2e_p50"] == pytest.approx(0.26)  # E2E 0.12, 0.32, 0.26
    assert cols["requests_per_s"] == pytest.approx(3 / 0.32)  # first arrival 10.0 to last end 10.32
    assert cols["input_tokens_mean"] == pytest.approx(16 / 3) and cols["output_tokens_mean"] == 3
    assert cols["prefill_tokens_per_s"] == pytest.approx(8 / 0.5 + 8 / 0.25)
    assert cols["MFU_prefill"] == pytest.approx((100 / 0.5 + 100 / 0.25) / 1000)
    assert cols["MFU_decode_measured"] == pytest.approx((400 / 2 + 200 / 1) / 500)
    assert cols["mem_bandwidth"] == 20_000.0 and cols["mem_bandwidth_measured"] == 8_000.0
    assert cols["MBU"] == pytest.approx((8000 / 2 + 2000 / 1) / 20_000)
    assert cols["MBU_measured"] == pytest.approx(6000 / 8000) and cols["mbu_note"] is None
    assert (cols["sampling"], cols["ignore_eos"], cols["input_tokens"], cols["max_new_tokens"]) == \
        ("greedy", True, "4", "3")


def test_a_cpu_has_no_datasheet_mbu_but_a_measured_one():
    results = [shard(0, [request(0, 0.0, 0.1, 0.01, 3)], DecodeTotals(4, 0.1, 10.0, 1.0, 10.0, 500.0))]
    cols = generation_columns(spec(), results, infos(None, 1000.0)[:1], {})
    assert cols["MBU"] is None and cols["MBU_measured"] == pytest.approx(0.5)
    assert cols["mbu_note"] == "no datasheet bandwidth for CPUs" and cols["MFU_prefill"] is None


def test_continuous_batching_has_latencies_but_no_phase_split_and_says_why():
    results = [shard(0, [request(0, 0.0, 0.1, 0.01, 3)], DecodeTotals(4, None, 10.0, None, 10.0, None))]
    cols = generation_columns(spec("continuous_batching"), results, infos(100.0, 100.0)[:1], {"peak_flops": 1.0})
    assert cols["ttft_p50"] == pytest.approx(0.1)
    assert cols["prefill_tokens_per_s"] is None and cols["MFU_decode"] is None and cols["MBU"] is None
    assert "interleaves prefill and decode" in cols["mbu_note"]


def test_records_given_by_the_mode_replace_the_shards_own():
    results = [shard(0, [request(0, 0.0, 0.1, 0.01, 3)], DecodeTotals(4, 0.1, 1.0, 1.0, 1.0, 1.0))]
    driver = [request(7, 5.0, 5.5, 0.01, 3)]
    cols = generation_columns(spec(), results, infos(1.0, 1.0)[:1], {}, requests=driver)
    assert cols["ttft_p50"] == pytest.approx(0.5)
    assert [r["request"] for r in requests_table(driver)] == [7]


def test_tasks_that_do_not_generate_have_no_generation_section():
    assert generation_columns(validate(job(), "test"), [], [], {}) == {}
