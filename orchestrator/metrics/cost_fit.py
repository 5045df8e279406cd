"""What a worker's shards cost: per-worker and per-node core rates, and the cost fit of batch
latencies that variable-length work (mmlu) is judged against (docs/measurement.md says why).

Fitted: seconds ~ a + b x tokens + c x tokens x length per batch (a, b, c >= 0, least squares on
relative error), over all batches of the pass; each shard's observed / fitted core time, scaled so a
worker's median shard is 1, gives `latency_shard_cv`; each worker's fitted / observed time its speed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from workers.contract import ShardResult

@dataclass(frozen=True)
class ShardRate:
    """The bits of one shard result that per-worker rates need (from ShardResult or shards.parquet)."""

    worker_id: int
    node_id: str
    items: int
    core_seconds: float


def worker_core_rates(shards: Iterable[ShardRate]) -> dict[int, float]:
    """Items per core second of each worker over its shards (METRICS.md's per-worker term of p_*_core)."""
    items: dict[int, int] = defaultdict(int)
    core: dict[int, float] = defaultdict(float)
    for s in shards:
        items[s.worker_id] += s.items
        core[s.worker_id] += s.core_seconds
    return {w: items[w] / core[w] for w in sorted(items) if core[w] > 0}


def node_core_rates(shards: Iterable[ShardRate]) -> dict[str, float]:
    """Sum of the worker rates on each node: what each machine contributes to the cluster figure."""
    shards = list(shards)
    node_of = {s.worker_id: s.node_id for s in shards}
    totals: dict[str, float] = defaultdict(float)
    for worker, rate in worker_core_rates(shards).items():
        totals[node_of[worker]] += rate
    return dict(sorted(totals.items()))


def shard_rates_from_records(records: Iterable[dict], pass_name: str = "infer") -> list[ShardRate]:
    """ShardRates of one pass from shards.parquet rows (`table.to_pylist()`), whose pass column is `pass`."""
    return [
        ShardRate(int(r["worker_id"]), str(r["node_id"]), int(r["items"]), float(r["core_seconds"]))
        for r in records
        if r["pass"] == pass_name
    ]


def shard_rates_from_results(results: Iterable[ShardResult], pass_name: str = "infer") -> list[ShardRate]:
    """ShardRates of one pass from the driver's in-memory (deduplicated) shard results."""
    return [ShardRate(r.worker_id, r.node_id, r.items, r.core_seconds) for r in results if r.pass_name == pass_name]


# ------------------------------------------------------------ stability of variable-length work
COST_TERMS = ("batch", "token", "token x length")  # what each fitted coefficient is paid per


MIN_FIT_BATCHES = 2 * len(COST_TERMS)  # fewer batches than this leave too little to fit


@dataclass(frozen=True)
class BatchCost:
    """One measured batch: where it ran, its shape, its core seconds."""

    repeat: int
    shard_id: int
    worker_id: int
    rows: int
    seq_len: int  # padded length: what the engine computed
    seconds: float


@dataclass(frozen=True)
class ShardCost:
    """One shard's core time against the fitted cost of its batches."""

    repeat: int
    shard_id: int
    worker_id: int
    batches: int
    fitted_seconds: float
    ratio: float  # observed / fitted seconds, scaled so the worker's median shard is 1
    observed_seconds: float = 0.0  # the shard's measured core seconds

    @property
    def label(self) -> str:
        return f"shard {self.shard_id} (worker {self.worker_id}{f', repeat {self.repeat}' if self.repeat else ''})"


@dataclass(frozen=True)
class LatencyFit:
    """Core time of a pass against a cost fitted to its batches' shapes, shard by shard."""

    coefficients: tuple[float, ...]  # seconds per batch, per token, per token x length
    shards: tuple[ShardCost, ...]

    def worker_speeds(self, repeat: int = 0) -> dict[int, float]:
        """Each worker's fitted over observed core seconds in `repeat`: 1.0 runs its batches as fast
        as the fit of the whole pass says their shapes cost, 0.5 takes twice that. What the
        straggler rule compares on variable-length work, where raw items/s would follow the lengths
        a worker drew (a worker given long prompts does fewer tokens/s on a healthy device)."""
        fitted: dict[int, float] = defaultdict(float)
        observed: dict[int, float] = defaultdict(float)
        for s in self.shards:
            if s.repeat == repeat:
                fitted[s.worker_id] += s.fitted_seconds
                observed[s.worker_id] += s.observed_seconds
        return {w: fitted[w] / observed[w] for w in sorted(fitted) if observed[w] > 0}

    @property
    def shard_cv(self) -> float | None:
        """Stdev / mean of the shards' ratios, each weighted by its fitted seconds (a one-batch tail
        shard counts for its one batch); None below 3 shards."""
        if len(self.shards) < 3:
            return None
        ratios = np.array([s.ratio for s in self.shards])
        weights = np.array([s.fitted_seconds for s in self.shards])
        mean = float(np.average(ratios, weights=weights))
        n = len(ratios)
        variance = float(np.average((ratios - mean) ** 2, weights=weights)) * n / (n - 1)
        return math.sqrt(variance) / mean


def fit_cost(batches: Sequence[BatchCost]) -> tuple[np.ndarray, np.ndarray] | None:
    """(coefficients, fitted seconds per batch) of seconds ~ a + b x tokens + c x tokens x length,
    tokens = rows x padded length: per batch, per token, and attention, which grows with the
    square of the length. a, b, c >= 0 (scipy.optimize.nnls). Jitter is multiplicative (a 5 %
    slower clock is 5 % on every batch), so each batch's row is divided by its own seconds: the fit
    minimises relative error and long batches do not drown short ones."""
    from scipy.optimize import nnls

    tokens = np.array([b.rows * b.seq_len for b in batches], dtype=float)
    lengths = np.array([b.seq_len for b in batches], dtype=float)
    seconds = np.array([b.seconds for b in batches], dtype=float)
    design = np.column_stack([np.ones_like(tokens), tokens, tokens * lengths])
    scale = design.max(axis=0)
    scale[scale == 0] = 1.0  # a term that is 0 everywhere stays 0
    coef, _ = nnls(design / scale / seconds[:, None], np.ones_like(seconds))
    fitted = design / scale @ coef
    return (coef / scale, fitted) if np.all(fitted > 0) else None


def fit_latency(batches: Sequence[BatchCost]) -> LatencyFit | None:
    """The cost fit over all batches, then each shard's observed / fitted seconds. Each worker's
    ratios are scaled to a median shard of 1: a worker slow throughout is the straggler rule's
    business; shards of a worker slower than its others are instability. None below MIN_FIT_BATCHES."""
    batches = [b for b in batches if b.seconds > 0]
    if len(batches) < MIN_FIT_BATCHES:
        return None
    fit = fit_cost(batches)
    if fit is None:
        return None
    coef, fitted = fit
    observed: dict[tuple[int, int, int], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for b, f in zip(batches, fitted):
        totals = observed[(b.repeat, b.worker_id, b.shard_id)]
        totals[0] += 1
        totals[1] += b.seconds
        totals[2] += float(f)
    medians = {
        worker: float(np.median([t[1] / t[2] for key, t in observed.items() if key[:2] == worker]))
        for worker in {key[:2] for key in observed}
    }
    shards = tuple(ShardCost(repeat, shard, worker, int(t[0]), t[2], t[1] / t[2] / medians[(repeat, worker)], t[1])
                   for (repeat, worker, shard), t in sorted(observed.items(), key=lambda kv: (kv[0][0], kv[0][2])))
    return LatencyFit(tuple(float(c) for c in coef), shards)


def batch_costs(results: Iterable[ShardResult]) -> list[BatchCost]:
    """The measured batches of shard results in run order: by repeat, then each worker's shards as
    they started (results from before batch shapes were recorded give none)."""
    out = []
    for r in sorted(results, key=lambda r: (r.repeat, r.start_ts, r.shard_id)):
        if len(r.batch_rows) == len(r.batch_seq_lens) == len(r.batch_core_seconds):
            out += [BatchCost(r.repeat, r.shard_id, r.worker_id, n, length, t)
                    for n, length, t in zip(r.batch_rows, r.batch_seq_lens, r.batch_core_seconds)]
    return out
