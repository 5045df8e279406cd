"""Shard results -> one metrics row. METRICS.md's merge rules, in code, and nowhere else.

- accuracy = sum(correct) / sum(scored), never an average of shard accuracies;
- p_*_core = sum over workers of items_w / core_seconds_w (workers run concurrently);
- p_*_whole = sum(items) / (last pass end - first pass start) across workers, less the time no
  driver was running within that span (a run resumed after its driver died);
- mem = the largest worker peak;
- MFU = FLOPs/item x p_infer_core / (sum of the peaks of the devices that ran the infer pass),
  each physical device (node + GPU UUID) counted once: two workers on half a GPU each share one peak;
- warmup_batches = the warm-up batches the measured pass's shards recorded, summed;
- energy_per_item = the measured pass's GPU energy (NVML) / its items, each physical device's
  counter read over the spans its shards ran (overlapping spans of workers sharing the GPU counted
  once); mean_power = sum over devices of (energy_d / busy seconds_d) (devices run concurrently);
- byte_per_batch = the measured (infer) pass's, never the val pass's;
- a shard retried after a failure is counted once (the attempt that completed).
With `repeats: R` the measured pass ran R times on fresh workers: its p_*_core and p_*_whole are
the mean over repeats with a 95 % Student-t interval; counts and accuracy come from the first
repeat (every repeat sees the same data, so they agree), and batch latencies pool all repeats.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from dataclasses import replace as replace_fields
from datetime import datetime, timezone
from typing import Any

from orchestrator.metrics.invariance import InvarianceCheck, invariance_columns
from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.stats import (
    LatencyFit,
    MeanCI,
    ShardRate,
    batch_costs,
    coefficient_of_variation,
    fit_latency,
    mean_ci,
    shard_rates_from_results,
    summarize_latencies,
    worker_core_rates,
)
from orchestrator.metrics.verdict import evaluate, figures_from_row
from orchestrator.spec import JobSpec
from workers.contract import DataInfo, DeviceHealth, RankInfo, ShardResult, WorkerInfo

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


def mfu(flops_per_item: float | None, core_items_per_s: float | None, peak_flops_total: float | None) -> float | None:
    if not flops_per_item or not core_items_per_s or not peak_flops_total:
        return None
    return flops_per_item * core_items_per_s / peak_flops_total


def format_acc(infer: float | None, val: float | None) -> str:
    return f"{'-' if infer is None else f'{infer:.4f}'}/{'-' if val is None else f'{val:.4f}'}"


def distinct_devices(infos: list[WorkerInfo]) -> dict[str, RankInfo]:
    """Every physical device the workers ran on, once (every rank of a TP worker; a GPU that
    fractional workers share is one device): physical device name -> the first rank on it."""
    devices: dict[str, RankInfo] = {}
    for info in infos:
        for rank in info.rank_list():
            devices.setdefault(rank.physical_device, rank)
    return devices


def devices_label(infos: list[WorkerInfo]) -> str:
    """'2x NVIDIA A100-SXM4-40GB' style summary of the distinct devices used (every rank of a TP worker)."""
    counts: dict[str, int] = defaultdict(int)
    for rank in distinct_devices(infos).values():
        counts[rank.device_name] += 1
    return ", ".join(f"{n}x {name}" for name, n in sorted(counts.items()))


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


def latency_fit(spec: JobSpec, head: Measured) -> LatencyFit | None:
    """The cost fit of the headline pass's batch latencies, for variable-length tasks only."""
    return fit_latency(batch_costs(head.all_results)) if spec.task.variable_length else None


def worker_rates(spec: JobSpec, head: Measured, fit: LatencyFit | None) -> tuple[dict[int, float], str]:
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


def task_columns(spec: JobSpec, head: Measured) -> dict[str, Any]:
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


# The row is assembled from one function per METRICS.md section; each reads only what it needs.

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


