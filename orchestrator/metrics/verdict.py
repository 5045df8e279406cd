"""VALID / INVALID: whether a row's numbers deserve trust. One evaluation for every way to run.

A row's verdict joins two kinds of reason, and nothing replaces another:
- incidents, in every mode and profile: a GPU slowed by heat or a power brake, an XID or an
  uncorrected ECC error, another process on a GPU while it was measured (workers/measure/device_watch.py),
  MFU above 1, predictions that changed at bs 1 (`invariance_check`), more workers lost than
  `max_workers_lost`;
- the rule set of the mode that made the row (`RuleSet`): Offline's pass rules (`pass_rules`:
  duration, batches, latency CV or shard CV, accuracy gap, stragglers, repeats), LoadGen's
  (orchestrator/modes/loadgen/columns.py), and whatever a later mode brings.
The row's `verdict_profile` names the rule sets, "+"-joined. Why each bound is what it is, and how
variable-length work is judged against a cost fit: docs/measurement.md.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

from orchestrator.spec.verdict import Rules

if TYPE_CHECKING:
    from orchestrator.metrics.row import MetricsRow

# NVML clock event reasons that mean the GPU was slowed by heat or a power brake (workers/measure/device_watch.py):
# hw_slowdown is the older GPUs' name for the HW thermal / power-brake pair. sw_power_cap (a GPU at its
# power limit, normal under full load), sync_boost, idle and clock settings are reported, not failed.
SLOWDOWN_REASONS = frozenset({"hw_slowdown", "hw_thermal", "hw_power_brake", "sw_thermal"})


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
class RuleSet:
    """What one mode's own rules found: its name (for `verdict_profile`) and the reasons they failed."""

    name: str
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reasons: list[str]
    profile: str = ""  # the rule sets that judged the row, "+"-joined

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


def pass_rules(figures: VerdictFigures, rules: Rules) -> RuleSet:
    """Offline's rules for a measured pass: long enough, enough batches, steady, accurate, no
    straggler, enough repeats. A figure that could not be measured skips its rule."""
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
    if f.repeats < r.min_repeats:
        reasons.append(f"{f.repeats} repeat(s) < min_repeats {r.min_repeats} {tag}")
    return RuleSet(r.profile, tuple(reasons))


def incidents(figures: VerdictFigures, rules: Rules) -> list[str]:
    """What invalidates a row in every mode and profile: the figures describe the incident, not the system."""
    f = figures
    reasons: list[str] = []
    if f.mfu is not None and f.mfu > 1:
        peak = f" of {f.peak_flops / 1e12:.4g} TFLOP/s" if f.peak_flops else ""
        reasons.append(f"MFU {f.mfu:.3g} > 1: faster than the {f.precision} peak{peak}; the peak does not match "
                       "what ran (fp32 computed as TF32?) or the FLOPs are miscounted")
    reasons += _device_incidents(f)
    if f.invariance_flips:
        reasons.append(f"invariance: {f.invariance_flips} of {f.invariance_checked} predictions changed when run again "
                       "at bs 1 on one worker (invariance.parquet in the run folder lists them)")
    if len(f.workers_lost) > rules.max_workers_lost:
        reasons.append(f"{len(f.workers_lost)} worker(s) lost > max_workers_lost {rules.max_workers_lost}: "
                       + "; ".join(f.workers_lost))
    return reasons


def evaluate(figures: VerdictFigures, rules: Rules, rule_sets: Sequence[RuleSet]) -> Verdict:
    """The row's verdict: the reasons of the mode's rule sets, then the incidents (every failed rule
    adds one). Offline passes `[pass_rules(figures, rules)]`; LoadGen its own set. The profile names
    the verdict profile (whose bounds the incidents use) and each rule set: "quick",
    "quick+loadgen-mlperf"."""
    reasons = [reason for s in rule_sets for reason in s.reasons] + incidents(figures, rules)
    names = dict.fromkeys([rules.profile, *(s.name for s in rule_sets)])
    return Verdict(valid=not reasons, reasons=reasons, profile="+".join(names))
