"""Dataset -> shards: pure functions, no Ray (how many workers a cluster gives is orchestrator/cluster/resources.py).

Shards are contiguous ranges of the plan's order of the examples, and depend on the dataset and
bs, never on the number of workers, so the same job yields the same shards (and the same numbers)
on 1 or 64 workers. There are many more shards than workers, so a slow or restarted worker costs
the run little: the others take the remaining shards.

The order: examples that cost the same (masked-LM windows) keep the data's order. Examples that do
not (MMLU prompts of 250 to 2,800 tokens) are sorted by cost first, dearest first (a stable sort:
ties keep the data's order), which for a prompt is sorting by length, since its FLOPs grow with its
tokens. A worker pads each batch to its longest prompt, so batches cut from the data's order (a
subject's questions, then the next subject's) carried 19 % padding on 6 MMLU subjects at bs 8; cut
from the sorted order every batch holds neighbours in length (13 % on the same set; the rest is the
gaps between the lengths themselves). Predictions do not move: each prompt is read at its own last
token and right padding never reaches it (workers/tasks/mmlu.py), which
tests/orchestrator/modes/offline/test_sorted_plan.py checks with and without the sort. Dearest first,
because shards are handed out in the plan's order: the batches of the longest prompts go out
first, and the tapered tail (below) is the cheapest prompts in small shards, which fill the gaps
at the end (sorted the other way, one worker would run a batch of the longest prompts at the end
while the others idle: 94 % busy instead of 99 % at 32 workers on all of MMLU). A worker's first
shard is then its dearest, so the warm-up batches are the plan's cheapest (`Plan.shards`).

Examples that cost the same (masked-LM windows) are cut by count: about TARGET_SHARDS shards of
whole batches. Examples that do not (MMLU prompts of 250 to 2,800 tokens) are cut by cost: the
preparation reports each example's FLOPs (weights x tokens plus the attention term,
workers/measure/flops.py), and shards hold about equal cost (about TARGET_COST_SHARDS of them), so a worker
that drew long prompts does not finish last.

Every shard of a pass but the last holds a whole number of batches, by count and by cost, in the
tapered tail too: a worker batches each shard on its own, so a shard of 40 examples at bs 32 would
run one batch of 32 and one of 8, and "bs 32" would be measured partly on smaller batches (and a
sweep over bs would compare plans, not batch sizes). A cost shard ends at the batch boundary whose
prefix cost is nearest its goal, never before one batch.

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
TAPER_FRACTION = 0.125
TAPER_DIVISOR = 4


def default_shard_size(num_examples: int, bs: int) -> int:
    """About TARGET_SHARDS shards, each a whole number of batches (only the last may be partial)."""
    per_shard = math.ceil(num_examples / TARGET_SHARDS)
    return max(bs * MIN_BATCHES_PER_SHARD, math.ceil(per_shard / bs) * bs)


def shard_bounds(num_examples: int, shard_size: int, bs: int) -> list[tuple[int, int]]:
    """(start, stop) of every shard: full-size shards, then the tapered tail in smaller ones. An
    explicit shard_size that is not a whole number of batches is rounded up to one."""
    shard_size = math.ceil(shard_size / bs) * bs
    small = max(bs, (shard_size // TAPER_DIVISOR) // bs * bs)
    tail = math.ceil(num_examples * TAPER_FRACTION / small) * small if small < shard_size else 0
    bulk_end = max(0, num_examples - tail)
    bulk_end -= bulk_end % shard_size  # the bulk is whole shards; the rest goes to the tail
    bounds = [(start, start + shard_size) for start in range(0, bulk_end, shard_size)]
    bounds += [(start, min(start + small, num_examples)) for start in range(bulk_end, num_examples, small)]
    return bounds


def cost_bounds(costs: Sequence[float], bs: int) -> list[tuple[int, int]]:
    """(start, stop) of shards of about equal summed cost, in example order, each a whole number of
    batches but the last.

    The bulk is cut into shards of about total/TARGET_COST_SHARDS, the last TAPER_FRACTION of the
    cost into shards of a quarter of that; either way a shard ends at the batch boundary whose
    prefix cost is nearest its goal, and holds at least one batch.
    """
    cumulative = np.cumsum(np.asarray(costs, dtype=np.float64))
    n = len(cumulative)
    total = float(cumulative[-1])
    target = total / TARGET_COST_SHARDS
    tail_from = total * (1 - TAPER_FRACTION)
    bounds: list[tuple[int, int]] = []
    start, done = 0, 0.0
    while start < n:
        goal = done + (target / TAPER_DIVISOR if done >= tail_from else target)
        stop = min(n, _batch_boundary_nearest(cumulative, start, goal, bs))
        bounds.append((start, stop))
        start, done = stop, float(cumulative[stop - 1])
    return bounds


def _batch_boundary_nearest(cumulative: np.ndarray, start: int, goal: float, bs: int) -> int:
    """The stop start + k x bs (k >= 1) whose prefix cost is nearest `goal` (past the data: its end)."""
    n = len(cumulative)
    reached = _first_reaching(cumulative, goal)  # the smallest stop whose prefix reaches the goal
    over = start + max(1, math.ceil((reached - start) / bs)) * bs  # the first boundary at or past it
    under = over - bs
    if under <= start or over > n:
        return over
    return under if goal - cumulative[under - 1] < cumulative[over - 1] - goal else over


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


def dispatch_order(bounds: Sequence[tuple[int, int]], costs: Sequence[float] | None = None) -> list[int]:
    """Shard ids in the order they are handed out: the bulk in example order, then the tapered tail
    dearest first. Whole batches make the tail's shards unequal (a batch of 2,800-token prompts
    against one of 250); handing the dearest out first (longest processing time first) lets the
    cheap ones fill the gaps at the end, as the tail's small shards are there to do."""
    weights = np.asarray(costs, dtype=np.float64) if costs is not None else np.ones(bounds[-1][1] if bounds else 0)
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    shard_costs = [float(cumulative[b] - cumulative[a]) for a, b in bounds]
    total = sum(shard_costs)
    done, tail = 0.0, len(bounds)
    for i, cost in enumerate(shard_costs):
        if done >= total * (1 - TAPER_FRACTION):
            tail = i
            break
        done += cost
    return list(range(tail)) + sorted(range(tail, len(bounds)), key=lambda i: -shard_costs[i])