def memory_columns(results: list[ShardResult]) -> dict[str, Any]:
    """mem: the largest worker peak (GiB), with that device's total and where the figure came from."""
    peak = max(results, key=lambda r: r.peak_mem_bytes or 0)
    return {
        "mem": peak.peak_mem_bytes / GIB if peak.peak_mem_bytes is not None else None,
        "mem_total": peak.mem_total_bytes / GIB if peak.mem_total_bytes else None,
        "mem_source": peak.mem_source,
    }


def mfu_columns(infer: PassFigures | None, p_infer_core: float | None, infos: list[WorkerInfo]) -> dict[str, Any]:
    """MFU = FLOPs/item x p_infer_core / the summed peaks of the devices that ran the infer pass
    (a worker that got no infer shard adds no throughput, so it adds no peak), each physical device
    once (`distinct_devices`); blank, with the reason in `mfu_note`, when a device's peak is unknown
    or there is nothing to divide."""
    flops_per_item = infer.flops_per_item if infer else None
    used = [info for info in infos if infer and info.worker_id in infer.worker_ids]
    devices = distinct_devices(used)
    unknown = [info for info in used if not info.peak_flops]
    peak_total = sum(rank.peak_flops or 0.0 for rank in devices.values()) if devices and not unknown else None
    value = mfu(flops_per_item, p_infer_core, peak_total)
    if value is not None:
        note = None
    elif infer is None:
        note = "no infer pass"
    elif unknown:
        note = unknown[0].peak_flops_reason or f"no peak FLOP/s known for {unknown[0].device_name}"
    else:
        note = "no model FLOPs counted for this engine" if not flops_per_item else "no infer throughput"
    return {"MFU": value, "flops_per_item": flops_per_item, "peak_flops": peak_total, "mfu_note": note,
            **measured_mfu_columns(flops_per_item, p_infer_core, used)}


def measured_mfu_columns(flops_per_item: float | None, p_infer_core: float | None,
                         used: list[WorkerInfo]) -> dict[str, Any]:
    """MFU_measured = FLOPs/item x p_infer_core / the summed measured matmul peaks (workers/measure/matmul_peak.py)
    of the devices MFU divides by: the same workers, each physical device once (`distinct_devices`: a
    shared GPU, or a node's CPU, counts one peak; every GPU of a tensor-parallel group counts). Defined on
    CPUs too, where no datasheet peak exists; blank, with the reason in `mfu_measured_note`, otherwise."""
    devices = list(distinct_devices(used).values())
    unmeasured = next((info for info in used if not all(r.peak_flops_measured for r in info.rank_list())), None)
    peak_total = sum(r.peak_flops_measured for r in devices) if devices and unmeasured is None else None
    value = mfu(flops_per_item, p_infer_core, peak_total)
    if value is not None:
        note = None
    elif not used:
        note = "no infer pass"
    elif unmeasured is not None:
        note = unmeasured.peak_flops_measured_reason or f"worker {unmeasured.worker_id} has no measured peak"
    else:
        note = "no model FLOPs counted for this engine" if not flops_per_item else "no infer throughput"
    return {"MFU_measured": value, "peak_flops_measured": peak_total, "mfu_measured_note": note}


CounterSpan = tuple[float, float, float, float]  # (start_ts, end_ts, counter J at start, counter J at end)


def counter_spans(results: list[ShardResult]) -> dict[str, list[CounterSpan]]:
    """Each physical device's counter readings around the shards that ran on it. A shard stored
    before the readings were kept counts as its worker's own device (its energy from 0)."""
    spans: dict[str, list[CounterSpan]] = defaultdict(list)
    for r in results:
        counters = r.energy_counters or {f"worker {r.worker_id}": [0.0, r.energy_joules]}
        for device, (before, after) in counters.items():
            spans[device].append((r.start_ts, r.end_ts, before, after))
    return spans


