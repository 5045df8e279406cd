"""What the ranks of a tensor-parallel group tell rank 0, and how rank 0 folds it into one result.

Light at import (no torch, no Ray): the driver imports `workers.rank`, which imports this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from workers.contract import DeviceHealth, RankInfo, ShardResult, WorkerError, WorkerInfo


@dataclass
class RankReport:
    """What a follower sends back for a shard: its memory peak and energy, or why it failed."""

    rank: int
    pid: int
    peak_mem_bytes: int | None
    mem_total_bytes: int | None
    mem_source: str
    error: WorkerError | None
    energy_joules: float | None = None
    energy_note: str = ""
    restarted: bool = False  # this rank is a new process that never joined the group (its old one died)
    energy_counters: dict[str, list[float]] | None = None  # its GPU's counter before and after (ShardResult's)
    health: DeviceHealth | None = None  # what NVML saw on this rank's GPU during the shard


def report_of(rank: int, result: ShardResult) -> RankReport:
    """A follower's report of the shard it ran beside rank 0."""
    return RankReport(rank, os.getpid(), result.peak_mem_bytes, result.mem_total_bytes, result.mem_source,
                      result.error, result.energy_joules, result.energy_note,
                      energy_counters=result.energy_counters, health=result.health)


def rank_info(rank: int, info: WorkerInfo) -> RankInfo:
    """One rank's line in the group's `WorkerInfo.ranks`, from that rank's own setup report."""
    return RankInfo(rank, info.node_id, info.pid, info.device, info.device_name, info.peak_flops,
                    device_uuid=info.device_uuid, peak_flops_measured=info.peak_flops_measured)


def combine(result: ShardResult, reports: list[RankReport], group_pids: set[int]) -> ShardResult:
    """Rank 0's result with the largest rank's memory peak and every rank's energy (each GPU of the
    group works on every batch); NVML's health of every GPU of the group, where the group's own
    processes (`group_pids`) are not foreign."""
    peak = max([result, *reports], key=lambda r: r.peak_mem_bytes or 0)
    result.peak_mem_bytes, result.mem_total_bytes = peak.peak_mem_bytes, peak.mem_total_bytes
    result.mem_source = peak.mem_source
    unmeasured = next((r for r in reports if r.energy_joules is None), None)
    if result.energy_joules is not None and unmeasured is not None:
        result.energy_joules, result.energy_note = None, f"rank {unmeasured.rank}: {unmeasured.energy_note}"
    elif result.energy_joules is not None:
        result.energy_joules += sum(r.energy_joules for r in reports)
        for report in reports:
            result.energy_counters.update(report.energy_counters or {})
    if result.health is not None:
        healths = [result.health, *(r.health for r in reports if r.health is not None)]
        result.health = DeviceHealth.combined(healths, ours=group_pids)
    return result


def group_peak_flops(ranks: list[RankInfo]) -> float | None:
    """The group's peak FLOP/s: every rank's device counts, since every rank computes its slice of
    each batch (the FLOPs are counted once, from the whole model). None if any peak is unknown."""
    peaks = [r.peak_flops for r in ranks]
    return sum(peaks) if peaks and all(peaks) else None


def failed(result: ShardResult, error: WorkerError) -> ShardResult:
    """A failed attempt keeps its identity and the error, never partial counts."""
    return ShardResult(shard_id=result.shard_id, pass_name=result.pass_name, attempt=result.attempt,
                       worker_id=result.worker_id, node_id=result.node_id, device_name=result.device_name,
                       pid=result.pid, repeat=result.repeat, error=error)
