"""VALID / INVALID: whether a row's numbers deserve trust, by rules a reviewer can read in the spec.

Two profiles give the defaults; any rule can be overridden in the job's `verdict:` block.

| rule | quick | rigorous | why |
|---|---|---|---|
| min_duration_s | 1 | 600 | MLPerf inference: `*.Offline.min_duration = 600000` ms (loadgen/mlperf.conf) |
| min_batches | 10 | 1000 | p90 needs >= 10 batches to rest on data; with 1000 the p99 rests on 10 tail batches |
| max_latency_cv | 0.5 | 0.05 | a dedicated GPU at steady clocks jitters by ~1-2 %; 5 % means contention or throttling |
| max_latency_shard_cv | 0.25 | 0.05 | variable-length work (mmlu), in place of max_latency_cv: see below |
| max_acc_gap | acc_tolerance | acc_tolerance | the job's own bound on abs(acc_infer - acc_val) |
| straggler_ratio | 0.5 | 0.9 | identical devices should agree within 10 %; quick only catches a broken worker (variable-length work: speed against the cost fit, below) |
| min_repeats | 1 | 3 | a confidence interval needs repeats; with 2 the t quantile is 12.7 and the CI is useless |
| max_workers_lost | 0 | 0 | a worker taken out or dropped mid-run: the figures are not those of the cluster asked for |

Not a bound one can set: MFU above 1 (more FLOP/s than the device's peak) is always INVALID. It
means the peak is not the one the device ran at (fp32 computed as TF32, a misnamed device) or the
FLOPs are miscounted; either way the row's numbers do not describe what ran.

The duration is the wall span of the measured pass (first shard start to last shard end, across
workers): the time the system was under measurement, which is what MLPerf's min_duration bounds (its
"test duration" runs from the first query issued to the last completed). Summed core seconds would
grow with the number of workers, so 32 workers x 20 s would pass a 600 s rule after 20 s of
measurement; that the core figure rests on enough batches is the batch-count rule's job.
A min rule set to 0 and straggler_ratio 0 switch those rules off; max rules take `.inf` in YAML.

Incidents, in every profile (not rules with bounds: each one alone means the figures describe it):
a GPU slowed by heat or a power brake, an XID error, an uncorrected ECC error or another process on a
GPU while the measured pass ran (workers/measure/device_watch.py; CPUs are not watched), and predictions that
changed when examples of the measured pass ran again at bs 1 on one worker (`invariance_check`).

Stability of variable-length work (tasks whose options say `variable_length`: mmlu). A batch of
2,800-token prompts takes longer than one of 250-token prompts by design, also per token (attention
grows with the square of the length, and a batch has fixed costs), so the CV of batch latency, or
of latency per token, follows the mix of lengths, not the system. What is steady when the system
is: the time the work takes *relative to what its shapes cost*, compared across measurement
windows (perf_analyzer's test: throughput in consecutive windows agrees within a bound). The
windows are the shards: consecutive work on one worker, and the unit the plan, retries and the
shard table already name.
- measured: each batch's rows x padded length and its core seconds;
- fitted: seconds ~ a + b x tokens + c x tokens x length (per batch, per token, attention), a, b,
  c >= 0, least squares on relative error, over all batches of the pass (stats.fit_cost);
- per shard: observed / fitted core seconds, scaled so the worker's median shard is 1 (a worker
  slow throughout is a straggler, judged by its own rule);
- figure: `latency_shard_cv`, the stdev / mean of the shards' ratios weighted by their fitted
  seconds (a one-batch tail shard weighs one batch). On fixed-shape work the fit is a constant and
  this is the CV of per-shard latency. A failing row names the shards furthest from 1.
- stragglers: each worker's fitted / observed core seconds over its shards (1 = as fast as the fit
  of the whole pass says its batches' shapes cost), against the median of the others. Raw items/s
  would follow the lengths a worker drew: one given the 2,800-token prompts does fewer tokens/s on
  a healthy device. A slow worker pulls the fit towards itself only as its share of the batches,
  and the comparison is between workers under one fit, so a 2x slower worker reads about 0.5x.
Bounds. A fraction p of the work at k times its cost gives about
(k - 1) sqrt(p (1 - p)) / (1 + (k - 1) p): for k = 2, 0.25 at p = 8 % and 0.35 at p = 1/3.
quick (0.25) flags a 2x slowdown of a tenth of the run or more, while a shard's average over its
batches keeps the per-batch noise of a CPU shared with other processes below it (steady rounds of
MMLU jobs on this project's 2-core VM: 0.07 to 0.12; busy ones 0.26 to 0.43: docs/BENCHMARKS.md).
rigorous (0.05) is max_latency_cv's bound: shards of 50+ batches average out both a GPU's 1-2 %
jitter and the fit's error on single shapes (kernels cost steps in the length, not a smooth
curve); it has not been measured on a GPU yet. The limit: a slowdown confined to one range of
lengths (only the shards of the subject with the longest prompts) looks like what those prompts
cost, and the fit takes it in; a slowdown that spans lengths does not. Fixed-shape tasks
(masked_lm) keep the strict max_latency_cv rule, and `latency_cv` stays in every row as a
description of the pass.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Mapping

from pydantic import Field

from workers.specs import StrictModel

if TYPE_CHECKING:
    from orchestrator.metrics.row import MetricsRow

Profile = Literal["quick", "rigorous"]
# NVML clock event reasons that mean the GPU was slowed by heat or a power brake (workers/measure/device_watch.py):
# hw_slowdown is the older GPUs' name for the HW thermal / power-brake pair. sw_power_cap (a GPU at its
# power limit, normal under full load), sync_boost, idle and clock settings are reported, not failed.
SLOWDOWN_REASONS = frozenset({"hw_slowdown", "hw_thermal", "hw_power_brake", "sw_thermal"})


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


PROFILES: dict[str, dict[str, float]] = {
    "quick": {"min_duration_s": 1.0, "min_batches": 10, "max_latency_cv": 0.5, "max_latency_shard_cv": 0.25,
              "straggler_ratio": 0.5, "min_repeats": 1, "max_workers_lost": 0},
    "rigorous": {"min_duration_s": 600.0, "min_batches": 1000, "max_latency_cv": 0.05,
                 "max_latency_shard_cv": 0.05, "straggler_ratio": 0.9, "min_repeats": 3, "max_workers_lost": 0},
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
        )


@dataclass(frozen=True)
class VerdictFigures:
    """What the rules look at, for the headline pass (infer, or val when only val ran)."""

    measured_seconds: float | None  # wall span of the pass, s (per repeat when repeated)
    measured_batches: int
    latency_cv: float | None
    acc_gap: float | None  # None when only one pass ran
    worker_items_per_s: Mapping[int, float] = field(default_factory=dict)  # core items/s per worker
    repeats: int = 1
    latency_shard_cv: float | None = None  # variable-length work (then latency_cv is None here)
    shard_latency_ratios: Mapping[str, float] = field(default_factory=dict)  # "shard 3 (worker 0)" -> ratio
    mfu: float | None = None  # above 1 is impossible: the row is INVALID
    peak_flops: float | None = None  # the denominator, for the reason
    precision: str = ""
    worker_rate_unit: str = "items/s"  # "x fitted speed" on variable-length work (stats.LatencyFit.worker_speeds)
    # the GPUs during the measured pass (workers/measure/device_watch.py); empty/None where not watched (CPUs)
    throttle_reasons: tuple[str, ...] = ()
    sm_clock_mhz_min: int | None = None
    xid_errors: tuple[str, ...] = ()
    ecc_errors: int | None = None
    foreign_processes: int | None = None
    foreign_pids: str = ""
    # predictions that changed when examples of the measured pass ran again at bs 1 on one worker
    invariance_flips: int | None = None
    invariance_checked: int | None = None
    workers_lost: tuple[str, ...] = ()  # one line per worker lost: which, where, why


def figures_from_row(row: "MetricsRow", worker_items_per_s: Mapping[int, float], variable_length: bool = False,
                     shard_latency_ratios: Mapping[str, float] | None = None,
                     worker_rate_unit: str = "items/s") -> VerdictFigures:
    """Figures from a MetricsRow. The span is items / p_whole, which is how p_whole was made
    (METRICS.md), so no second source of the same number is needed. Variable-length work is
    judged on latency_shard_cv instead of latency_cv, and its workers are compared by their speed
    against the cost fit (`worker_items_per_s` then holds those, in `worker_rate_unit`)."""
    items, whole = row.items_infer, row.p_infer_whole
    if items is None or not whole:
        items, whole = row.items_val, row.p_val_whole
    return VerdictFigures(
        measured_seconds=items / whole if items is not None and whole else None,
        measured_batches=row.measured_batches,
        latency_cv=None if variable_length else row.latency_cv,
        acc_gap=row.acc_gap,
        worker_items_per_s=dict(worker_items_per_s),
        repeats=row.repeats,
        latency_shard_cv=row.latency_shard_cv if variable_length else None,
        shard_latency_ratios=dict(shard_latency_ratios or {}),
        mfu=row.MFU, peak_flops=row.peak_flops, precision=row.precision_effective,
        worker_rate_unit=worker_rate_unit,
        throttle_reasons=tuple(r for r in (row.throttle_reasons or "").split(",") if r),
        sm_clock_mhz_min=row.sm_clock_mhz_min,
        xid_errors=tuple(x for x in (row.xid_errors or "").split(",") if x),
        ecc_errors=row.ecc_errors,
        foreign_processes=row.foreign_processes,
        foreign_pids=row.foreign_pids or "",
        invariance_flips=row.invariance_flips,
        invariance_checked=row.invariance_checked,
    )


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reasons: list[str]

    @property
    def label(self) -> str:
        return "VALID" if self.valid else "INVALID"

    @property
    def reasons_text(self) -> str:
        """One string for the metrics table (its columns are scalars)."""
        return "; ".join(self.reasons)


def _stragglers(rates: Mapping[int, float], ratio: float, unit: str = "items/s") -> list[str]:
    """Each worker against the median of the *other* workers: a slow worker pulls a median that
    includes it towards itself (with 2 workers the median is their mean, and ratio 0.9 would only
    fire below 0.82 x the other worker)."""
    if ratio <= 0 or len(rates) < 2:
        return []
    reasons = []
    ordered = sorted(rates.values())
    for w, rate in sorted(rates.items()):
        median = _median_without(ordered, rate)
        if rate < ratio * median:
            reasons.append(f"straggler: worker {w} at {rate:.4g} {unit} < {ratio:g} x "
                           f"median of the others {median:.4g}")
    return reasons


def _median_without(ordered: list[float], value: float) -> float:
    """The median of `ordered` (sorted) less one occurrence of `value`, in O(log n): the median of
    the others for every one of 4,096 workers would otherwise sort 4,096 lists (seconds per merge)."""
    gone = bisect.bisect_left(ordered, value)

    def at(j: int) -> float:
        return ordered[j if j < gone else j + 1]

    m = len(ordered) - 1
    return at(m // 2) if m % 2 else (at(m // 2 - 1) + at(m // 2)) / 2


def _off_fit(ratios: Mapping[str, float], bound: float, shown: int = 4) -> str:
    """Where the core time left its fit: the shards furthest from 1."""
    off = sorted(((abs(v - 1), k, v) for k, v in ratios.items() if abs(v - 1) > bound), reverse=True)
    if not off:
        return "no shard is off by more than the bound on its own"
    listed = ", ".join(f"{k} at {v:.2f}x" for _, k, v in off[:shown])
    more = f" and {len(off) - shown} more" if len(off) > shown else ""
    return f"off the fit: {listed}{more} (of {len(ratios)} shards)"


def _device_incidents(f: VerdictFigures) -> list[str]:
    """What happened to the GPUs while they were measured: each makes the figures describe the
    incident rather than the system, whatever the profile."""
    reasons = []
    slowed = [r for r in f.throttle_reasons if r in SLOWDOWN_REASONS]
    if slowed:
        clock = f" (lowest busy SM clock {f.sm_clock_mhz_min} MHz)" if f.sm_clock_mhz_min is not None else ""
        reasons.append(f"GPU clocks slowed during the measured pass: {', '.join(slowed)}{clock}")
    if f.xid_errors:
        reasons.append(f"GPU XID error(s) during the measured pass: {', '.join(f.xid_errors)}")
    if f.ecc_errors:
        reasons.append(f"{f.ecc_errors} uncorrected ECC error(s) on the GPU during the measured pass")
    if f.foreign_processes:
        reasons.append(f"{f.foreign_processes} other process(es) on the GPU(s) during the measured pass: "
                       f"{f.foreign_pids}")
    return reasons


def evaluate(figures: VerdictFigures, rules: Rules) -> Verdict:
    """Every rule that fails adds one reason; a figure that could not be measured skips its rule."""
    f, r, tag = figures, rules, f"({rules.profile})"
    reasons: list[str] = []
    if f.measured_seconds is not None and f.measured_seconds < r.min_duration_s:
        reasons.append(f"measured {f.measured_seconds:.3g} s < min_duration_s {r.min_duration_s:g} {tag}")
    if f.measured_seconds is None and r.min_duration_s > 0:
        reasons.append("no measured pass: duration unknown")
    if f.measured_batches < r.min_batches:
        reasons.append(f"measured {f.measured_batches} batches < min_batches {r.min_batches} {tag}")
    if f.latency_cv is not None and f.latency_cv > r.max_latency_cv:
        reasons.append(f"batch latency CV {f.latency_cv:.3g} > max_latency_cv {r.max_latency_cv:g} {tag}")
    if f.latency_shard_cv is not None and f.latency_shard_cv > r.max_latency_shard_cv:
        reasons.append(f"core time off its fitted token cost: shard CV {f.latency_shard_cv:.3g} > "
                       f"max_latency_shard_cv {r.max_latency_shard_cv:g} {tag}; "
                       + _off_fit(f.shard_latency_ratios, r.max_latency_shard_cv))
    if f.acc_gap is not None and f.acc_gap > r.max_acc_gap + 1e-12:
        reasons.append(f"accuracy gap infer vs val {f.acc_gap:.4f} > max_acc_gap {r.max_acc_gap:g}")
    reasons += _stragglers(f.worker_items_per_s, r.straggler_ratio, f.worker_rate_unit)
    if f.mfu is not None and f.mfu > 1:
        peak = f" of {f.peak_flops / 1e12:.4g} TFLOP/s" if f.peak_flops else ""
        reasons.append(f"MFU {f.mfu:.3g} > 1: faster than the {f.precision} peak{peak}; the peak does not match "
                       "what ran (fp32 computed as TF32?) or the FLOPs are miscounted")
    reasons += _device_incidents(f)
    if f.invariance_flips:
        reasons.append(f"invariance: {f.invariance_flips} of {f.invariance_checked} predictions changed when run again "
                       "at bs 1 on one worker (invariance.parquet in the run folder lists them)")
    if f.repeats < r.min_repeats:
        reasons.append(f"{f.repeats} repeat(s) < min_repeats {r.min_repeats} {tag}")
    if len(f.workers_lost) > r.max_workers_lost:
        reasons.append(f"{len(f.workers_lost)} worker(s) lost > max_workers_lost {r.max_workers_lost}: "
                       + "; ".join(f.workers_lost))
    return Verdict(valid=not reasons, reasons=reasons)