def device_energy(spans: list[CounterSpan]) -> tuple[float, float]:
    """(joules, busy seconds) of one device: its shards' spans merged where they overlap (workers
    sharing the GPU run at once, and each read the same whole-device counter), the counter's rise
    over each merged span counted once."""
    joules = seconds = 0.0
    group: list[CounterSpan] = []

    def close() -> None:
        nonlocal joules, seconds
        if group:
            joules += max(s[3] for s in group) - min(s[2] for s in group)
            seconds += max(s[1] for s in group) - min(s[0] for s in group)

    for span in sorted(spans):
        if group and span[0] >= max(s[1] for s in group):
            close()
            group = []
        group.append(span)
    close()
    return joules, seconds


def energy_columns(head: Measured) -> dict[str, Any]:
    """energy_per_item (J per item) and mean_power (W, summed over devices) of the measured pass's
    first repeat, each physical device counted once; blank, with the reason, when any shard has no
    energy reading."""
    results = head.first_results
    missing = next((r for r in results if r.energy_joules is None), None)
    if missing is not None:
        return {"energy_per_item": None, "mean_power": None, "energy_note": missing.energy_note or "not measured"}
    per_device = [device_energy(spans) for spans in counter_spans(results).values()]
    items = sum(r.items for r in results)
    return {
        "energy_per_item": sum(j for j, _ in per_device) / items if items else None,
        "mean_power": sum(j / s for j, s in per_device if s > 0),
        "energy_note": None,
    }


def health_columns(head: Measured, results: list[ShardResult], infos: list[WorkerInfo]) -> dict[str, Any]:
    """What NVML saw on the GPUs while the measured pass ran, over every repeat (workers/measure/device_watch.py):
    the lowest busy SM clock, the clock event (throttle) reasons, the highest temperature and power,
    XID and uncorrected ECC errors, and the compute processes that are not the run's own (any rank
    of any of its workers, on the same node: `results` and `infos` name them); blank on CPUs."""
    watched = [r for r in head.all_results if r.health is not None]
    if not watched:
        return {"gpu_health_note": "no NVML on these devices (a CPU, or NVML unavailable): not watched"}
    health = DeviceHealth.combined([r.health for r in watched])
    ours = {(rank.node_id, rank.pid) for info in infos for rank in info.rank_list()}
    ours |= {(r.node_id, r.pid) for r in results}
    hosts = {info.node_id: info.hostname for info in infos}
    foreign = None if health.other_pids is None else sorted(
        {(r.node_id, pid) for r in watched for pid in r.health.other_pids} - ours)
    unwatched = len(head.all_results) - len(watched)
    notes = [health.note] + ([f"{unwatched} shard(s) ran where NVML was unavailable"] if unwatched else [])
    return {
        "sm_clock_mhz_min": health.sm_clock_mhz_min,
        "throttle_reasons": ",".join(health.clock_events),
        "temperature_c_max": health.temperature_c_max,
        "power_w_max": health.power_w_max,
        "xid_errors": ",".join(str(x) for x in health.xid_errors),
        "ecc_errors": health.ecc_errors,
        "foreign_processes": None if foreign is None else len(foreign),
        "foreign_pids": None if foreign is None else ", ".join(f"{pid}@{hosts.get(n, n[:8])}" for n, pid in foreign),
        "gpu_health_note": "; ".join(n for n in notes if n) or None,
    }


def latency_columns(spec: JobSpec, head: Measured, fit: LatencyFit | None) -> dict[str, Any]:
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
    }


def data_columns(data: list[DataInfo]) -> dict[str, Any]:
    """The data preparation, reported once: its time (the slowest, when each node prepared its own
    copy of node-local data), whether the cache had it, and where it ran."""
    hits = [d.cache_hit for d in data if d.cache_hit is not None]
    return {
        "data_time": max((d.seconds for d in data), default=0.0),
        "data_cache_hit": all(hits) if hits else None,
        "data_prepared_on": ",".join(sorted({d.where for d in data})),
    }


