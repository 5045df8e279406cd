"""Request latencies from `RequestRecord`s (workers/requests.py): TTFT, TPOT, ITL and E2E are computed
here and nowhere else, for in-cluster generation and endpoint clients alike.

- TTFT = first token - arrival (queueing included: arrival is when the request reached the system);
- E2E = end - arrival;
- TPOT = (E2E - TTFT) / (output tokens - 1), per request (undefined for one-token responses);
- ITL = each gap between consecutive token (or chunk) arrivals, pooled over requests;
- `since="sent"` measures the same from the actual send instead: the two differ exactly when a
  client fell behind its schedule (coordinated omission), which is why both are reported.
Percentiles (p50, p90, p99, p99.9) are taken over every raw sample of every source at once
(stats.percentiles, "linear"), never averaged across sources. Failed requests count as errors, by
kind, and never in a latency. Goodput: requests per second that met every bound of the SLO.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

from orchestrator.metrics.stats import percentiles
from workers.requests import RequestRecord

LEVELS = (50.0, 90.0, 99.0, 99.9)
Since = Literal["arrival", "sent"]


def start_s(r: RequestRecord, since: Since) -> float | None:
    return r.arrival_s if since == "arrival" else r.sent_s


def ttft_s(r: RequestRecord, since: Since = "arrival") -> float | None:
    start, first = start_s(r, since), r.first_token_s
    return first - start if r.ok and start is not None and first is not None else None


def e2e_s(r: RequestRecord, since: Since = "arrival") -> float | None:
    start = start_s(r, since)
    return r.end_s - start if r.ok and start is not None else None


def tpot_s(r: RequestRecord) -> float | None:
    """(E2E - TTFT) / (tokens - 1): the end minus the first token, whatever the origin."""
    first = r.first_token_s
    if not r.ok or first is None or r.output_tokens < 2:
        return None
    return (r.end_s - first) / (r.output_tokens - 1)


def itls_s(r: RequestRecord) -> list[float]:
    """Every gap between consecutive token (or chunk) arrivals of one request."""
    times = r.token_times_s if r.ok else []
    return [b - a for a, b in zip(times, times[1:])]


@dataclass(frozen=True)
class Slo:
    """Bounds a request must meet to count in goodput (s; None: no bound)."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def met(self, r: RequestRecord) -> bool:
        checks = ((self.ttft_s, ttft_s(r)), (self.tpot_s, tpot_s(r)), (self.e2e_s, e2e_s(r)))
        return r.ok and all(bound is None or (value is not None and value <= bound) for bound, value in checks)


@dataclass(frozen=True)
class RequestFigures:
    requests: int
    completed: int
    errors: dict[str, int]  # kind -> count
    duration_s: float  # first arrival to last end
    requests_per_s: float | None
    output_tokens_per_s: float | None
    input_tokens_mean: float | None
    output_tokens_mean: float | None
    ttft: dict[float, float | None] = field(default_factory=dict)  # level -> s, from arrival
    ttft_sent: dict[float, float | None] = field(default_factory=dict)  # from the actual send
    tpot: dict[float, float | None] = field(default_factory=dict)
    itl: dict[float, float | None] = field(default_factory=dict)
    e2e: dict[float, float | None] = field(default_factory=dict)
    e2e_sent: dict[float, float | None] = field(default_factory=dict)
    goodput_per_s: float | None = None  # requests/s that met the SLO (None without one)


def _levels(values: Iterable[float | None]) -> dict[float, float | None]:
    kept = [v for v in values if v is not None]
    return dict(zip(LEVELS, percentiles(kept, LEVELS)))


def request_figures(records: Sequence[RequestRecord], slo: Slo | None = None) -> RequestFigures:
    """The figures of every record, from every source pooled (module docstring)."""
    done = [r for r in records if r.ok]
    starts = [r.arrival_s for r in records]
    ends = [r.end_s for r in records if r.end_s is not None]
    duration = max(ends) - min(starts) if ends and starts else 0.0
    per_s = (lambda n: n / duration) if duration > 0 else (lambda n: None)
    return RequestFigures(
        requests=len(records), completed=len(done),
        errors=dict(Counter(r.error.kind for r in records if r.error is not None)),
        duration_s=duration,
        requests_per_s=per_s(len(done)),
        output_tokens_per_s=per_s(sum(r.output_tokens for r in done)),
        input_tokens_mean=sum(r.input_tokens for r in done) / len(done) if done else None,
        output_tokens_mean=sum(r.output_tokens for r in done) / len(done) if done else None,
        ttft=_levels(ttft_s(r) for r in done), ttft_sent=_levels(ttft_s(r, "sent") for r in done),
        tpot=_levels(tpot_s(r) for r in done),
        itl=_levels(gap for r in done for gap in itls_s(r)),
        e2e=_levels(e2e_s(r) for r in done), e2e_sent=_levels(e2e_s(r, "sent") for r in done),
        goodput_per_s=per_s(sum(slo.met(r) for r in done)) if slo is not None else None,
    )
