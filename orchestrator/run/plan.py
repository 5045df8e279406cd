"""Dataset -> shards, and cluster size -> workers. Pure functions, no Ray.

Shards are contiguous example ranges that depend on the dataset and bs, never on the number of
workers, so the same job yields the same shards (and the same numbers) on 1 or 64 workers. There
are many more shards than workers, so a slow or restarted worker costs the run little: the others
take the remaining shards.

Examples that cost the same (masked-LM windows) are cut by count: about TARGET_SHARDS shards of
whole batches. Examples that do not (MMLU prompts of 250 to 2,800 tokens) are cut by cost: the
preparation reports each example's FLOPs (weights x tokens plus the attention term,
workers/flops.py), and shards hold about equal cost (about TARGET_COST_SHARDS of them, at least one
batch each), so a worker that drew long prompts does not finish last.

Either way the last TAPER_FRACTION of the work is cut into quarter-size shards: with dynamic
dispatch a worker that finishes early idles for up to one shard at the end of a pass, so small
final shards make the workers finish together, which is what p_*_whole (items over the span from
the first start to the last end) measures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workers.contract import PassName, ShardTask
from workers.errors import UserError

TARGET_SHARDS = 64
MIN_BATCHES_PER_SHARD = 4  # below this, per-shard dispatch costs start to show in p_*_whole
TARGET_COST_SHARDS = 256  # variable-cost examples: more, smaller shards, so the tail evens out
MAX_SHARD_COST_FRACTION = 1 / 32  # no shard above this share of the work, even if it holds < bs examples
TAPER_FRACTION = 0.125
TAPER_DIVISOR = 4


def default_shard_size(num_examples: int, bs: int) -> int:
    """About TARGET_SHARDS shards, each a whole number of batches (only the last may be partial)."""
    per_shard = math.ceil(num_examples / TARGET_SHARDS)
    return max(bs * MIN_BATCHES_PER_SHARD, math.ceil(per_shard / bs) * bs)


def shard_bounds(num_examples: int, shard_size: int, bs: int) -> list[tuple[int, int]]:
    """(start, stop) of every shard: full-size shards, then the tapered tail in smaller ones."""
    small = max(bs, (shard_size // TAPER_DIVISOR) // bs * bs)
    tail = math.ceil(num_examples * TAPER_FRACTION / small) * small if small < shard_size else 0
    bulk_end = max(0, num_examples - tail)
    bulk_end -= bulk_end % shard_size  # the bulk is whole shards; the rest goes to the tail
    bounds = [(start, start + shard_size) for start in range(0, bulk_end, shard_size)]
    bounds += [(start, min(start + small, num_examples)) for start in range(bulk_end, num_examples, small)]
    return bounds


def cost_bounds(costs: Sequence[float], bs: int) -> list[tuple[int, int]]:
    """(start, stop) of shards of about equal summed cost, in example order.

    The bulk is cut into shards of about total/TARGET_COST_SHARDS and at least `bs` examples (a
    shard is batched on its own, so fewer would leave a partial batch), unless fewer examples
    already make MAX_SHARD_COST_FRACTION of the work (a few very long prompts are a full batch's
    worth of tokens); the last TAPER_FRACTION of the cost is cut into shards of a quarter of the
    target, at least one example each.
    """
    cumulative = np.cumsum(np.asarray(costs, dtype=np.float64))
    n = len(cumulative)
    total = float(cumulative[-1])
    target = total / TARGET_COST_SHARDS
    tail_from = total * (1 - TAPER_FRACTION)
    bounds: list[tuple[int, int]] = []
    start, done = 0, 0.0
    while start < n:
        if done >= tail_from:
            stop = _first_reaching(cumulative, done + target / TAPER_DIVISOR)
        else:
            stop = max(_first_reaching(cumulative, done + target), start + bs)
            stop = min(stop, _first_reaching(cumulative, done + total * MAX_SHARD_COST_FRACTION))
        stop = min(n, max(stop, start + 1))
        bounds.append((start, stop))
        start, done = stop, float(cumulative[stop - 1])
    return bounds


def _first_reaching(cumulative: np.ndarray, goal: float) -> int:
    """The smallest stop whose prefix cost reaches `goal` (len + 1 if none does)."""
    return int(np.searchsorted(cumulative, goal, side="left")) + 1


def plan_bounds(num_examples: int, bs: int, shard_size: int | None = None,
                costs: Sequence[float] | None = None) -> list[tuple[int, int]]:
    """Shard ranges: by cost when examples differ in cost (and no shard_size was asked for),
    else by count (shard_size examples, default about TARGET_SHARDS shards)."""
    if num_examples <= 0:
        raise UserError("data: the dataset has no examples for this task and seq_len")
    if costs is not None and shard_size is None:
        if len(costs) != num_examples:
            raise ValueError(f"{len(costs)} costs for {num_examples} examples")
        return cost_bounds(costs, bs)
    return shard_bounds(num_examples, shard_size or default_shard_size(num_examples, bs), bs)


def plan_shards(bounds: list[tuple[int, int]], pass_name: PassName, repeat: int = 0) -> list[ShardTask]:
    return [ShardTask(shard_id=i, start=start, stop=stop, pass_name=pass_name, repeat=repeat)
            for i, (start, stop) in enumerate(bounds)]


@dataclass(frozen=True)
class Resources:
    workers: int
    gpus_per_worker: float
    cpus_per_worker: float


def plan_resources(
    workers: int | str, gpus_per_worker: float | None, cpus_per_worker: float, cluster_gpus: float, cluster_cpus: float
) -> Resources:
    """How many worker actors, each asking Ray for what; a clear error when the cluster is too small."""
    gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    if workers == "auto":
        count = int(cluster_gpus // gpus) if gpus > 0 else 1
    else:
        count = int(workers)
    if count < 1:
        raise UserError(f"workers: the cluster has {cluster_gpus:g} GPUs, fewer than gpus_per_worker={gpus:g}")
    if gpus > 0 and count * gpus > cluster_gpus + 1e-9:
        raise UserError(
            f"workers: {count} workers x {gpus:g} GPU need {count * gpus:g} GPUs; the cluster has {cluster_gpus:g} "
            "(lower workers, or use workers: auto)"
        )
    if count * cpus_per_worker > cluster_cpus + 1e-9:
        raise UserError(
            f"workers: {count} workers x {cpus_per_worker:g} CPU need {count * cpus_per_worker:g} CPUs; the cluster "
            f"has {cluster_cpus:g} (lower workers or cpus_per_worker)"
        )
    return Resources(count, gpus, cpus_per_worker)
