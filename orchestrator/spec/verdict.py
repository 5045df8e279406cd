"""The job's `verdict:` block and the bounds each profile gives its rules.

Two profiles give the defaults; any rule can be overridden in the job. Where each default comes
from (MLPerf's 600 s minimum, p90 on ten batches, a GPU's 1-2 % jitter) is in docs/measurement.md;
the rules themselves are judged in orchestrator/metrics/verdict.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from workers.specs import StrictModel

Profile = Literal["quick", "rigorous"]


@dataclass(frozen=True)
class Rules:
    """Resolved bounds: the profile's defaults with the spec's overrides applied."""

    profile: Profile
    min_duration_s: float
    min_batches: int
    max_latency_cv: float
    max_acc_gap: float
    straggler_ratio: float
    min_repeats: int
    max_latency_shard_cv: float = float("inf")  # variable-length work only
    max_workers_lost: int = 0
    # endpoint jobs: did the clients keep to their schedule, and do repeats agree
    max_schedule_lag_ms: float = 10.0
    min_sent_ratio: float = 0.95
    max_repeat_cv: float = 0.25


PROFILES: dict[str, dict[str, float]] = {
    "quick": {"min_duration_s": 1.0, "min_batches": 10, "max_latency_cv": 0.5, "max_latency_shard_cv": 0.25,
              "straggler_ratio": 0.5, "min_repeats": 1, "max_workers_lost": 0,
              "max_schedule_lag_ms": 10.0, "min_sent_ratio": 0.95, "max_repeat_cv": 0.25},
    "rigorous": {"min_duration_s": 600.0, "min_batches": 1000, "max_latency_cv": 0.05,
                 "max_latency_shard_cv": 0.05, "straggler_ratio": 0.9, "min_repeats": 3, "max_workers_lost": 0,
                 "max_schedule_lag_ms": 1.0, "min_sent_ratio": 0.99, "max_repeat_cv": 0.1},
}


class VerdictSpec(StrictModel):
    """The job's `verdict:` block. Unset rules take the profile's default."""

    profile: Profile = Field("quick", description="where unset rules take their defaults: quick or rigorous")
    min_duration_s: float | None = Field(None, ge=0, description="min wall span of the measured pass, s")
    min_batches: int | None = Field(None, ge=0, description="min measured (non-warm-up) batches of the pass")
    max_latency_cv: float | None = Field(None, gt=0, description="max stdev/mean of per-batch core latency")
    max_latency_shard_cv: float | None = Field(
        None, gt=0, description="variable-length work: max stdev/mean of observed / fitted core time per shard"
    )
    max_acc_gap: float | None = Field(None, ge=0, description="max abs(acc_infer - acc_val); default: acc_tolerance")
    straggler_ratio: float | None = Field(
        None, ge=0, le=1, description="a worker below this x the median worker's core items/s is a straggler"
    )
    min_repeats: int | None = Field(None, ge=1, description="min repeats of the measured pass")
    max_workers_lost: int | None = Field(
        None, ge=0, description="workers the run may lose (taken out after failures, or died for good) and stay VALID"
    )
    max_schedule_lag_ms: float | None = Field(
        None, gt=0, description="endpoint jobs: max p99 of actual minus scheduled send, ms; above it the client, "
        "not the server, was the bottleneck")
    min_sent_ratio: float | None = Field(
        None, gt=0, le=1, description="endpoint jobs: min rate the clients sent at / the rate their schedule asked")
    max_repeat_cv: float | None = Field(
        None, gt=0, description="endpoint jobs with repeats: max stdev/mean across repeats of requests/s and of "
        "TTFT p50 and p99; above it the repeats disagree")

    def rules(self, acc_tolerance: float) -> Rules:
        """The job's acc_tolerance is the accuracy bound unless max_acc_gap overrides it."""
        def pick(name: str) -> float:
            value = getattr(self, name)
            return PROFILES[self.profile][name] if value is None else value

        return Rules(
            profile=self.profile,
            min_duration_s=float(pick("min_duration_s")),
            min_batches=int(pick("min_batches")),
            max_latency_cv=float(pick("max_latency_cv")),
            max_latency_shard_cv=float(pick("max_latency_shard_cv")),
            max_acc_gap=acc_tolerance if self.max_acc_gap is None else self.max_acc_gap,
            straggler_ratio=float(pick("straggler_ratio")),
            min_repeats=int(pick("min_repeats")),
            max_workers_lost=int(pick("max_workers_lost")),
            max_schedule_lag_ms=float(pick("max_schedule_lag_ms")),
            min_sent_ratio=float(pick("min_sent_ratio")),
            max_repeat_cv=float(pick("max_repeat_cv")),
        )
