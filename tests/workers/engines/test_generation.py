"""The generation contract: a Generator tells each token as it exists, TokenStamps makes the records,
and the latencies computed from them are the generator's known costs (a paced fake: tests/fakes)."""

import time

import pytest

from orchestrator.metrics.requests import request_figures, tpot_s, ttft_s
from tests.fakes.generator import PacedGenerator
from workers.engines.generation import GenerationRequest, TokenStamps


def test_tokens_are_stamped_as_they_exist_so_ttft_and_tpot_are_the_generators_costs():
    generator = PacedGenerator(prefill_ms_per_token=1.0, decode_ms_per_step=20.0)
    requests = [GenerationRequest(i, tuple(range(10)), max_new_tokens=5) for i in range(2)]
    arrival = time.perf_counter()
    stamps = TokenStamps(requests, [arrival, arrival], source="worker 0")
    stamps.started(time.perf_counter())
    out = generator.generate(requests, stamps.on_token)
    records = stamps.finish()
    assert [g.token_ids for g in out] == [[0, 1, 2, 3, 4]] * 2
    assert all(r.output_tokens == 5 and r.input_tokens == 10 and r.ok for r in records)
    for r in records:  # prefill: 20 prompt tokens x 1 ms; each later token one 20 ms step
        assert ttft_s(r) == pytest.approx(0.020, abs=0.010)
        assert tpot_s(r) == pytest.approx(0.020, abs=0.005)
    assert request_figures(records).itl[50.0] == pytest.approx(0.020, abs=0.005)


def test_a_failed_generation_is_a_record_with_its_error_not_a_missing_one():
    requests = [GenerationRequest(0, (1, 2), 3), GenerationRequest(1, (1,), 3)]
    stamps = TokenStamps(requests, [0.0, 0.0])
    stamps.on_token(0, 7, 0.1)
    stamps.failed("engine", "CUDA error: an illegal memory access", 0.2)
    figures = request_figures(stamps.finish())
    assert (figures.requests, figures.completed, figures.errors) == (2, 0, {"engine": 2})