def setup_columns(spec: JobSpec, infos: list[WorkerInfo]) -> dict[str, Any]:
    """Where and how it ran: devices, worker setup times, the engine build, software versions."""
    builds = [info.build for info in infos if info.build is not None]
    versions = infos[0].versions if infos else {}
    return {
        "precision_effective": infos[0].precision_effective if infos else spec.precision,
        "workers": len(infos),
        "tp": spec.parallel.tp,
        "nodes": len({rank.node_id for info in infos for rank in info.rank_list()}),
        "devices": devices_label(infos),
        "load_time": max((info.load_seconds for info in infos), default=0.0),
        "build_time": max((b.build_seconds for b in builds), default=0.0),
        "engine_cache_hit": all(b.cache_hit for b in builds) if builds else None,
        "engine_bytes": builds[0].engine_bytes if builds else None,
        "engine_hash": builds[0].engine_hash if builds else None,
        "engine_profile": json.dumps(builds[0].profile, sort_keys=True) if builds and builds[0].profile else None,
        "torch_version": versions.get("torch", ""),
        "ray_version": versions.get("ray", ""),
        "transformers_version": versions.get("transformers", ""),
        "python_version": versions.get("python", ""),
        "cuda_version": versions.get("cuda", ""),
        "driver_version": versions.get("nvidia_driver", ""),
    }


def merge(
    *,
    spec: JobSpec,
    run_id: str,
    results: list[ShardResult],
    infos: list[WorkerInfo],
    data: list[DataInfo],
    e2e_seconds: float,
    retries: int,
    item_unit: str,
    resumed: bool = False,
    pauses: tuple[Pause, ...] = (),
    sweep_id: str | None = None,
    timestamp: datetime | None = None,
    ray_start_seconds: float | None = None,
    invariance: InvarianceCheck | None = None,
    workers_lost: tuple[str, ...] = (),
) -> MetricsRow:
    """The row of one run. `pauses`: when no driver was running (a resumed run), cut out of the spans.
    `invariance`: the measured pass's examples run again at bs 1 (orchestrator/metrics/invariance.py).
    `workers_lost`: one line per worker the run lost (which, where, why), for the row and its verdict."""
    final = completed(results)
    by_pass: dict[str, dict[int, list[ShardResult]]] = {"val": defaultdict(list), "infer": defaultdict(list)}
    for (pass_name, repeat, _), r in sorted(final.items()):
        by_pass[pass_name][repeat].append(r)
    val_m, infer_m = measured(by_pass["val"], pauses), measured(by_pass["infer"], pauses)
    val, infer = (val_m.first if val_m else None), (infer_m.first if infer_m else None)
    head = infer_m or val_m
    throughput = throughput_columns(val_m, infer_m)
    fit = latency_fit(spec, head)
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
        byte_per_batch=max(r.bytes_per_batch for r in head.first_results),  # the measured pass's (infer)
        e2e_time=e2e_seconds,
        seq_len=spec.seq_len,
        examples=head.first.examples,
        shards=len({shard for (_, repeat, shard) in final if repeat == 0}),
        retries=retries,
        resumed=resumed,
        workers_lost=len(workers_lost),
        **throughput,
        **accuracy_columns(val, infer, spec.acc_tolerance),
        **memory_columns(list(final.values())),
        **mfu_columns(infer, throughput["p_infer_core"], infos),
        **energy_columns(head),
        **health_columns(head, list(final.values()), infos),
        **latency_columns(spec, head, fit),
        **setup_columns(spec, infos),
        **data_columns(data),
        **task_columns(spec, head),
        ray_start_time=ray_start_seconds,
        **invariance_columns(head.records, invariance),
    )
    rates, unit = worker_rates(spec, head, fit)
    figures = figures_from_row(row, rates, spec.task.variable_length, shard_labels(fit), unit)
    figures = replace_fields(figures, workers_lost=tuple(workers_lost))
    verdict = evaluate(figures, spec.verdict.rules(spec.acc_tolerance))
    return row.model_copy(update={"verdict": verdict.label, "verdict_reasons": verdict.reasons_text,
                                  "verdict_profile": spec.verdict.profile})
