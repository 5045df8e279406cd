"""LoadGen's figures -> the row's scenario columns and LoadGen's rule set. The one place they are computed.

- `achieved_qps`: LoadGen's completed samples per second (Server), or its "QPS w/ loadgen overhead"
  (SingleStream: one sample per query); MultiStream reports no rate (its metric is the p99 query
  latency), so it stays blank.
- `query_latency_p50/p90/p99`: LoadGen's percentiles in s: per sample for Server and SingleStream
  (a query is one sample), per query for MultiStream.
- `latency_bound`: the server bound LoadGen enforced; for the streams, the job's bound, which the
  scenario's headline percentile (p90 single_stream, p99 multi_stream) is held to.
- `loadgen_settings`: LoadGen's "Test Parameters Used", the rules, and how batches reached the
  workers (`hand_over`: direct, actor_call or in_process).
- `loadgen_rules`: LoadGen's rule set for the row's one verdict (orchestrator/metrics/verdict.py,
  which joins it with the incidents every row is judged on): a reason when LoadGen says INVALID
  (its reasons, in its words), when a stream's headline percentile is above the job's bound, or when
  an accuracy run did not score every sample once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.metrics.verdict import RuleSet
from orchestrator.modes.loadgen.settings import HEADLINE_PERCENTILE
from orchestrator.modes.loadgen.summary import LoadGenSummary, TokenLatencies


@dataclass(frozen=True)
class ScenarioFigures:
    """What the row is made from: the headline LoadGen test and how it was asked for."""

    scenario: str
    mode: str
    rules: str
    summary: LoadGenSummary
    target_qps: float | None
    latency_bound_s: float | None
    examples: int  # the dataset's size (accuracy mode must score each once)
    scored_examples: int  # examples the accepted batches ran
    note: str = ""  # a reason of raybench's own (find_peak's search found no peak)
    hand_over: str = ""  # how batches reached the workers (Target.hand_over)
    find_peak_stop: str | None = None  # why find_peak's search stopped (None outside find_peak)
    tokens: TokenLatencies | None = None  # LoadGen's TTFT/TPOT figures (use_token_latencies)
    token_bounds_s: tuple[float | None, float | None] = (None, None)  # the TTFT and TPOT bounds LoadGen enforced


def _seconds(summary: LoadGenSummary, percentile: float) -> float | None:
    ns = summary.latency_ns.get(float(percentile))
    return ns / 1e9 if ns is not None else None


def achieved_qps(summary: LoadGenSummary) -> float | None:
    if summary.completed_samples_per_s is not None:
        return summary.completed_samples_per_s
    return summary.qps_with_loadgen_overhead


def loadgen_rules(f: ScenarioFigures) -> RuleSet:
    """LoadGen's verdict on the test, and the stream bound and accuracy count raybench holds it to."""
    reasons = [f.note] if f.note else []
    if f.mode == "accuracy":
        if f.scored_examples != f.examples:
            reasons.append(f"accuracy run scored {f.scored_examples} of {f.examples} samples")
    elif f.summary.result != "VALID":
        reasons.append(f.summary.invalid_reason() or "LoadGen printed no result")
    headline = HEADLINE_PERCENTILE[f.scenario]
    observed = _seconds(f.summary, headline)
    bound = f.latency_bound_s
    if f.scenario != "server" and bound is not None and observed is not None and observed > bound:
        reasons.append(f"p{headline} query latency {observed * 1e3:.4g} ms > latency_bound_ms {bound * 1e3:g}")
    return RuleSet(f"loadgen-{f.rules}", tuple(reasons))


def scenario_columns(f: ScenarioFigures) -> dict[str, Any]:
    """The row's LoadGen columns (its verdict is `loadgen_rules`', joined with the rest by the merge)."""
    settings = {"rules": f.rules, "hand_over": f.hand_over, **f.summary.parameters}
    return {
        "scenario": f.scenario,
        "loadgen_mode": f.mode,
        "target_qps": f.target_qps,
        "achieved_qps": achieved_qps(f.summary),
        "query_latency_p50": _seconds(f.summary, 50),
        "query_latency_p90": _seconds(f.summary, 90),
        "query_latency_p99": _seconds(f.summary, 99),
        "latency_bound": f.latency_bound_s,
        "loadgen_result": f.summary.result,
        "loadgen_settings": json.dumps(settings, sort_keys=True),
        "find_peak_stop": f.find_peak_stop,
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
