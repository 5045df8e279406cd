"""LoadGen's figures -> the row's LoadGen columns and LoadGen's rule set. The one place they are computed.

Every figure is read from LoadGen's detail log (orchestrator/modes/loadgen/logs.py), the keys
MLPerf's submission checker reads, never recomputed:
- `achieved_qps`: Server's completed samples/s, Offline's samples/s, SingleStream's QPS with
  LoadGen's overhead; blank for MultiStream (its metric is a latency);
- `query_latency_es`: single_stream / multi_stream: MLPerf's metric, LoadGen's early-stopping estimate
  of the headline percentile (`latency_percentile`, read from the log: p90 single_stream, 99.9 for
  some models; p99 multi_stream), the figure the stream bound is held to;
- `query_latency_p50/p90/p99`: LoadGen's raw percentiles in s, per sample (per query for MultiStream);
- server: `overlatency_queries` (LoadGen's count over the bound) and `overlatency_allowed` (how many
  its early stopping tolerates at this many queries: early_stopping.py);
- `issue_delay_p99`: LoadGen's own issue delay (actual minus scheduled issue, from its trace): what
  the driver, not the system, added.
`loadgen_rules` is LoadGen's rule set for the row's one verdict (orchestrator/metrics/verdict.py
joins it with the incidents every row is judged on): LoadGen's INVALID with its reasons, any error
LoadGen logged (MLPerf rejects a run with one, VALID or not), a stream estimate above the job's
bound, an accuracy run that did not score every sample, a run under rules mlperf that is not
MLPerf's (its deviations), a Server run whose driver fell behind LoadGen's schedule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from orchestrator.metrics.stats import percentiles
from orchestrator.metrics.verdict import RuleSet
from orchestrator.modes.loadgen.compliance import Compliance
from orchestrator.modes.loadgen.early_stopping import server_overlatency_allowed
from orchestrator.modes.loadgen.logs import DetailLog, TokenLatencies

# A Server query LoadGen issued later than scheduled waits for the driver, not the system: above this
# share of the latency bound (at p99) the driver was the bottleneck and the figures are its own.
DRIVER_SHARE_OF_BOUND = 0.1
SHOWN_ERRORS = 2


@dataclass(frozen=True)
class ScenarioFigures:
    """What the row is made from: the headline LoadGen test and how it was asked for."""

    scenario: str
    mode: str
    rules: str
    detail: DetailLog
    target_qps: float | None
    latency_bound_s: float | None
    examples: int  # the dataset's size (accuracy mode must score each once)
    scored_examples: int  # distinct examples the accepted batches ran
    note: str = ""  # a reason of raybench's own (find_peak's search found no peak)
    hand_over: str = ""  # how batches reached the workers (Target.hand_over)
    find_peak_stop: str | None = None  # why find_peak's search stopped (None outside find_peak)
    deviations: tuple[str, ...] = ()  # rules mlperf: what the run changed of mlperf.conf
    issue_delays_ns: tuple[int, ...] = field(default=(), repr=False)  # LoadGen's, per sample (its trace)
    compliance: Compliance | None = None  # the compliance test the job asked for, and its verdict

    @property
    def issue_delay_p99_s(self) -> float | None:
        (p99,) = percentiles(self.issue_delays_ns, (99,), method="loadgen")
        return p99 / 1e9 if p99 is not None else None
    tokens: TokenLatencies | None = None  # LoadGen's TTFT/TPOT figures (use_token_latencies)
    token_bounds_s: tuple[float | None, float | None] = (None, None)  # the TTFT and TPOT bounds LoadGen enforced


def _seconds(ns: int | None) -> float | None:
    return ns / 1e9 if ns is not None else None


def loadgen_rules(f: ScenarioFigures) -> RuleSet:
    """LoadGen's verdict on the test, and what raybench holds it to besides (module docstring)."""
    d = f.detail
    reasons = [f.note] if f.note else []
    if f.mode == "accuracy":
        if f.scored_examples != f.examples:
            reasons.append(f"accuracy run scored {f.scored_examples} of {f.examples} samples")
    elif d.result != "VALID":
        reasons.append(d.invalid_reason() or "LoadGen logged no result")
    if d.errors:
        shown = "; ".join(d.errors[:SHOWN_ERRORS]) + ("; ..." if len(d.errors) > SHOWN_ERRORS else "")
        reasons.append(f"LoadGen logged {len(d.errors)} error(s) (MLPerf accepts none): {shown}")
    if f.deviations:
        reasons.append("not MLPerf-compliant: " + "; ".join(f.deviations))
    if f.mode != "accuracy":  # an accuracy run is judged on its scores alone: its timings are no figure
        reasons.extend(_timing_reasons(f))
    return RuleSet(f"loadgen-{f.rules}", tuple(reasons))