@dataclass(frozen=True)
class Plan:
    """The shards of every pass and repeat (shard k is the same examples in each), the order they
    are handed out in, and each one's share of the work: what `bench validate --plan` prints and a
    run folder keeps (plan.json), so a resume can check it is finishing the same plan."""

    bs: int
    num_examples: int
    by_cost: bool
    bounds: tuple[tuple[int, int], ...]  # (start, stop) by shard id
    order: tuple[int, ...]  # shard ids in dispatch order
    shares: tuple[float, ...]  # each shard's fraction of the pass's cost (of its examples, by count)
    # the examples in the plan's order (bounds are positions in it): sorted by cost; None: the data's order
    example_order: tuple[int, ...] | None = None

    def shards(self, pass_name: PassName, repeat: int = 0, warmup: int = 0) -> list[ShardTask]:
        """The pass's shards in dispatch order. In a sorted plan each carries the examples of its
        worker's `warmup` batches: the plan's cheapest (its first shard is its dearest)."""
        warm = self.warmup_examples(warmup)
        return [ShardTask(shard_id=i, start=self.bounds[i][0], stop=self.bounds[i][1], pass_name=pass_name,
                          repeat=repeat, examples=self._examples(i), warmup_examples=warm) for i in self.order]

    def warmup_examples(self, batches: int) -> tuple[int, ...] | None:
        """The cheapest `batches` x bs examples, cheapest first (None: warm up on the shard's own start)."""
        if self.example_order is None or batches <= 0:
            return None
        return tuple(reversed(self.example_order[-batches * self.bs:]))

    def _examples(self, shard_id: int) -> tuple[int, ...] | None:
        if self.example_order is None:
            return None
        start, stop = self.bounds[shard_id]
        return self.example_order[start:stop]

    @property
    def ordered_by(self) -> str:
        return "data" if self.example_order is None else "cost"

    def identity(self) -> dict:
        """What must not change between the drivers of one run: bs, size, the examples' order and
        every shard's range (the order follows from the data, whose fingerprint the resume checks)."""
        return {"bs": self.bs, "num_examples": self.num_examples, "order": self.ordered_by,
                "bounds": [list(b) for b in self.bounds]}

    def to_dict(self, passes: Sequence[str] = ("val", "infer")) -> dict:
        shards = [{"pass": p, "shard_id": i, "start": a, "stop": b, "examples": b - a, "share": self.shares[i]}
                  for p in passes for i, (a, b) in enumerate(self.bounds)]
        return {"bs": self.bs, "num_examples": self.num_examples, "by": "cost" if self.by_cost else "count",
                "order": self.ordered_by, "dispatch_order": list(self.order), "shards": shards}


def cost_order(costs: Sequence[float]) -> tuple[int, ...]:
    """The examples dearest first, ties in the data's order (a stable sort)."""
    return tuple(int(i) for i in np.argsort(-np.asarray(costs, dtype=np.float64), kind="stable"))


def make_plan(num_examples: int, bs: int, shard_size: int | None = None, costs: Sequence[float] | None = None,
              sort: bool = True) -> Plan:
    """The run's plan from the prepared data's size and costs (see plan_bounds): examples that differ
    in cost sorted by it (unless `sort` is False), then cut into shards."""
    order = cost_order(costs) if costs is not None and sort else None
    if order is not None and len(order) != num_examples:
        raise ValueError(f"{len(order)} costs for {num_examples} examples")
    ordered = [costs[i] for i in order] if order is not None else costs
    bounds = plan_bounds(num_examples, bs, shard_size, ordered)
    by_cost = costs is not None and shard_size is None
    weights = np.asarray(ordered, dtype=np.float64) if by_cost else np.ones(num_examples)
    cumulative = np.concatenate([[0.0], np.cumsum(weights)])
    shares = tuple(float((cumulative[b] - cumulative[a]) / cumulative[-1]) for a, b in bounds)
    return Plan(bs, num_examples, by_cost, tuple(bounds), tuple(dispatch_order(bounds, ordered if by_cost else None)),
                shares, order)


