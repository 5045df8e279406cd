"""The decode loop: requests through a generator of known cost (the paced fake), timed once; records
from each request's arrival on the epoch clock; the prefill/decode split and the bytes a static
batch's decode steps read; events told as they happen."""

import time

import pytest
import torch

from tests.fakes.generator import PacedGenerator
from workers.contract import ShardResult
from workers.engines.generation import GenerationRequest
from workers.measure.device import MemoryProbe
from workers.measure.flops import FlopsModel
from workers.shard.decode import DecodeCost, run_generation

FLOPS = FlopsModel(matmul_params=1000, n_layers=2, attn_width=8, causal=True)
COST = DecodeCost(FLOPS, weight_bytes=4000, kv_bytes_per_token=64)


def result() -> ShardResult:
    return ShardResult(shard_id=0, pass_name="infer", attempt=1, worker_id=3, node_id="n", device_name="cpu", pid=1)


def record(generated) -> dict:
    return {"example": generated.request_id, "output_ids": generated.token_ids}


def requests() -> list[list[GenerationRequest]]:
    return [[GenerationRequest(0, (1,) * 10, 4), GenerationRequest(1, (1,) * 6, 2)],
            [GenerationRequest(2, (1,) * 8, 3)]]


def test_two_batches_queue_behind_each_other_from_one_arrival():
    """Every request arrived 50 ms before the loop began (an Offline pass's start): the second batch's
    TTFT holds the first batch's whole time, and every time is on the epoch clock."""
    generator = PacedGenerator(prefill_ms_per_token=1.0, decode_ms_per_step=10.0)
    arrival = time.time() - 0.050
    out = run_generation(generator, requests(), COST, record, torch.device("cpu"), MemoryProbe(torch.device("cpu")),
                         result(), arrival_ts=arrival)
    by_id = {r.request_id: r for r in out.requests}
    assert all(r.arrival_s == pytest.approx(arrival, abs=1e-6) for r in out.requests)
    first_batch_ttft = by_id[0].first_token_s - arrival
    assert first_batch_ttft == pytest.approx(0.050 + 0.016, abs=0.008)  # waited, then 16 prompt tokens x 1 ms
    assert by_id[1].first_token_s == pytest.approx(by_id[0].first_token_s, abs=1e-3)
    second = by_id[2].first_token_s - arrival  # behind the whole first batch (16 ms + 3 steps), then 8 tokens
    assert second == pytest.approx(0.050 + 0.016 + 0.030 + 0.008, abs=0.012)
    assert out.start_ts <= by_id[0].token_times_s[0] <= out.end_ts + 1e-6
    assert (out.examples, out.items, out.batch_items, out.batch_rows) == (3, 9, [6, 3], [2, 1])
    assert [r["output_ids"] for r in out.records] == [[0, 1, 2, 3], [0, 1], [0, 1, 2]]


def test_the_prefill_decode_split_flops_and_bytes_of_static_batches():
    generator = PacedGenerator(prefill_ms_per_token=1.0, decode_ms_per_step=10.0)
    out = run_generation(generator, requests(), COST, record, torch.device("cpu"), MemoryProbe(torch.device("cpu")),
                         result())
    totals = out.decode
    assert totals.input_tokens == 24
    assert totals.prefill_seconds == pytest.approx(0.016 + 0.008, abs=0.008)
    assert totals.decode_seconds == pytest.approx(0.030 + 0.020, abs=0.012)
    assert totals.prefill_seconds + totals.decode_seconds == pytest.approx(out.core_seconds)
    s = FLOPS.sequence_flops
    assert totals.prefill_flops == s(10) + s(6) + s(8)
    assert totals.decode_flops == (s(13) - s(10)) + (s(7) - s(6)) + (s(10) - s(8))
    assert out.flops == totals.prefill_flops + totals.decode_flops
    # batch 1: 2 rows padded to 10, 3 decode steps attending to 11, 12, 13 positions; batch 2: 1 row, 2 steps
    assert totals.decode_bytes == (3 * 4000 + 2 * 64 * (11 + 12 + 13)) + (2 * 4000 + 1 * 64 * (9 + 10))


def test_a_continuous_generator_has_no_split_and_gets_every_request_at_once():
    class Continuous(PacedGenerator):
        continuous = True

        def generate(self, reqs, on_token, clock=time.perf_counter):
            self.calls.append(len(reqs))
            return super().generate(reqs, on_token, clock)

    generator = Continuous(0.0, 1.0)
    generator.calls = []
    waves = [[r for wave in requests() for r in wave]]
    out = run_generation(generator, waves, COST, record, torch.device("cpu"), MemoryProbe(torch.device("cpu")), result())
    assert generator.calls == [3]
    assert out.decode.prefill_seconds is None and out.decode.decode_bytes is None and out.decode.decode_flops > 0


def test_first_tokens_and_ends_are_told_as_they_happen():
    generator = PacedGenerator(prefill_ms_per_token=0.0, decode_ms_per_step=20.0)
    events: list[tuple] = []
    stamped: list[float] = []

    def emit(event):
        events.append(event)
        stamped.append(time.perf_counter())

    began = time.perf_counter()
    run_generation(generator, requests()[:1], COST, record, torch.device("cpu"), MemoryProbe(torch.device("cpu")),
                   result(), emit=emit)
    assert [e[:2] for e in events] == [("first", 0), ("first", 1), ("done", 1), ("done", 0)]
    assert stamped[0] - began < 0.015  # the first token left before the 60 ms the batch takes
    done_short = events[2]
    assert done_short[2:4] == ([0, 1], [0.0, pytest.approx(0.020, abs=0.008)]) and done_short[4] == 6
    assert stamped[2] - began < 0.035  # request 1 ended after one step, while request 0 still decodes
