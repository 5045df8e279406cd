"""Shard results -> one metrics row. METRICS.md's merge rules, in code, and nowhere else.

- accuracy = sum(correct) / sum(scored), never an average of shard accuracies;
- p_*_core = sum over workers of items_w / core_seconds_w (workers run concurrently);
- p_*_whole = sum(items) / (last pass end - first pass start) across workers;
- mem = the largest worker peak;
- MFU = FLOPs/item x p_infer_core / (sum of the peaks of the devices used);
- a shard retried after a failure is counted once (the attempt that completed).
With `repeats: R` the measured pass ran R times on fresh workers: its p_*_core and p_*_whole are
the mean over repeats with a 95 % Student-t interval; counts and accuracy come from the first
repeat (every repeat sees the same data, so they agree), and batch latencies pool all repeats.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from orchestrator.metrics.stats import (
    ShardRate, coefficient_of_variation, mean_ci, shard_rates_from_results, summarize_latencies, worker_core_rates,
)
from orchestrator.metrics.verdict import evaluate, figures_from_row
from workers.contract import ShardResult, WorkerInfo

GIB = float(1 << 30)


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


def headline_records(row, results: list[ShardResult]) -> list[dict[str, Any]]:
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

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    @property
    def flops_per_item(self) -> float | None:
        return self.flops / self.items if self.items else None


def pass_figures(results: list[ShardResult]) -> PassFigures | None:
    """Cluster figures of one pass (one repeat) from its deduplicated shard results."""
    if not results:
        return None
    items = sum(r.items for r in results)
    span = max(r.end_ts for r in results) - min(r.start_ts for r in results)
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
    )


def mfu(flops_per_item: float | None, core_items_per_s: float | None, peak_flops_total: float | None) -> float | None:
    if not flops_per_item or not core_items_per_s or not peak_flops_total:
        return None
    return flops_per_item * core_items_per_s / peak_flops_total


def format_acc(infer: float | None, val: float | None) -> str:
    return f"{'-' if infer is None else f'{infer:.4f}'}/{'-' if val is None else f'{val:.4f}'}"


def devices_label(infos: list[WorkerInfo]) -> str:
    """'2x NVIDIA A100-SXM4-40GB' style summary of the devices used."""
    counts: dict[str, int] = defaultdict(int)
    for info in infos:
        counts[info.device_name] += 1
    return ", ".join(f"{n}x {name}" for name, n in sorted(counts.items()))


@dataclass(frozen=True)
class Measured:
    """The measured pass over its repeats: first-repeat figures, throughput means and CIs."""

    first: PassFigures
    repeats: int
    core: Any  # stats.MeanCI
    whole: Any
    batch_core_seconds: tuple[float, ...]
    batch_items: tuple[int, ...]
    worker_rates: dict[int, float]
    records: tuple[dict[str, Any], ...]


def measured(by_repeat: dict[int, list[ShardResult]]) -> Measured | None:
    figures = {r: pass_figures(results) for r, results in sorted(by_repeat.items())}
    figures = {r: f for r, f in figures.items() if f is not None}
    if not figures:
        return None
    first_repeat = min(figures)
    return Measured(
        first=figures[first_repeat],
        repeats=len(figures),
        core=mean_ci([f.core_items_per_s for f in figures.values()]),
        whole=mean_ci([f.whole_items_per_s for f in figures.values()]),
        batch_core_seconds=tuple(t for f in figures.values() for t in f.batch_core_seconds),
        batch_items=tuple(n for f in figures.values() for n in f.batch_items),
        records=tuple(rec for r in by_repeat[first_repeat] for rec in r.records),
        worker_rates=worker_core_rates(shard_rates_from_results(by_repeat[first_repeat], by_repeat[first_repeat][0].pass_name)),
    )


def per_item_cv(batch_seconds: tuple[float, ...], batch_items: tuple[int, ...]) -> float | None:
    """CV of core seconds per item across batches. For fixed-size batches this is the CV of batch
    latency; for batches of varying size (MMLU prompts of 300 to 3000 tokens, a short last batch)
    it is the jitter that is left once the work of each batch is accounted for."""
    if len(batch_items) != len(batch_seconds):
        return coefficient_of_variation(batch_seconds)
    return coefficient_of_variation([t / n for t, n in zip(batch_seconds, batch_items) if n])


def task_columns(spec, head: Measured) -> dict[str, Any]:
    """Columns only MMLU has: questions/s, the scoring variant, how many prompts lost shots."""
    if spec.task.name != "mmlu":
        return {}
    records = head.records
    return {
        "questions_per_s": head.first.core_examples_per_s,
        "scoring": spec.task.scoring,
        "shots": spec.task.shots,
        "prompts_short_of_shots": sum(1 for r in records if r.get("shots_used", spec.task.shots) < spec.task.shots),
        "prompts_truncated": sum(1 for r in records if r.get("truncated")),
    }


def merge(
    *,
    spec,
    run_id: str,
    results: list[ShardResult],
    infos: list[WorkerInfo],
    e2e_seconds: float,
    retries: int,
    item_unit: str,
    resumed: bool = False,
    sweep_id: str | None = None,
    timestamp: datetime | None = None,
) -> "MetricsRow":
    from orchestrator.metrics.row import MetricsRow

    final = completed(results)
    by_pass: dict[str, dict[int, list[ShardResult]]] = {"val": defaultdict(list), "infer": defaultdict(list)}
    for (pass_name, repeat, _), r in sorted(final.items()):
        by_pass[pass_name][repeat].append(r)
    val_m, infer_m = measured(by_pass["val"]), measured(by_pass["infer"])
    val, infer = (val_m.first if val_m else None), (infer_m.first if infer_m else None)
    head_m = infer_m or val_m
    every = list(final.values())

    peak_result = max(every, key=lambda r: r.peak_mem_bytes or 0)
    mem_peak = peak_result.peak_mem_bytes
    peaks = [info.peak_flops for info in infos]
    peak_total = sum(peaks) if peaks and all(p for p in peaks) else None
    acc_val = val.accuracy if val else None
    acc_infer = infer.accuracy if infer else None
    gap = abs(acc_infer - acc_val) if acc_infer is not None and acc_val is not None else None
    latency = summarize_latencies(head_m.batch_core_seconds)
    p_infer_core = infer_m.core.mean if infer_m else None
    builds = [info.build for info in infos if info.build is not None]
    versions = infos[0].versions if infos else {}
    row = MetricsRow(
        run_id=run_id,
        sweep_id=sweep_id,
        timestamp=(timestamp or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        job=spec.name,
        task=spec.task.name,
        model=spec.model.label,
        data=spec.data.label,
        engine=spec.engine.name,
        item_unit=item_unit,
        precision=spec.precision,
        bs=spec.bs,
        byte_per_batch=max(r.bytes_per_batch for r in every),
        mem=mem_peak / GIB if mem_peak is not None else None,
        e2e_time=e2e_seconds,
        p_val_whole=val_m.whole.mean if val_m else None,
        p_val_core=val_m.core.mean if val_m else None,
        p_infer_whole=infer_m.whole.mean if infer_m else None,
        p_infer_core=p_infer_core,
        infer_time=1.0 / p_infer_core if p_infer_core else None,
        acc=format_acc(acc_infer, acc_val),
        MFU=mfu(infer.flops_per_item, p_infer_core, peak_total) if infer else None,
        precision_effective=infos[0].precision_effective if infos else spec.precision,
        seq_len=spec.seq_len,
        workers=len(infos),
        nodes=len({info.node_id for info in infos}),
        devices=devices_label(infos),
        mem_total=peak_result.mem_total_bytes / GIB if peak_result.mem_total_bytes else None,
        mem_source=peak_result.mem_source,
        examples=head_m.first.examples,
        items_val=val.items if val else None,
        items_infer=infer.items if infer else None,
        scored_val=val.scored if val else None,
        scored_infer=infer.scored if infer else None,
        correct_val=val.correct if val else None,
        correct_infer=infer.correct if infer else None,
        acc_val=acc_val,
        acc_infer=acc_infer,
        acc_gap=gap,
        acc_flagged=gap is not None and gap > spec.acc_tolerance + 1e-12,
        shards=len({shard for (_, repeat, shard) in final if repeat == 0}),
        retries=retries,
        resumed=resumed,
        load_time=max((info.load_seconds for info in infos), default=0.0),
        data_time=max((info.data_seconds for info in infos), default=0.0),
        build_time=max((b.build_seconds for b in builds), default=0.0),
        engine_cache_hit=all(b.cache_hit for b in builds) if builds else None,
        engine_bytes=builds[0].engine_bytes if builds else None,
        engine_hash=builds[0].engine_hash if builds else None,
        h2d_time=infer.h2d_seconds if infer else None,
        warmup_batches=spec.warmup,
        measured_batches=latency.count,
        latency_mean=latency.mean,
        latency_p50=latency.p50,
        latency_p90=latency.p90,
        latency_p99=latency.p99,
        latency_cv=per_item_cv(head_m.batch_core_seconds, head_m.batch_items),
        repeats=head_m.repeats,
        p_infer_core_ci_low=infer_m.core.low if infer_m else None,
        p_infer_core_ci_high=infer_m.core.high if infer_m else None,
        p_infer_whole_ci_low=infer_m.whole.low if infer_m else None,
        p_infer_whole_ci_high=infer_m.whole.high if infer_m else None,
        flops_per_item=infer.flops_per_item if infer else None,
        peak_flops=peak_total,
        torch_version=versions.get("torch", ""),
        ray_version=versions.get("ray", ""),
        transformers_version=versions.get("transformers", ""),
        python_version=versions.get("python", ""),
        cuda_version=versions.get("cuda", ""),
        driver_version=versions.get("nvidia_driver", ""),
        **task_columns(spec, head_m),
    )
    verdict = evaluate(figures_from_row(row, head_m.worker_rates), spec.verdict.rules(spec.acc_tolerance))
    return row.model_copy(update={"verdict": verdict.label, "verdict_reasons": verdict.reasons_text,
                                  "verdict_profile": spec.verdict.profile})
