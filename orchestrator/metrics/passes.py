"""The measured pass's figures: METRICS.md's rules for throughput, accuracy and batch latency.

- accuracy = sum(correct) / sum(scored), never an average of shard accuracies;
- p_*_core = sum over workers of items_w / core_seconds_w (workers run concurrently);
- p_*_whole = sum(items) / (last pass end - first pass start) across workers, less the time no
  driver was running within that span (a run resumed after its driver died);
- warmup_batches = the warm-up batches the measured pass's shards recorded, summed;
- byte_per_batch = the measured (infer) pass's, never the val pass's;
- padding_share = padded tokens / computed tokens over the measured pass's batches (first repeat),
  each batch computing rows x its longest row's length (right padding to the longest).
With `repeats: R` the measured pass ran R times on fresh workers: its p_*_core and p_*_whole are
the mean over repeats with a 95 % Student-t interval; counts and accuracy come from the first
repeat (every repeat sees the same data, so they agree), and batch latencies pool all repeats.
The work a LoadGen test hands the workers (batches of samples) is a pass too, read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from orchestrator.metrics.cost_fit import (
    LatencyFit,
    ShardRate,
    batch_costs,
    fit_latency,
    shard_rates_from_results,
    worker_core_rates,
)
from orchestrator.metrics.stats import MeanCI, coefficient_of_variation, mean_ci, summarize_latencies
from orchestrator.spec import EngineJob
from workers.contract import ShardResult


def completed(results: list[ShardResult]) -> dict[tuple[str, int, int], ShardResult]:
    """One result per (pass, repeat, shard): the last attempt that succeeded."""
    chosen: dict[tuple[str, int, int], ShardResult] = {}
    for r in results:
        if r.error is not None:
            continue
        key = (r.pass_name, r.repeat, r.shard_id)
        if key not in chosen or r.attempt > chosen[key].attempt:
            chosen[key] = r
    return chosen


def headline_records(row: MetricsRow, results: list[ShardResult]) -> list[dict[str, Any]]:
    """Per-example records (MMLU predictions) of the measured pass's first repeat, in shard order."""
    head = "infer" if row.items_infer is not None else "val"
    return [rec for (p, repeat, _), r in sorted(completed(results).items()) if p == head and repeat == 0
            for rec in r.records]


@dataclass(frozen=True)
class PassFigures:
    examples: int
    items: int
    scored: int
    correct: int
    flops: float
    core_items_per_s: float
    core_examples_per_s: float
    whole_items_per_s: float
    h2d_seconds: float
    batch_core_seconds: tuple[float, ...]
    batch_items: tuple[int, ...]
    warmup_batches: int
    worker_ids: frozenset[int]  # the workers that ran a shard of this pass

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    @property
    def flops_per_item(self) -> float | None:
        return self.flops / self.items if self.items else None


Pause = tuple[float, float]  # (from, to) epoch seconds when no driver was running the run


def driver_span(start: float, end: float, pauses: tuple[Pause, ...]) -> float:
    """Seconds from `start` to `end` during which a driver was running: the pauses cut out."""
    paused = sum(max(0.0, min(end, to) - max(start, since)) for since, to in pauses)
    return end - start - paused


def pass_figures(results: list[ShardResult], pauses: tuple[Pause, ...] = ()) -> PassFigures | None:
    """Cluster figures of one pass (one repeat) from its deduplicated shard results."""
    if not results:
        return None
    items = sum(r.items for r in results)
    span = driver_span(min(r.start_ts for r in results), max(r.end_ts for r in results), pauses)
    ordered = sorted(results, key=lambda r: r.shard_id)
    return PassFigures(
        examples=sum(r.examples for r in results),
        items=items,
        scored=sum(r.scored for r in results),
        correct=sum(r.correct for r in results),
        flops=sum(r.flops for r in results),
        core_items_per_s=sum(worker_core_rates(shard_rates_from_results(results, results[0].pass_name)).values()),
        core_examples_per_s=sum(worker_core_rates(
            ShardRate(r.worker_id, r.node_id, r.examples, r.core_seconds) for r in results).values()),
        whole_items_per_s=items / span if span > 0 else 0.0,
        h2d_seconds=sum(r.h2d_seconds for r in results),
        batch_core_seconds=tuple(t for r in ordered for t in r.batch_core_seconds),
        batch_items=tuple(n for r in ordered for n in r.batch_items),
        warmup_batches=sum(r.warmup_batches for r in results),
        worker_ids=frozenset(r.worker_id for r in results),
    )


