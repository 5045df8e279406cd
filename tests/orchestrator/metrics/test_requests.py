"""TTFT, TPOT, ITL and E2E from request records: exact on records of known times, pooled over sources."""

import numpy as np
import pytest

from orchestrator.metrics.requests import Slo, e2e_s, itls_s, request_figures, tpot_s, ttft_s
from workers.requests import RequestError, RequestRecord


def record(rid: int, arrival: float, sent: float, tokens: list[float], **fields) -> RequestRecord:
    return RequestRecord(rid, arrival, sent_s=sent, token_times_s=tokens, token_counts=[1] * len(tokens),
                         end_s=tokens[-1] if tokens else sent, output_tokens=len(tokens), input_tokens=10, **fields)


def test_each_latency_follows_its_definition():
    r = record(0, arrival=10.0, sent=10.5, tokens=[11.0, 11.2, 11.5, 11.6])
    assert ttft_s(r) == pytest.approx(1.0) and ttft_s(r, "sent") == pytest.approx(0.5)  # queueing counts from arrival
    assert e2e_s(r) == pytest.approx(1.6) and e2e_s(r, "sent") == pytest.approx(1.1)
    assert tpot_s(r) == pytest.approx((1.6 - 1.0) / 3)  # (E2E - TTFT) / (tokens - 1)
    assert itls_s(r) == pytest.approx([0.2, 0.3, 0.1])
    one = record(1, 0.0, 0.0, [0.4])
    assert tpot_s(one) is None and itls_s(one) == []
    failed = record(2, 0.0, 0.0, [0.1, 0.2], error=RequestError("http_5xx", "503"))
    assert ttft_s(failed) is None and e2e_s(failed) is None and tpot_s(failed) is None


def test_percentiles_pool_every_raw_sample_of_every_source():
    """Two clients' records merged give the percentiles of all samples at once, not an average of
    each client's percentiles (which, here, would be far off)."""
    rng = np.random.default_rng(0)
    fast = [record(i, 0.0, 0.0, [t, t + 0.01], source="client 0") for i, t in enumerate(rng.uniform(0.01, 0.02, 300))]
    slow = [record(300 + i, 0.0, 0.0, [t, t + 0.01], source="client 1")
            for i, t in enumerate(rng.uniform(0.5, 1.0, 100))]
    pooled = request_figures(fast + slow)
    every = [r.token_times_s[0] for r in fast + slow]
    assert pooled.ttft == {q: pytest.approx(float(np.percentile(every, q))) for q in (50.0, 90.0, 99.0, 99.9)}
    averaged = (request_figures(fast).ttft[90.0] + request_figures(slow).ttft[90.0]) / 2
    assert abs(averaged - pooled.ttft[90.0]) > 0.1


def test_errors_are_counted_by_kind_and_goodput_counts_requests_within_every_bound():
    records = [record(0, 0.0, 0.0, [0.05, 0.06, 0.07]),  # within the SLO
               record(1, 0.0, 0.0, [0.30, 0.31, 0.32]),  # TTFT too long
               record(2, 0.0, 0.0, [0.05, 0.50, 0.95]),  # TPOT too long
               record(3, 0.0, 0.0, [], error=RequestError("timeout", "no answer in 30 s")),
               record(4, 0.0, 0.0, [], error=RequestError("http_4xx", "401"))]
    records[3].end_s = records[4].end_s = 1.0
    figures = request_figures(records, Slo(ttft_s=0.1, tpot_s=0.05))
    assert (figures.requests, figures.completed, figures.errors) == (5, 3, {"timeout": 1, "http_4xx": 1})
    assert figures.duration_s == pytest.approx(1.0)
    assert figures.requests_per_s == pytest.approx(3.0) and figures.goodput_per_s == pytest.approx(1.0)
    assert figures.output_tokens_per_s == pytest.approx(9.0)
    assert request_figures(records).goodput_per_s is None
