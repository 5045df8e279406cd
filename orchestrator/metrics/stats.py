"""Statistics of the measured numbers: latency summaries, confidence intervals, noise tests.

Pure functions over plain sequences (no Ray, no files, no shard results), so every figure here can
be checked by hand. Conventions, each chosen so a reviewer can reproduce the figure with a textbook:
- percentiles: `percentiles(..., method=)` names its method, and each column says which it uses:
  "linear" interpolates between order statistics (numpy's default, Hyndman & Fan type 7: batch
  latencies, request latencies); "loadgen" is LoadGen's own (the element at index n x p of the
  sorted values, no interpolation: results.cc), for figures that must equal LoadGen's;
- spreads use the sample standard deviation (n - 1 in the denominator): the batches and the repeats
  are samples of what the system would do on the next run, not the whole population;
- a 95 % confidence interval of a mean across repeats is Student's t: mean +- t(0.975, n-1) * s / sqrt(n);
- two runs' batch latencies are compared with the two-sided Mann-Whitney U test, which assumes no
  distribution (latencies are skewed, with a long right tail) and is insensitive to a few outliers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

CONFIDENCE = 0.95
NOISE_ALPHA = 0.01
# A rerun of the same job on the same machine moves the median batch latency by a percent or two
# (clocks, caches, neighbours); below this relative change a difference is not worth reporting even
# when a test on thousands of batches calls it significant.
MIN_EFFECT = 0.03


PercentileMethod = Literal["linear", "loadgen"]


def percentiles(samples: Sequence[float], qs: tuple[float, ...] = (50, 90, 99),
                method: PercentileMethod = "linear") -> list[float | None]:
    """The `qs` percentiles of `samples` by `method` (module docstring), None for an empty sample."""
    if len(samples) == 0:
        return [None for _ in qs]
    if method == "loadgen":
        ordered = sorted(samples)
        return [float(ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]) for q in qs]
    return [float(v) for v in np.percentile(np.asarray(samples, dtype=float), qs)]


def coefficient_of_variation(samples: Sequence[float]) -> float | None:
    """Sample stdev / mean: the batch-to-batch jitter as a fraction. None below 2 samples or a zero mean."""
    if len(samples) < 2:
        return None
    values = np.asarray(samples, dtype=float)
    mean = float(values.mean())
    return float(values.std(ddof=1)) / mean if mean > 0 else None


@dataclass(frozen=True)
class LatencySummary:
    """Per-batch core latency of one pass, in seconds per batch."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None


def summarize_latencies(samples: Sequence[float]) -> LatencySummary:
    values = np.asarray(samples, dtype=float)
    p50, p90, p99 = percentiles(samples)
    return LatencySummary(
        count=len(values),
        mean=float(values.mean()) if len(values) else None,
        p50=p50,
        p90=p90,
        p99=p99,
    )


@dataclass(frozen=True)
class MeanCI:
    """Mean of a figure across repeats with its confidence interval (None with a single repeat)."""

    mean: float
    n: int
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        return ci_half_width(self.low, self.high)


def ci_half_width(low: float | None, high: float | None) -> float | None:
    """Half the width of a (symmetric) interval: the "±" printed after a mean."""
    return None if low is None or high is None else (high - low) / 2


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> MeanCI:
    """Student-t interval of the mean. One repeat says nothing about spread, so its interval is None."""
    if len(values) == 0:
        raise ValueError("mean_ci needs at least one value")
    data = np.asarray(values, dtype=float)
    mean = float(data.mean())
    if len(data) < 2:
        return MeanCI(mean, 1, None, None)
    sem = float(data.std(ddof=1)) / math.sqrt(len(data))
    if sem == 0.0:
        return MeanCI(mean, len(data), mean, mean)
    from scipy import stats as sps  # scipy.stats costs ~0.7 s to import: only when there are repeats

    low, high = sps.t.interval(confidence, len(data) - 1, loc=mean, scale=sem)
    return MeanCI(mean, len(data), float(low), float(high))


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals share a point. Non-overlapping 95 % CIs are a conservative sign
    of a real difference (they imply p < 0.01 or so for two means), which is what a reviewer wants."""
    return a[0] <= b[1] and b[0] <= a[1]


def relative_change(before: float | None, after: float | None) -> float | None:
    """(after - before) / |before|; None when either is missing or before is 0."""
    if before is None or after is None or before == 0:
        return None
    return (after - before) / abs(before)


@dataclass(frozen=True)
class ShiftTest:
    """Mann-Whitney U on two runs' batch latencies plus the size of the shift of their medians."""

    p_value: float
    median_change: float  # (median_b - median_a) / median_a
    beyond_noise: bool


def latency_shift(
    a: Sequence[float], b: Sequence[float], alpha: float = NOISE_ALPHA, min_effect: float = MIN_EFFECT
) -> ShiftTest | None:
    """Is run B's latency distribution shifted from run A's by more than noise?

    Both conditions must hold: the rank test rejects "same distribution" at `alpha`, and the median
    moved by at least `min_effect`. Batches within one run are not independent (a slow minute slows
    many batches), so the p-value alone overstates the evidence; the effect floor keeps a rerun of the
    same job from being flagged. None when a side has fewer than 2 batches.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats as sps

    result = sps.mannwhitneyu(np.asarray(a, dtype=float), np.asarray(b, dtype=float), alternative="two-sided")
    change = relative_change(float(np.median(a)), float(np.median(b)))
    change = 0.0 if change is None else change
    p_value = float(result.pvalue)
    return ShiftTest(p_value, change, p_value < alpha and abs(change) >= min_effect)




def miss_rate_upper(misses: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound of a fraction from `misses` of `n` trials: with
    `confidence`, the true fraction is at most this. Zero misses in n give 1 - (1 - confidence)^(1/n)
    (the "rule of three": about 3/n at 95 %)."""
    if n <= 0:
        return 1.0
    if misses >= n:
        return 1.0
    from scipy import stats as sps

    return float(sps.beta.ppf(confidence, misses + 1, n - misses))


def fewest_for_percentile(q: float, confidence: float = CONFIDENCE) -> int:
    """The fewest trials that can show a q-th percentile below a bound (no miss at all) with
    `confidence`: n with 1 - (1 - confidence)^(1/n) <= 1 - q/100 (299 for p99 at 95 %)."""
    return math.ceil(math.log(1 - confidence) / math.log(q / 100))
