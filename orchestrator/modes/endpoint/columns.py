"""An endpoint run's figures -> its row and its rule set. Pure.

The request figures (TTFT, TPOT, ITL, E2E, goodput, errors) and the schedule figures (lag, sent
rate) are orchestrator/metrics/requests.py's; this module adds what only the endpoint mode knows
(the server, the clients, the schedule asked for, repeats' intervals, find_peak) and the rules a
row is judged on, in the one evaluation every row goes through (orchestrator/metrics/verdict.py):

- the client, not the server, was the bottleneck: schedule lag p99 above `max_schedule_lag_ms`, or
  the clients sent below `min_sent_ratio` x the rate their schedule asked for. Then the latencies
  from the scheduled send measure the clients' backlog too, and the row is INVALID, naming the
  busiest client's CPU;
- no request completed (the figures are empty);
- the measured span below `min_duration_s`, fewer repeats than `min_repeats`;
- repeats that disagree: the CV across repeats of requests/s, TTFT p50 or TTFT p99 above
  `max_repeat_cv`;
- find_peak: a search that found no peak (orchestrator/modes/search.py says why), and a lowest
  failing rate that failed because the clients fell behind (the server's limit is then unknown).
Under LoadGen (`load: {kind: loadgen}`), LoadGen's rule set judges the run and `served_request_rules`
adds what only the requests tell: failed requests, samples that waited for a client slot.
"""

from __future__ import annotations

import json
import platform
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.requests import RequestFigures, ScheduleFigures, Slo, in_flight_at_arrival, lag_s
from orchestrator.metrics.stats import coefficient_of_variation, mean_ci, percentiles
from orchestrator.metrics.verdict import RuleSet
from orchestrator.spec.job import EndpointJob
from orchestrator.spec.verdict import Rules
from workers.requests import RequestRecord

BOTTLENECK = "the client, not the server, was the bottleneck: use more clients"
IDLE_CLIENT_CORES = 0.5  # a client that fell behind using less than this was starved by its node, not busy


@dataclass(frozen=True)
class EndpointFigures:
    """What the row is made from: the pooled request figures of the headline schedule (every repeat),
    each repeat's own, how the clients kept to the schedule, and how the load was asked for."""

    requests: RequestFigures
    schedule: ScheduleFigures
    per_repeat: Sequence[RequestFigures]
    client_cpu: Sequence[float]  # each client's CPU seconds / wall seconds, every repeat
    client_nodes: Sequence[str]
    offered_rate: float | None  # the rate asked for (None: closed loop)
    arrival: str
    warmup_requests: int
    server_metrics: str = ""
    find_peak_stop: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)  # reasons of the search's own


def client_fell_behind(schedule: ScheduleFigures, rules: Rules) -> str:
    """Why the clients did not keep to their schedule, or '' when they did."""
    lag = schedule.lag.get(99.0)
    parts = []
    if lag is not None and lag * 1e3 > rules.max_schedule_lag_ms:
        parts.append(f"schedule lag p99 {lag * 1e3:.3g} ms > max_schedule_lag_ms {rules.max_schedule_lag_ms:g}")
    ratio = schedule.sent_ratio
    if ratio is not None and ratio < rules.min_sent_ratio:
        parts.append(f"sent at {ratio:.3g} x the scheduled {schedule.scheduled_rate:.4g} req/s < min_sent_ratio "
                     f"{rules.min_sent_ratio:g}")
    return "; ".join(parts)


def endpoint_rules(f: EndpointFigures, rules: Rules) -> RuleSet:
    """The endpoint mode's rule set (module docstring)."""
    reasons = list(f.notes)
    behind = client_fell_behind(f.schedule, rules)
    if behind:
        reasons.append(f"{BOTTLENECK}: {behind}{_cpu_hint(f.client_cpu)}")
    r = f.requests
    if r.completed == 0:
        reasons.append(f"no request completed of {r.requests} (errors: {json.dumps(r.errors, sort_keys=True)})")
    span = r.duration_s / max(1, len(f.per_repeat))
    if span < rules.min_duration_s:
        reasons.append(f"measured {span:.3g} s < min_duration_s {rules.min_duration_s:g} ({rules.profile})")
    if len(f.per_repeat) < rules.min_repeats:
        reasons.append(f"{len(f.per_repeat)} repeat(s) < min_repeats {rules.min_repeats} ({rules.profile})")
    reasons += _disagreeing_repeats(f.per_repeat, rules.max_repeat_cv)
    return RuleSet("endpoint", tuple(reasons))


def served_request_rules(r: RequestFigures, records: Sequence[RequestRecord], places: int,
                         rules: Rules) -> RuleSet:
    """An endpoint under LoadGen (orchestrator/modes/loadgen/endpoint_point.py), beside LoadGen's own
    rule set: a request that failed (LoadGen took it as answered, with no tokens, when it failed: a
    fast error would pass for a fast answer), and samples that found every client slot (`places`)
    busy and waited in the driver for one longer than max_schedule_lag_ms at p99: the clients', not
    the server's, wait. (The driver's own hand-over time is the row's schedule lag, and LoadGen's
    issue delay is judged by LoadGen's rule set.)"""
    reasons = []
    failed = r.requests - r.completed
    if failed:
        reasons.append(f"{failed} of {r.requests} requests failed (errors: {json.dumps(r.errors, sort_keys=True)}); "
                       "LoadGen counted each as answered when it failed")
    waits = [lag_s(rec) for rec, busy in zip(records, in_flight_at_arrival(records))
             if busy >= places and lag_s(rec) is not None]
    (p99,) = percentiles(waits, (99,))
    if p99 is not None and p99 * 1e3 > rules.max_schedule_lag_ms:
        reasons.append(f"{len(waits)} sample(s) found all {places} client slots busy and waited in the driver (lag "
                       f"p99 {p99 * 1e3:.3g} ms > max_schedule_lag_ms {rules.max_schedule_lag_ms:g}): the clients, "
                       "not the server, held them; raise slots_per_client or clients")
    return RuleSet("endpoint", tuple(reasons))