def format_acc(infer: float | None, val: float | None) -> str:
    return f"{'-' if infer is None else f'{infer:.4f}'}/{'-' if val is None else f'{val:.4f}'}"


@dataclass(frozen=True)
class Measured:
    """The measured pass over its repeats (fresh workers each): per-repeat figures, and what the row
    takes from them. Counts, accuracy and records come from the first repeat (every repeat sees the
    same data); throughput is the mean over repeats with its CI; batch latencies pool all repeats."""

    repeats_figures: tuple[PassFigures, ...]  # in repeat order
    first_results: tuple[ShardResult, ...]  # the first repeat's shard results
    all_results: tuple[ShardResult, ...] = ()  # every repeat's

    @property
    def first(self) -> PassFigures:
        return self.repeats_figures[0]

    @property
    def repeats(self) -> int:
        return len(self.repeats_figures)

    @property
    def core(self) -> MeanCI:
        return mean_ci([f.core_items_per_s for f in self.repeats_figures])

    @property
    def whole(self) -> MeanCI:
        return mean_ci([f.whole_items_per_s for f in self.repeats_figures])

    @property
    def batch_core_seconds(self) -> tuple[float, ...]:
        return tuple(t for f in self.repeats_figures for t in f.batch_core_seconds)

    @property
    def batch_items(self) -> tuple[int, ...]:
        return tuple(n for f in self.repeats_figures for n in f.batch_items)

    @property
    def warmup_batches(self) -> int:
        """Warm-up batches run before the batches of `batch_core_seconds` (every repeat's workers warm up)."""
        return sum(f.warmup_batches for f in self.repeats_figures)

    @property
    def records(self) -> tuple[dict[str, Any], ...]:
        return tuple(rec for r in self.first_results for rec in r.records)

    @property
    def worker_rates(self) -> dict[int, float]:
        """Core items/s of each worker in the first repeat (the straggler rule's input)."""
        return worker_core_rates(shard_rates_from_results(self.first_results, self.first_results[0].pass_name))


def measured(by_repeat: dict[int, list[ShardResult]], pauses: tuple[Pause, ...] = ()) -> Measured | None:
    kept = [(repeat, results) for repeat, results in sorted(by_repeat.items()) if results]
    if not kept:
        return None
    return Measured(tuple(pass_figures(results, pauses) for _, results in kept), tuple(kept[0][1]),
                    tuple(r for _, results in kept for r in results))


def latency_fit(spec: EngineJob, head: Measured) -> LatencyFit | None:
    """The cost fit of the headline pass's batch latencies, for variable-length tasks only."""
    return fit_latency(batch_costs(head.all_results)) if spec.task.variable_length else None


def worker_rates(spec: EngineJob, head: Measured, fit: LatencyFit | None) -> tuple[dict[int, float], str]:
    """What the straggler rule compares, and its unit: core items/s on fixed-shape work; on
    variable-length work each worker's speed against the cost fit (none without a fit: raw
    tokens/s would call a worker that drew long prompts slow)."""
    if not spec.task.variable_length:
        return head.worker_rates, "items/s"
    return (fit.worker_speeds(head.first_results[0].repeat) if fit else {}), "x fitted speed"


def shard_labels(fit: LatencyFit | None) -> dict[str, float]:
    """Observed / fitted core time of each shard, labelled by where it ran, for the verdict's reasons."""
    return {s.label: s.ratio for s in fit.shards} if fit else {}


def per_item_cv(batch_seconds: tuple[float, ...], batch_items: tuple[int, ...]) -> float | None:
    """CV of core seconds per item across batches. For fixed-size batches this is the CV of batch
    latency; for batches of varying size (MMLU prompts of 300 to 3000 tokens, a short last batch)
    it is the jitter that is left once the work of each batch is accounted for."""
    if len(batch_items) != len(batch_seconds):
        return coefficient_of_variation(batch_seconds)
    return coefficient_of_variation([t / n for t, n in zip(batch_seconds, batch_items) if n])


