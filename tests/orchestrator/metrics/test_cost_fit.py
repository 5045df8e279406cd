"""The cost fit and per-shard ratios behind the stability rule of variable-length work, on known costs."""

import numpy as np
import pytest

from orchestrator.metrics.cost_fit import BatchCost, fit_cost, fit_latency

A, B, C = 2e-3, 1e-5, 1e-8  # s per batch, per token, per token x length


def batches(rng, n=60, workers=1, slow=(), factor=2.0, noise=0.0):
    """Batches of 1..8 rows and 200..2800 padded tokens costing A + B tokens + C tokens x length,
    10 per shard, shards dealt round-robin to workers."""
    out = []
    for i in range(n):
        rows, length = int(rng.integers(1, 9)), int(rng.integers(200, 2800))
        tokens = rows * length
        seconds = (A + B * tokens + C * tokens * length) * (factor if i in slow else 1.0)
        seconds *= 1 + noise * rng.standard_normal()
        out.append(BatchCost(0, i // 10, (i // 10) % workers, rows, length, seconds))
    return out


def test_recovers_a_known_cost_and_leaves_no_spread():
    data = batches(np.random.default_rng(0))
    coef, _ = fit_cost(data)
    assert tuple(coef) == pytest.approx((A, B, C), rel=1e-6)
    fit = fit_latency(data)
    assert len(fit.shards) == 6 and fit.shard_cv == pytest.approx(0.0, abs=1e-9)


def test_length_mix_alone_is_not_instability():
    """The per-token CV of such batches is above the quick bound; the shard CV is what noise is left."""
    data = batches(np.random.default_rng(1), noise=0.05)
    per_token = [b.seconds / (b.rows * b.seq_len) for b in data]
    assert np.std(per_token, ddof=1) / np.mean(per_token) > 0.25
    assert fit_latency(data).shard_cv < 0.05  # 5 % per batch, averaged over 10 batches per shard


def test_a_slow_stretch_shows_in_the_spread_and_names_its_shards():
    fit = fit_latency(batches(np.random.default_rng(2), slow=range(20, 40), noise=0.01))  # shards 2 and 3 at 2x
    # (k - 1) sqrt(p (1 - p)) / (1 + (k - 1) p) = 0.354 for k = 2, p = 1/3; x sqrt(6/5) for 6 samples
    assert fit.shard_cv == pytest.approx(0.354 * (6 / 5) ** 0.5, abs=0.03)
    ratios = {s.label: s.ratio for s in fit.shards}
    assert ratios["shard 2 (worker 0)"] == pytest.approx(2.0, rel=0.05)
    assert ratios["shard 3 (worker 0)"] == pytest.approx(2.0, rel=0.05)
    assert all(r == pytest.approx(1.0, abs=0.05) for label, r in ratios.items() if label[6] not in "23")


def test_a_worker_slow_throughout_is_left_to_the_straggler_rule():
    data = [BatchCost(b.repeat, b.shard_id, b.worker_id, b.rows, b.seq_len, b.seconds * (1 + b.worker_id))
            for b in batches(np.random.default_rng(3), workers=2)]
    fit = fit_latency(data)
    assert fit.shard_cv < 0.05 and {s.label for s in fit.shards if s.worker_id == 1} == {
        "shard 1 (worker 1)", "shard 3 (worker 1)", "shard 5 (worker 1)"}


def test_too_few_batches_or_shards_give_no_figure():
    assert fit_latency(batches(np.random.default_rng(4), n=5)) is None
    assert fit_latency(batches(np.random.default_rng(4), n=20)).shard_cv is None  # 2 shards