def _cpu_hint(client_cpu: Sequence[float]) -> str:
    """The busiest client's CPU: near a core it was busy itself; far below, something else on its node
    had the CPU when the client needed it (the server itself, when both share a node)."""
    if not client_cpu:
        return ""
    busiest = max(client_cpu)
    if busiest >= IDLE_CLIENT_CORES:
        return f" (busiest client at {busiest:.2f} cores)"
    return (f" (busiest client at {busiest:.2f} cores: its node's CPU went to other processes; give the clients "
            "nodes of their own)")


def _disagreeing_repeats(repeats: Sequence[RequestFigures], bound: float) -> list[str]:
    if len(repeats) < 2:
        return []
    out = []
    for name, values, unit, scale in (("requests/s", [f.requests_per_s for f in repeats], "", 1.0),
                                      ("TTFT p50", [f.ttft.get(50.0) for f in repeats], " ms", 1e3),
                                      ("TTFT p99", [f.ttft.get(99.0) for f in repeats], " ms", 1e3)):
        if any(v is None for v in values):
            continue
        cv = coefficient_of_variation(values)
        if cv is not None and cv > bound:
            shown = ", ".join(f"{v * scale:.4g}" for v in values)
            out.append(f"repeats disagree: {name} per repeat {shown}{unit} (CV {cv:.3g} > max_repeat_cv {bound:g})")
    return out


def endpoint_columns(spec: EndpointJob, f: EndpointFigures) -> dict[str, Any]:
    """The row's endpoint columns besides the request figures (orchestrator/metrics/requests.py)."""
    rps = [x.requests_per_s for x in f.per_repeat if x.requests_per_s is not None]
    p99 = [x.ttft.get(99.0) for x in f.per_repeat if x.ttft.get(99.0) is not None]
    rps_ci = mean_ci(rps) if len(rps) == len(f.per_repeat) > 1 else None
    p99_ci = mean_ci(p99) if len(p99) == len(f.per_repeat) > 1 else None
    return {
        "endpoint_url": ",".join(spec.endpoint.url), "endpoint_api": spec.endpoint.api,
        "clients": spec.clients, "client_nodes": ",".join(sorted(set(f.client_nodes))),
        "arrival": f.arrival, "offered_rate": f.offered_rate, "concurrency": spec.load.concurrency,
        "warmup_requests": f.warmup_requests,
        "client_cpu_max": max(f.client_cpu) if f.client_cpu else None,
        "requests_per_s_ci_low": rps_ci.low if rps_ci else None,
        "requests_per_s_ci_high": rps_ci.high if rps_ci else None,
        "ttft_p99_ci_low": p99_ci.low if p99_ci else None, "ttft_p99_ci_high": p99_ci.high if p99_ci else None,
        "server_metrics": f.server_metrics or None, "find_peak_stop": f.find_peak_stop,
    }


def engine_columns_blank() -> dict[str, None]:
    """Every column a row must state that can be blank: here all of them are an engine's (its passes,
    accuracy, memory, MFU, batches), which an endpoint row has none of."""
    return {name: None for name, f in MetricsRow.model_fields.items()
            if f.is_required() and type(None) in typing.get_args(f.annotation)}


def identity_columns(spec: EndpointJob, run_id: str, sweep_id: str | None, clients: int, nodes: int,
                     versions: dict[str, str]) -> dict[str, Any]:
    """Which run of which job, and what sent it: the engine-only columns blank (orchestrator/metrics/row.py)."""
    return {**engine_columns_blank(),
        "run_id": run_id, "sweep_id": sweep_id,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "job": spec.name, "task": f"endpoint:{spec.endpoint.api}", "model": spec.endpoint.model,
        "data": spec.prompts.label, "engine": "endpoint", "item_unit": "req", "precision": "",
        "precision_effective": "", "acc": "-", "acc_flagged": False, "workers": clients, "nodes": nodes,
        "devices": "", "mem_source": "", "retries": 0, "resumed": False, "load": "endpoint", "scenario": None,
        "torch_version": "", "cuda_version": "", "driver_version": "",
        "ray_version": versions.get("ray", ""), "transformers_version": versions.get("transformers", ""),
        "python_version": versions.get("python", platform.python_version()),
    }


def slo_of(spec: EndpointJob) -> Slo | None:
    s = spec.slo
    if s is None:
        return None
    ms = lambda v: None if v is None else v / 1e3  # noqa: E731
    return Slo(ttft_s=ms(s.ttft_ms), tpot_s=ms(s.tpot_ms), e2e_s=ms(s.e2e_ms))
