"""What a run folder keeps to be resumed safely, and the checks a resume makes against it.

Shard k of a run is a range of examples of one prepared dataset, so the shards a first driver saved
mean the same thing to a resuming driver only if both prepared the same data and cut it the same
way. A resume days later may not: a tokenizer upgrade or an edited file makes other examples (shard
ids would point at other questions, and the merge would count some twice and drop others), a newer
raybench may plan other shards. So the first driver writes `plan.json` (the prepared data's
fingerprint and size, and every shard's range) and every shard result records its start and stop;
a resume whose data or plan differ is refused in one line, before any worker runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from orchestrator.metrics.store import RunFolder
from orchestrator.modes.offline.plan import Plan
from workers.contract import DataInfo, ShardResult
from workers.errors import UserError

PLAN_FILE = "plan.json"


def plan_record(prepared: DataInfo, plan: Plan) -> dict:
    return {"data": {"fingerprint": prepared.fingerprint, "num_examples": prepared.num_examples},
            "plan": plan.identity()}


def save_plan(run: RunFolder, prepared: DataInfo, plan: Plan) -> None:
    run.write_text(PLAN_FILE, json.dumps(plan_record(prepared, plan)))


def check_resume(run: RunFolder, prepared: DataInfo, plan: Plan, saved: Iterable[ShardResult]) -> None:
    """Raise a one-line UserError when the data or the plan of this driver differ from the run's.

    A run started before plan.json existed has only its shards' ranges (if they were recorded) to
    go by; those are checked against the plan all the same."""
    how = f"--resume {run.run_id}"
    if run.has(PLAN_FILE):
        stored = json.loads(run.read_text(PLAN_FILE))
        data, now = stored["data"], plan_record(prepared, plan)
        if data != now["data"]:
            raise UserError(f"{how}: the data differ from the run's ({data['num_examples']} examples, fingerprint "
                            f"{data['fingerprint']}; now {prepared.num_examples}, {prepared.fingerprint}): the data "
                            "files, tokenizer or preparation changed since it started; start a new run")
        if stored["plan"] != now["plan"]:
            raise UserError(f"{how}: the shard plan differs from the run's ({_describe(stored['plan'])}; now "
                            f"{_describe(now['plan'])}); start a new run")
    for r in saved:
        if r.stop and (r.shard_id >= len(plan.bounds) or (r.start, r.stop) != plan.bounds[r.shard_id]):
            now = plan.bounds[r.shard_id] if r.shard_id < len(plan.bounds) else "no such shard"
            raise UserError(f"{how}: saved shard {r.key} holds examples {r.start}-{r.stop}, the plan now {now}: "
                            "the data or the plan changed since the run started; start a new run")


def _describe(identity: dict) -> str:
    return f"bs {identity['bs']}, {identity['num_examples']} examples in {len(identity['bounds'])} shards"
