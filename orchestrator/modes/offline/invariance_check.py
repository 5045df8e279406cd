"""The driver's half of the invariance check (orchestrator/metrics/invariance.py says what and why):
after the measured pass, one check task to one worker, through the dispatcher's usual retries; its
records never reach the shard results, the run folder's shards or the live metrics."""

from __future__ import annotations

from orchestrator.metrics.invariance import InvarianceCheck, check_examples
from orchestrator.modes.offline.dispatch import Dispatcher
from orchestrator.cluster.pool import Pool
from orchestrator.spec import JobSpec
from workers.contract import ShardTask
from workers.errors import RunFailed

CHECK_SHARD_ID = -1  # not a shard of the plan


def run_invariance_check(spec: JobSpec, pool: Pool, num_examples: int) -> InvarianceCheck | None:
    """The job's `invariance_check` examples run again at bs 1 on one worker; None when it is off. A
    check that fails is reported in the row (`invariance_note`), not as a failed run: the measured
    figures stand."""
    count = spec.invariance_examples
    if not count:
        return None
    examples = check_examples(num_examples, count)
    task = ShardTask(shard_id=CHECK_SHARD_ID, start=0, stop=0, pass_name="infer", examples=examples)
    try:
        (result,) = Dispatcher(pool, spec.max_attempts, on_result=lambda _: None).run([task])
    except RunFailed as exc:
        return InvarianceCheck(examples, note=f"the invariance check failed: {exc}")
    return InvarianceCheck(examples, tuple(result.records))
