"""find_peak's rule for one probe of an endpoint: does the server meet the SLO at p99 at this rate?

A probe is a schedule at one rate (orchestrator/modes/search.py picks the rates). It passes when
  - the clients kept to their schedule (otherwise the probe measured the clients, and it fails
    with that reason: the search cannot say anything about the server above it), and
  - with 95 % confidence at most 1 % of its requests missed the SLO: a failed request is a miss,
    and the one-sided Clopper-Pearson upper bound of misses / requests is at most 0.01
    (orchestrator/metrics/stats.py). A p99 "met" on a handful of requests says nothing, so this
    asks for enough of them: with no miss at least 299 (`fewest_for_percentile(99)`), with one
    miss 473, and so on. LoadGen's early stopping is the same idea (a binomial bound on the
    requests over the latency bound); its confidence is 99 %.
Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.metrics.requests import Slo, schedule_figures
from orchestrator.metrics.stats import fewest_for_percentile, miss_rate_upper
from orchestrator.modes.endpoint.columns import client_fell_behind
from orchestrator.modes.endpoint.send import Sent
from orchestrator.spec.verdict import Rules

PERCENTILE = 99.0
CONFIDENCE = 0.95
FEWEST = fewest_for_percentile(PERCENTILE, CONFIDENCE)


@dataclass(frozen=True)
class Probe:
    rate: float
    sent: Sent
    misses: int  # requests that failed or missed a bound of the SLO
    miss_upper: float  # the 95 % upper bound of the miss fraction
    client_behind: str  # why the clients did not keep up ('' when they did)

    @property
    def passed(self) -> bool:
        return not self.client_behind and self.miss_upper <= 1 - PERCENTILE / 100

    @property
    def why(self) -> str:
        if self.client_behind:
            return f"the clients fell behind: {self.client_behind}"
        n = len(self.sent.records)
        verdict = "<=" if self.passed else ">"
        return (f"{self.misses} of {n} requests missed the slo: the miss rate is at most {self.miss_upper:.2%} with "
                f"{CONFIDENCE:.0%} confidence ({verdict} {1 - PERCENTILE / 100:.0%})")


def judge_probe(rate: float, sent: Sent, slo: Slo, rules: Rules) -> Probe:
    n = len(sent.records)
    misses = sum(1 for r in sent.records if not slo.met(r))
    behind = client_fell_behind(schedule_figures([sent.records]), rules)
    return Probe(rate, sent, misses, miss_rate_upper(misses, n, CONFIDENCE), behind)
