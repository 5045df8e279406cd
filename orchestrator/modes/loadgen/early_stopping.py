"""LoadGen's early stopping (loadgen/early_stopping.cc, results.cc, at 6.0.17), in Python: how many
queries over the bound a Server run of n queries tolerates, and which order statistic a stream's
early-stopping estimate is. Pure; checked against LoadGen's own verdicts and estimates in
tests/orchestrator/modes/loadgen/test_early_stopping.py.

LoadGen's criterion (confidence c = 0.99, tolerance 0): h(t) is the fewest queries with P[at most t
of h + t queries are over the bound | the true over-bound rate is 1 - p] < 1 - c. A Server run of n
queries with t over its bound passes early stopping iff n >= h(t) + t. A stream's estimate of its
p-th percentile is the t-th largest latency for the largest t with h(t) + t <= n (none below h(1) + 1
queries: 64 at p90, 662 at p99, 6636 at p99.9).
"""

from __future__ import annotations

import math
from functools import lru_cache

CONFIDENCE = 0.99


def _tail_le(t: int, n: int, q: float) -> float:
    """P[X <= t] for X ~ Binomial(n, q), summed in logs (n reaches the hundreds of thousands)."""
    if t >= n:
        return 1.0
    lq, lp = math.log(q), math.log1p(-q)
    terms = [math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1) + x * lq + (n - x) * lp
             for x in range(t + 1)]
    top = max(terms)
    return math.exp(top) * sum(math.exp(v - top) for v in terms)


@lru_cache(maxsize=4096)
def min_passing(t: int, p: float) -> int:
    """LoadGen's h(t): the fewest queries that, with t more over the bound, still pass at percentile p."""
    low, high = 1, 1
    while _tail_le(t, high + t, 1 - p) >= 1 - CONFIDENCE:
        high *= 2
    while low < high:
        middle = (low + high) // 2
        if _tail_le(t, middle + t, 1 - p) < 1 - CONFIDENCE:
            high = middle
        else:
            low = middle + 1
    return low


def _largest_t(n: int, p: float, smallest: int) -> int:
    """The largest t >= smallest with h(t) + t <= n, or smallest - 1 (h(t) + t grows with t)."""
    if min_passing(smallest, p) + smallest > n:
        return smallest - 1
    low, high = smallest, n
    while low < high:
        middle = (low + high + 1) // 2
        if min_passing(middle, p) + middle <= n:
            low = middle
        else:
            high = middle - 1
    return low


def server_overlatency_allowed(queries: int, p: float = 0.99) -> int:
    """The most queries over the bound a Server run of `queries` tolerates (-1: even none passes:
    fewer than 459 queries at p99)."""
    return _largest_t(queries, p, 0)


def stream_estimate_rank(queries: int, p: float) -> int | None:
    """t such that a stream's estimate is the t-th largest latency; None below the fewest queries."""
    t = _largest_t(queries, p, 1)
    return t if t >= 1 else None


def queries_for_server_tolerance(t: int, p: float = 0.99) -> int:
    """The fewest Server queries that tolerate t over the bound."""
    return min_passing(t, p) + t
