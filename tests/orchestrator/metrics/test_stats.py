"""Statistics on hand-made samples; every expected number is worked out in the comments."""

import math

import numpy as np
import pytest

from orchestrator.metrics.cost_fit import node_core_rates, shard_rates_from_records, ShardRate, worker_core_rates
from orchestrator.metrics.stats import coefficient_of_variation, intervals_overlap, latency_shift, mean_ci, percentiles, relative_change, summarize_latencies

# Sorted: 2 4 4 4 5 5 7 9 (ms). Mean 5; squared deviations 9+1+1+1+0+0+4+16 = 32.
LATENCIES = [4, 2, 5, 4, 9, 4, 7, 5]


def test_percentiles_interpolate_between_order_statistics():
    # Type 7: position h = (n - 1) q = 7 q. p50: h 3.5 -> (4 + 5) / 2; p90: h 6.3 -> 7 + 0.3 x 2;
    # p99: h 6.93 -> 7 + 0.93 x 2.
    assert percentiles(LATENCIES) == pytest.approx([4.5, 7.6, 8.86])
    assert percentiles([]) == [None, None, None]


def test_summary_uses_sample_stdev():
    summary = summarize_latencies(LATENCIES)
    stdev = math.sqrt(32 / 7)  # n - 1 = 7 in the denominator: 2.13809
    assert (summary.count, summary.mean) == (8, pytest.approx(5.0))
    assert coefficient_of_variation(LATENCIES) == pytest.approx(stdev / 5) == pytest.approx(0.427618)
    assert (summary.p50, summary.p90, summary.p99) == pytest.approx((4.5, 7.6, 8.86))


def test_cv_needs_two_batches():
    assert coefficient_of_variation([0.01]) is None
    assert coefficient_of_variation([0.01, 0.01]) == 0.0
    assert summarize_latencies([]).mean is None


def test_ci_of_three_repeats_is_student_t():
    # mean 12, s = 2, sem = 2 / sqrt(3) = 1.154701; t(0.975, 2 dof) = 4.302653 from the t table.
    ci = mean_ci([10.0, 12.0, 14.0])
    assert (ci.mean, ci.n) == (12.0, 3)
    assert ci.half_width == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-6)
    assert (ci.low, ci.high) == pytest.approx((7.031725, 16.968275), rel=1e-6)


def test_ci_of_two_repeats_is_wide():
    # mean 2, s = sqrt(2), sem = 1; t(0.975, 1 dof) = 12.706205.
    ci = mean_ci([1.0, 3.0])
    assert (ci.low, ci.high) == pytest.approx((2 - 12.706205, 2 + 12.706205), rel=1e-6)


def test_ci_of_one_repeat_is_undefined():
    ci = mean_ci([812.5])
    assert (ci.mean, ci.n, ci.low, ci.high, ci.half_width) == (812.5, 1, None, None, None)
    with pytest.raises(ValueError):
        mean_ci([])


def test_intervals_overlap_and_relative_change():
    assert intervals_overlap((1, 2), (2, 3))
    assert intervals_overlap((1, 5), (2, 3))
    assert not intervals_overlap((1, 2), (2.01, 3))
    assert relative_change(100.0, 50.0) == pytest.approx(-0.5)
    assert relative_change(0.0, 5.0) is None
    assert relative_change(None, 5.0) is None


def test_rank_test_known_p_value():
    # All of A below all of B: U = 0; exact two-sided p = 2 / C(6, 3) = 2 / 20 = 0.1.
    shift = latency_shift([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert shift.p_value == pytest.approx(0.1)
    assert shift.median_change == pytest.approx(1.5)  # median 2 -> 5
    assert not shift.beyond_noise  # three batches a side cannot reach alpha 0.01
    assert latency_shift([1.0], [2.0, 3.0]) is None


def test_rank_test_flags_a_2x_slowdown_not_a_rerun():
    rng = np.random.default_rng(0)
    base = rng.lognormal(math.log(0.010), 0.1, 400)
    rerun = rng.lognormal(math.log(0.010), 0.1, 400)
    slow = 2 * rng.lognormal(math.log(0.010), 0.1, 400)
    flagged = latency_shift(base, slow)
    assert flagged.beyond_noise and flagged.p_value < 1e-10 and flagged.median_change == pytest.approx(1.0, abs=0.05)
    assert not latency_shift(base, rerun).beyond_noise


def test_a_tiny_but_significant_shift_is_within_noise():
    # 1 % slower on 5000 batches: the rank test rejects, the 3 % effect floor does not.
    rng = np.random.default_rng(1)
    base = rng.lognormal(math.log(0.010), 0.02, 5000)
    shifted = 1.01 * rng.lognormal(math.log(0.010), 0.02, 5000)
    shift = latency_shift(base, shifted)
    assert shift.p_value < 0.01
    assert not shift.beyond_noise


def test_worker_and_node_rates():
    shards = [
        ShardRate(0, "a", 10, 0.5), ShardRate(0, "a", 30, 1.0),  # w0: 40 items / 1.5 s
        ShardRate(1, "a", 20, 2.0),  # w1: 10 items/s
        ShardRate(2, "b", 5, 0.0),  # no core time: no rate, never a division by zero
        ShardRate(3, "b", 30, 1.0),
    ]
    assert worker_core_rates(shards) == pytest.approx({0: 40 / 1.5, 1: 10.0, 3: 30.0})
    assert node_core_rates(shards) == pytest.approx({"a": 40 / 1.5 + 10.0, "b": 30.0})


def test_shard_rates_from_parquet_records_keep_one_pass():
    records = [
        {"pass": "val", "worker_id": 0, "node_id": "a", "items": 8, "core_seconds": 1.0},
        {"pass": "infer", "worker_id": 0, "node_id": "a", "items": 8, "core_seconds": 0.5},
    ]
    assert shard_rates_from_records(records) == [ShardRate(0, "a", 8, 0.5)]
