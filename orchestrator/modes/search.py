"""find_peak: the highest rate a load passes, searched as LoadGen's own FindPeakPerformance does, and
why the search stopped. Pure: the mode supplies one probe (run a test at a rate) and says whether it
passed; any mode that searches a rate (LoadGen's Server, an endpoint's open loop) uses this.

From `start`: double while probes pass (halve while they fail) until the peak is bracketed, then
bisect until the highest passing and the lowest failing rates are within `tolerance` of each other,
in at most `max_runs` probes. Every probe after the first lies inside the bracket, so the highest
passing rate stays below the lowest failing one. Only a converged search has found a peak; every
other stop is said: no failing rate found (the peak is above the highest rate tried), no passing
rate found, or the runs ran out before the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Search(Generic[T]):
    best: T  # the highest passing probe, or the lowest-rate one when none passed
    probes: list[T]  # every probe, in the order run
    stop: str  # why the search stopped, in words
    converged: bool  # the stop is a peak within the tolerance

    @property
    def problem(self) -> str:
        """The stop reason when the best probe is not a converged peak, else ''."""
        return "" if self.converged else f"find_peak: {self.stop}"


def find_peak(probe: Callable[[float], T], passed: Callable[[T], bool], rate_of: Callable[[T], float],
              start: float, tolerance: float, max_runs: int) -> Search[T]:
    """Search the highest passing rate (module docstring); `rate_of` reads a probe's rate back."""
    probes: list[T] = []
    low: float | None = None  # highest passing rate so far
    high: float | None = None  # lowest failing rate so far
    rate, stop, converged = start, "", False
    while len(probes) < max_runs:
        outcome = probe(rate)
        probes.append(outcome)
        if passed(outcome):
            low = rate if low is None else max(low, rate)
        else:
            high = rate if high is None else min(high, rate)
        if high is None:
            rate = low * 2
        elif low is None:
            rate = high / 2
        elif high - low <= tolerance * low:
            stop, converged = f"converged: {low:g} passed, {high:g} failed, within {tolerance:.0%}", True
            break
        else:
            rate = (low + high) / 2
    if not stop:
        if high is None:
            stop = f"no failing rate found: every rate up to {low:g} passed in {len(probes)} runs (find_peak_max_runs)"
        elif low is None:
            stop = f"no passing rate found: every rate down to {high:g} failed in {len(probes)} runs"
        else:
            stop = (f"runs ran out before the tolerance: {low:g} passed and {high:g} failed, "
                    f"{(high - low) / low:.1%} apart > {tolerance:.0%} after {len(probes)} runs (find_peak_max_runs)")
    good = [p for p in probes if passed(p)]
    best = max(good, key=rate_of) if good else min(probes, key=rate_of)
    return Search(best, probes, stop, converged)