def padding_share(results: Sequence[ShardResult]) -> float | None:
    """Share of the tokens the batches computed that were padding: 1 - real tokens / (rows x padded
    length), summed over every batch of `results`. None when a result did not record its batches'
    real tokens (saved before they were recorded) or nothing was computed."""
    computed = sum(rows * length for r in results for rows, length in zip(r.batch_rows, r.batch_seq_lens))
    if not computed or any(len(r.batch_tokens) != len(r.batch_rows) for r in results):
        return None
    return 1.0 - sum(n for r in results for n in r.batch_tokens) / computed


def task_columns(spec: EngineJob, head: Measured) -> dict[str, Any]:
    """Columns only MMLU has: questions/s, the scoring variant and its prompt, how many prompts lost shots."""
    if spec.task.name != "mmlu":
        return {}
    records = head.records
    return {
        "questions_per_s": head.first.core_examples_per_s,
        "scoring": spec.task.scoring,
        "prompt_format": ", ".join(sorted({str(r["prompt_format"]) for r in records if "prompt_format" in r})) or None,
        "shots": spec.task.shots,
        "prompts_short_of_shots": sum(1 for r in records if r.get("shots_used", spec.task.shots) < spec.task.shots),
        "prompts_truncated": sum(1 for r in records if r.get("truncated")),
    }


def accuracy_columns(val: PassFigures | None, infer: PassFigures | None, tolerance: float) -> dict[str, Any]:
    """"acc" (infer/val), counts of both passes, and the gap that flags an engine that is wrong."""
    acc_val = val.accuracy if val else None
    acc_infer = infer.accuracy if infer else None
    gap = abs(acc_infer - acc_val) if acc_infer is not None and acc_val is not None else None
    return {
        "acc": format_acc(acc_infer, acc_val),
        "items_val": val.items if val else None, "items_infer": infer.items if infer else None,
        "scored_val": val.scored if val else None, "scored_infer": infer.scored if infer else None,
        "correct_val": val.correct if val else None, "correct_infer": infer.correct if infer else None,
        "acc_val": acc_val, "acc_infer": acc_infer, "acc_gap": gap,
        "acc_flagged": gap is not None and gap > tolerance + 1e-12,
    }


def throughput_columns(val_m: Measured | None, infer_m: Measured | None) -> dict[str, Any]:
    """p_*_core, p_*_whole (means over repeats, with the infer pass's 95 % intervals) and infer_time."""
    p_infer_core = infer_m.core.mean if infer_m else None
    return {
        "p_val_whole": val_m.whole.mean if val_m else None,
        "p_val_core": val_m.core.mean if val_m else None,
        "p_infer_whole": infer_m.whole.mean if infer_m else None,
        "p_infer_core": p_infer_core,
        "infer_time": 1.0 / p_infer_core if p_infer_core else None,
        "repeats": (infer_m or val_m).repeats,
        "p_infer_core_ci_low": infer_m.core.low if infer_m else None,
        "p_infer_core_ci_high": infer_m.core.high if infer_m else None,
        "p_infer_whole_ci_low": infer_m.whole.low if infer_m else None,
        "p_infer_whole_ci_high": infer_m.whole.high if infer_m else None,
        "h2d_time": infer_m.first.h2d_seconds if infer_m else None,
    }


def latency_columns(spec: EngineJob, head: Measured, fit: LatencyFit | None) -> dict[str, Any]:
    """Batch counts and the per-batch core latency summary of the headline pass (with the residual
    spread around the cost fit for variable-length work)."""
    latency = summarize_latencies(head.batch_core_seconds)
    return {
        "warmup_batches": head.warmup_batches,
        "measured_batches": latency.count,
        "latency_mean": latency.mean, "latency_p50": latency.p50, "latency_p90": latency.p90,
        "latency_p99": latency.p99,
        "latency_cv": per_item_cv(head.batch_core_seconds, head.batch_items),
        "latency_shard_cv": fit.shard_cv if fit else None,
        "padding_share": padding_share(head.first_results),
    }
