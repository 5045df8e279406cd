"""LoadGen's early stopping in Python, against LoadGen's own numbers: the Server table LoadGen 6.0.17
printed when run just below and just above each count, and its stream estimates."""

import random

import pytest

from orchestrator.modes.loadgen.early_stopping import (
    queries_for_server_tolerance,
    server_overlatency_allowed,
    stream_estimate_rank,
)


@pytest.mark.parametrize("tolerated, queries", [(0, 459), (1, 662), (2, 838), (3, 1001), (5, 1307), (10, 2010)])
def test_server_tolerance_matches_loadgen(tolerated, queries):
    """Each count is the fewest at which LoadGen called a run with that many over-bound queries VALID
    (and one fewer INVALID), measured with the wheel by running just below and above each count."""
    assert queries_for_server_tolerance(tolerated) == queries
    assert server_overlatency_allowed(queries) == tolerated
    assert server_overlatency_allowed(queries - 1) == tolerated - 1


@pytest.mark.parametrize("queries, p, rank", [(63, 0.9, None), (64, 0.9, 1), (100, 0.9, 3), (1000, 0.9, 78),
                                              (661, 0.99, None), (662, 0.99, 1), (1000, 0.99, 2), (7000, 0.999, 1)])
def test_stream_estimate_is_the_order_statistic_loadgen_reports(queries, p, rank):
    assert stream_estimate_rank(queries, p) == rank


def test_the_estimate_is_above_the_raw_percentile():
    """At 1,000 queries the p90 estimate is the 78th largest latency (about p92), not the raw p90."""
    rng = random.Random(1)
    latencies = sorted(rng.lognormvariate(0, 0.5) for _ in range(1000))
    estimate = latencies[1000 - stream_estimate_rank(1000, 0.9)]
    assert estimate > latencies[900]
