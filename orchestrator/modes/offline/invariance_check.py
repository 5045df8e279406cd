"""The driver's half of the invariance check (orchestrator/metrics/invariance.py says what and why):
after the measured pass, the checked examples dealt into one check task per worker, run side by side
through the dispatcher's usual retries; their records never reach the shard results, the run
folder's shards or the live metrics."""

from __future__ import annotations

import time

from orchestrator.cluster.pool import Pool
from orchestrator.metrics.invariance import InvarianceCheck, check_examples, dealt
from orchestrator.modes.offline.dispatch import Dispatcher
from orchestrator.spec import JobSpec
from workers.contract import ShardTask
from workers.errors import RunFailed

# check tasks are numbered -1, -2, ...: never a shard of the plan


def check_tasks(examples: tuple[int, ...], workers: int) -> list[ShardTask]:
    """One bs-1 check task per worker (fewer when there are fewer examples)."""
    return [ShardTask(shard_id=-1 - k, start=0, stop=0, pass_name="infer", examples=part, check=True)
            for k, part in enumerate(dealt(examples, workers))]


def run_invariance_check(spec: JobSpec, pool: Pool, num_examples: int,
                         order: tuple[int, ...] | None = None) -> InvarianceCheck | None:
    """The job's invariance examples run again at bs 1, spread over the pool's workers; None when it
    is off. `order`: the plan's order of the examples (by cost, for variable-length work): the
    examples are then spread evenly over it, so they span the lengths and cost about their share
    of the tokens (spread over the data's order, 4 of 120 questions fell on the longest subject and
    cost 6 % of the tokens). A check that fails is reported in the row (`invariance_note`), not as
    a failed run: the measured figures stand."""
    count = spec.invariance_examples(num_examples)
    if not count:
        return None
    examples = check_examples(num_examples, count)
    if order is not None:
        examples = tuple(order[i] for i in examples)
    tasks = check_tasks(examples, max(1, pool.size - len(pool.lost)))
    t0 = time.perf_counter()
    try:
        results = Dispatcher(pool, spec.max_attempts, on_result=lambda _: None).run(tasks)
    except RunFailed as exc:
        return InvarianceCheck(examples, note=f"the invariance check failed: {exc}",
                               seconds=time.perf_counter() - t0, workers=len(tasks))
    records = tuple(rec for r in sorted(results, key=lambda r: -r.shard_id) for rec in r.records)
    return InvarianceCheck(examples, records, seconds=time.perf_counter() - t0, workers=len(tasks))
