"""The cost fit behind the stability rule of variable-length work, on batches whose cost is known."""

import numpy as np
import pytest

from orchestrator.metrics.stats import BatchCost, fit_latency

A, B, C = 2e-3, 1e-5, 1e-8  # s per batch, per token, per token x length


def batches(rng, n=60, workers=1, slow=(), factor=2.0, noise=0.0):
    """Batches of 1..8 rows and 200..2800 padded tokens, costing A + B tokens + C tokens x length."""
    out = []
    for i in range(n):
        rows, length = int(rng.integers(1, 9)), int(rng.integers(200, 2800))
        tokens = rows * length
        seconds = (A + B * tokens + C * tokens * length) * (factor if i in slow else 1.0)
        seconds *= 1 + noise * rng.standard_normal()
        out.append(BatchCost(0, i // 10, i % workers, rows, length, seconds))
    return out


def test_recovers_a_known_cost_and_leaves_no_spread():
    fit = fit_latency(batches(np.random.default_rng(0)))
    assert fit.coefficients == pytest.approx((A, B, C), rel=1e-6)
    assert fit.residual_cv == pytest.approx(0.0, abs=1e-9)


def test_length_mix_alone_is_not_instability():
    """The raw per-token CV of such batches is large; the residual spread is the noise put in."""
    data = batches(np.random.default_rng(1), noise=0.02)
    per_token = [b.seconds / (b.rows * b.seq_len) for b in data]
    assert np.std(per_token, ddof=1) / np.mean(per_token) > 0.25  # above the quick bound
    assert fit_latency(data).residual_cv == pytest.approx(0.02, abs=0.01)


def test_a_slow_stretch_shows_in_the_spread_and_in_its_shards():
    slow = range(20, 40)  # shards 2 and 3: a third of the batches at 2x
    fit = fit_latency(batches(np.random.default_rng(2), slow=slow, noise=0.01))
    assert fit.residual_cv == pytest.approx(0.35, abs=0.05)  # (k-1) sqrt(p(1-p)) / (1 + (k-1)p) = 0.354
    ratios = fit.shard_ratios()
    assert {key for key, r in ratios.items() if r > 1.5} == {(0, 2, 0), (0, 3, 0)}
    assert ratios[(0, 2, 0)] == pytest.approx(2.0, rel=0.05)


def test_a_worker_slow_throughout_is_left_to_the_straggler_rule():
    data = batches(np.random.default_rng(3), workers=2)
    data = [BatchCost(b.repeat, b.shard_id, b.worker_id, b.rows, b.seq_len, b.seconds * (1 + b.worker_id))
            for b in data]
    assert fit_latency(data).residual_cv < 0.05


def test_too_few_batches_give_no_figure():
    assert fit_latency(batches(np.random.default_rng(4), n=5)) is None
