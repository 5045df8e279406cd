"""find_peak's search on a system of known capacity: the peak within the tolerance, and every other
way a search ends said in words (an unbracketed or unconverged search is no peak)."""

import pytest

from orchestrator.modes.search import find_peak


def search(capacity: float | None = None, passes=None, start: float = 100.0, tolerance: float = 0.05,
           max_runs: int = 8):
    tried: list[float] = []

    def probe(rate: float) -> float:
        tried.append(rate)
        return rate

    ok = passes or (lambda rate: rate <= capacity)
    return find_peak(probe, ok, lambda rate: rate, start, tolerance, max_runs), tried


def test_a_bracketed_search_converges_on_the_capacity_within_the_tolerance():
    result, tried = search(capacity=730.0)
    assert result.converged and result.problem == ""
    assert 730.0 * 0.95 <= result.best <= 730.0 and tried[:4] == [100, 200, 400, 800]
    assert result.stop.startswith("converged: ")


@pytest.mark.parametrize("capacity, max_runs, expected", [
    (1e9, 8, "no failing rate found: every rate up to 12800 passed in 8 runs"),
    (1.0, 4, "no passing rate found: every rate down to 12.5 failed in 4 runs"),
    (730.0, 5, "runs ran out before the tolerance: 600 passed and 800 failed, 33.3% apart > 5% after 5 runs"),
])
def test_every_other_stop_is_said_and_is_no_peak(capacity, max_runs, expected):
    result, _ = search(capacity=capacity, max_runs=max_runs)
    assert not result.converged and result.stop.startswith(expected), result.stop
    assert result.problem == f"find_peak: {result.stop}"
