"""The row's sections every way to run an engine job shares, one function each: METRICS.md's merge
rules for them, in code, and nowhere else.

- setup: devices (each physical device once), workers, load and build times, software versions;
- data: the preparation's time, cache hit and where it ran;
- mem = the largest worker peak;
- MFU = FLOPs/item x p_infer_core / (sum of the peaks of the devices that ran the infer pass),
  each physical device (node + GPU UUID) counted once: two workers on half a GPU each share one peak;
- energy_per_item = the measured pass's GPU energy (NVML) / its items, each physical device's
  counter read over the spans its work ran (overlapping spans of workers sharing the GPU counted
  once); mean_power = sum over devices of (energy_d / busy seconds_d) (devices run concurrently);
- health: what NVML saw on the GPUs while the measured work ran.
The measured pass's own figures (throughput, accuracy, batch latency) are orchestrator/metrics/passes.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Sequence

from orchestrator.spec import EngineJob
from workers.contract import DataInfo, DeviceHealth, RankInfo, ShardResult, WorkerInfo

GIB = float(1 << 30)


def identity_columns(spec: EngineJob, run_id: str, sweep_id: str | None, timestamp: datetime | None,
                     item_unit: str) -> dict[str, Any]:
    """Which run of which job: what it ran, on what, and how the load was driven."""
    return {
        "run_id": run_id, "sweep_id": sweep_id,
        "timestamp": (timestamp or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "job": spec.name, "task": spec.task.name, "model": spec.model.label, "data": spec.data.label,
        "engine": spec.engine.name, "item_unit": item_unit, "precision": spec.precision, "bs": spec.bs,
        "seq_len": spec.seq_len, "load": spec.load.kind,
    }


def mfu(flops_per_item: float | None, core_items_per_s: float | None, peak_flops_total: float | None) -> float | None:
    if not flops_per_item or not core_items_per_s or not peak_flops_total:
        return None
    return flops_per_item * core_items_per_s / peak_flops_total


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


def memory_columns(results: list[ShardResult]) -> dict[str, Any]:
    """mem: the largest worker peak (GiB), with that device's total and where the figure came from."""
    peak = max(results, key=lambda r: r.peak_mem_bytes or 0)
    return {
        "mem": peak.peak_mem_bytes / GIB if peak.peak_mem_bytes is not None else None,
        "mem_total": peak.mem_total_bytes / GIB if peak.mem_total_bytes else None,
        "mem_source": peak.mem_source,
    }


def mfu_columns(flops_per_item: float | None, p_infer_core: float | None, ran_infer: frozenset[int] | None,
                infos: list[WorkerInfo]) -> dict[str, Any]:
    """MFU = FLOPs/item x p_infer_core / the summed peaks of the devices that ran the infer pass
    (a worker that got no infer shard adds no throughput, so it adds no peak), each physical device
    once (`distinct_devices`); blank, with the reason in `mfu_note`, when a device's peak is unknown
    or there is nothing to divide."""
    used = [info for info in infos if ran_infer is not None and info.worker_id in ran_infer]
    devices = distinct_devices(used)
    unknown = [info for info in used if not info.peak_flops]
    peak_total = sum(rank.peak_flops or 0.0 for rank in devices.values()) if devices and not unknown else None
    value = mfu(flops_per_item, p_infer_core, peak_total)
    if value is not None:
        note = None
    elif ran_infer is None:
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


def energy_columns(results: Sequence[ShardResult], items: int) -> dict[str, Any]:
    """energy_per_item (J per item) and mean_power (W, summed over devices) of the measured work's
    `items` over the spans of `results` (the first repeat's shards, or LoadGen's per-test readings),
    each physical device counted once; blank, with the reason, when any span has no energy reading."""
    missing = next((r for r in results if r.energy_joules is None), None)
    if missing is not None:
        return {"energy_per_item": None, "mean_power": None, "energy_note": missing.energy_note or "not measured"}
    per_device = [device_energy(spans) for spans in counter_spans(results).values()]
    return {
        "energy_per_item": sum(j for j, _ in per_device) / items if items else None,
        "mean_power": sum(j / s for j, s in per_device if s > 0),
        "energy_note": None,
    }


def health_columns(measured: Sequence[ShardResult], results: Sequence[ShardResult],
                   infos: list[WorkerInfo]) -> dict[str, Any]:
    """What NVML saw on the GPUs while the measured pass ran, over every repeat (workers/measure/device_watch.py):
    the lowest busy SM clock, the clock event (throttle) reasons, the highest temperature and power,
    XID and uncorrected ECC errors, and the compute processes that are not the run's own (any rank
    of any of its workers, on the same node: `results` and `infos` name them); blank on CPUs."""
    watched = [r for r in measured if r.health is not None]
    if not watched:
        return {"gpu_health_note": "no NVML on these devices (a CPU, or NVML unavailable): not watched"}
    health = DeviceHealth.combined([r.health for r in watched])
    ours = {(rank.node_id, rank.pid) for info in infos for rank in info.rank_list()}
    ours |= {(r.node_id, r.pid) for r in results}
    hosts = {info.node_id: info.hostname for info in infos}
    foreign = None if health.other_pids is None else sorted(
        {(r.node_id, pid) for r in watched for pid in r.health.other_pids} - ours)
    unwatched = len(measured) - len(watched)
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


def data_columns(data: list[DataInfo]) -> dict[str, Any]:
    """The data preparation, reported once: its time (the slowest, when each node prepared its own
    copy of node-local data), whether the cache had it, and where it ran."""
    hits = [d.cache_hit for d in data if d.cache_hit is not None]
    return {
        "data_time": max((d.seconds for d in data), default=0.0),
        "data_cache_hit": all(hits) if hits else None,
        "data_prepared_on": ",".join(sorted({d.where for d in data})),
    }


def setup_columns(spec: EngineJob, infos: list[WorkerInfo]) -> dict[str, Any]:
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