def _timing_reasons(f: ScenarioFigures) -> list[str]:
    """A performance test's latency figures held to the bound: the early-stopping estimate of a
    stream scenario, and the driver's own issue delay in Server (it must not be what saturated)."""
    d, reasons = f.detail, []
    estimate, bound = _seconds(d.early_stopping_ns), f.latency_bound_s
    if f.scenario in ("single_stream", "multi_stream") and bound is not None and estimate is not None \
            and estimate > bound:
        reasons.append(f"p{_percent(d)} early-stopping estimate {estimate * 1e3:.4g} ms > latency_bound_ms "
                       f"{bound * 1e3:g}")
    delay = f.issue_delay_p99_s
    if f.scenario == "server" and bound and delay is not None and delay > DRIVER_SHARE_OF_BOUND * bound:
        reasons.append(f"the driver, not the system, was saturated: LoadGen's issue delay p99 {delay * 1e3:.3g} ms > "
                       f"{DRIVER_SHARE_OF_BOUND:.0%} of the {bound * 1e3:g} ms bound")
    return reasons


def _percent(detail: DetailLog) -> str:
    fraction = detail.target_percentile
    return f"{fraction * 100:g}" if fraction is not None else "?"


def scenario_columns(f: ScenarioFigures) -> dict[str, Any]:
    """The row's LoadGen columns (its verdict is `loadgen_rules`', joined with the rest by the merge)."""
    d = f.detail
    per_query = f.scenario == "multi_stream"
    queries = d.get("result_query_count")
    percent = d.target_percentile
    server = f.scenario == "server" and queries is not None and percent
    settings = {"rules": f.rules, "hand_over": f.hand_over, **d.settings()}
    return {
        "scenario": f.scenario,
        "loadgen_mode": f.mode,
        "target_qps": f.target_qps,
        "achieved_qps": d.samples_per_s,
        "query_latency_p50": _seconds(d.latency_ns(50, per_query)),
        "query_latency_p90": _seconds(d.latency_ns(90, per_query)),
        "query_latency_p99": _seconds(d.latency_ns(99, per_query)),
        "query_latency_es": _seconds(d.early_stopping_ns),
        "latency_percentile": percent * 100 if percent is not None else None,
        "latency_bound": f.latency_bound_s,
        "loadgen_result": d.result,
        "loadgen_errors": len(d.errors),
        "query_count": queries,
        "overlatency_queries": d.get("result_overlatency_query_count") if f.scenario == "server" else None,
        "overlatency_allowed": server_overlatency_allowed(int(queries), percent) if server else None,
        "issue_delay_p99": f.issue_delay_p99_s,
        "loadgen_settings": json.dumps(settings, sort_keys=True, default=str),
        "find_peak_stop": f.find_peak_stop,
        "mlperf_deviations": "; ".join(f.deviations) if f.rules == "mlperf" else None,
        "compliance_test": f.compliance.test if f.compliance is not None else None,
        "compliance_result": f.compliance.result if f.compliance is not None else None,
        **token_columns(f),
    }


def token_columns(f: ScenarioFigures) -> dict[str, Any]:
    """LoadGen's TTFT and TPOT percentiles (s), its tokens per second and the bounds it held them to."""
    if f.tokens is None:
        return {}
    out: dict[str, Any] = {"loadgen_tokens_per_s": f.tokens.tokens_per_s, "ttft_bound": f.token_bounds_s[0],
                           "tpot_bound": f.token_bounds_s[1]}
    for name, values in (("ttft", f.tokens.ttft_ns), ("tpot", f.tokens.tpot_ns)):
        for level in (50, 90, 99):
            ns = values.get(float(level))
            out[f"loadgen_{name}_p{level}"] = ns / 1e9 if ns is not None else None
    return out
