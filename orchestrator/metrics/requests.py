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

Whether the client kept up is read from the same records: the schedule lag (sent - arrival, every
request that was sent) and the rate it sent at against the rate its schedule asked for
(`schedule_figures`), and how many were in flight as each arrived (`in_flight_at_arrival`). `request_columns` and `schedule_columns` are the row's columns for them.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Literal, Sequence

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


@dataclass(frozen=True)
class ScheduleFigures:
    """Whether the senders kept to their schedule."""

    lag: dict[float, float | None]  # level -> s, actual minus scheduled send
    lag_max_s: float | None
    scheduled_rate: float | None  # requests after the first / span of their scheduled sends
    sent_rate: float | None  # the same over the actual sends

    @property
    def sent_ratio(self) -> float | None:
        if self.scheduled_rate is None or self.sent_rate is None:
            return None
        return self.sent_rate / self.scheduled_rate


def lag_s(r: RequestRecord) -> float | None:
    return r.sent_s - r.arrival_s if r.sent_s is not None else None


def in_flight_at_arrival(records: Sequence[RequestRecord]) -> list[int]:
    """For each record, in order, how many requests were in flight (sent, not yet ended) when it
    arrived: one that arrived with every sender busy waited for one (LoadGen against an endpoint:
    a sample that found every client slot busy)."""
    spans = [(r.sent_s, r.end_s) for r in records if r.sent_s is not None and r.end_s is not None]
    sent, ended = sorted(s for s, _ in spans), sorted(e for _, e in spans)
    return [bisect_right(sent, r.arrival_s) - bisect_right(ended, r.arrival_s) for r in records]


def _rate(times: list[float]) -> float | None:
    span = max(times) - min(times) if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else None


def schedule_figures(repeats: Sequence[Sequence[RequestRecord]]) -> ScheduleFigures:
    """Lag percentiles over every request that was sent, in every repeat; the sent rate against the
    scheduled one of the repeat that kept to it worst (each repeat's schedule starts at 0). For a
    closed loop arrival is when a slot came free, so the two rates are the same by construction."""
    sent = [[r for r in records if r.sent_s is not None] for records in repeats]
    lags = [lag_s(r) for records in sent for r in records]
    rates = [(_rate([r.arrival_s for r in records]), _rate([r.sent_s for r in records])) for records in sent]
    rates = [(want, got) for want, got in rates if want is not None and got is not None] or [(None, None)]
    scheduled, actual = min(rates, key=lambda pair: pair[1] / pair[0] if pair[0] else 1.0)
    return ScheduleFigures(lag=_levels(lags), lag_max_s=max(lags) if lags else None,
                           scheduled_rate=scheduled, sent_rate=actual)


def repeated_figures(repeats: Sequence[Sequence[RequestRecord]], slo: Slo | None = None) -> RequestFigures:
    """R repeats of one schedule: the counts and every percentile over every record of every repeat
    (pooled, as across clients), the per-second rates the mean of the repeats' own (each repeat's
    span is its own; the spans laid end to end would count the gaps between them)."""
    pooled = request_figures([r for records in repeats for r in records], slo)
    if len(repeats) < 2:
        return pooled
    each = [request_figures(records, slo) for records in repeats]

    def mean(name: str) -> float | None:
        values = [getattr(f, name) for f in each]
        return None if any(v is None for v in values) else sum(values) / len(values)

    return replace(pooled, duration_s=sum(f.duration_s for f in each), requests_per_s=mean("requests_per_s"),
                   output_tokens_per_s=mean("output_tokens_per_s"), goodput_per_s=mean("goodput_per_s"))


def _percentile_columns(name: str, levels: dict[float, float | None]) -> dict[str, float | None]:
    suffix = {50.0: "p50", 90.0: "p90", 99.0: "p99", 99.9: "p999"}
    return {f"{name}_{suffix[q]}": levels.get(q) for q in LEVELS}


def request_columns(f: RequestFigures, slo: Slo | None = None) -> dict[str, Any]:
    """The row's request columns (orchestrator/metrics/row.py), from the pooled figures."""
    bounds = None if slo is None else {k: v * 1e3 for k, v in
                                       (("ttft_ms", slo.ttft_s), ("tpot_ms", slo.tpot_s), ("e2e_ms", slo.e2e_s))
                                       if v is not None}
    return {
        "requests": f.requests, "requests_completed": f.completed, "request_errors": f.requests - f.completed,
        "errors_by_kind": json.dumps(f.errors, sort_keys=True),
        "requests_per_s": f.requests_per_s, "output_tokens_per_s": f.output_tokens_per_s,
        "input_tokens_mean": f.input_tokens_mean, "output_tokens_mean": f.output_tokens_mean,
        **_percentile_columns("ttft", f.ttft), **_percentile_columns("ttft_sent", f.ttft_sent),
        **_percentile_columns("tpot", f.tpot), **_percentile_columns("itl", f.itl),
        **_percentile_columns("e2e", f.e2e), **_percentile_columns("e2e_sent", f.e2e_sent),
        "goodput_per_s": f.goodput_per_s, "slo": json.dumps(bounds, sort_keys=True) if bounds is not None else None,
    }


def schedule_columns(f: ScheduleFigures) -> dict[str, Any]:
    return {"schedule_lag_p50": f.lag.get(50.0), "schedule_lag_p99": f.lag.get(99.0),
            "schedule_lag_max": f.lag_max_s, "sent_ratio": f.sent_ratio}
