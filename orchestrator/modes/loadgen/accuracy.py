"""LoadGen's accuracy log scored again, with no model run: raybench's accuracy script.

An accuracy run completes every sample with its prediction's bytes (the task's response: the same
in performance mode, as MLPerf's rules ask), and LoadGen keeps them in `mlperf_log_accuracy.json`.
Reading them back with the run's own data and task gives the accuracy anyone can check against the
row (and against the Offline run of the same job): `bench accuracy RUN_ID`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from orchestrator.metrics.store import RunFolder
from orchestrator.spec import load_spec_text
from workers.errors import UserError

LOG = "mlperf_log_accuracy.json"


@dataclass(frozen=True)
class LogAccuracy:
    examples: int  # distinct examples the log answers
    missing: int  # examples of the data it does not
    scored: int
    correct: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None


def log_responses(text: str) -> dict[int, bytes]:
    """qsl_idx -> the first response LoadGen logged for it (an example issued twice answers the same)."""
    out: dict[int, bytes] = {}
    for entry in json.loads(text or "[]"):
        out.setdefault(int(entry["qsl_idx"]), bytes.fromhex(entry["data"]))
    return out


def accuracy_of_run(run: RunFolder, log: str = f"loadgen/{LOG}") -> LogAccuracy:
    """Score the run's accuracy log with its own job's data and task (prepared again, or from the cache)."""
    from workers.data.dataprep import prepare_dataset
    from workers.tasks import task_class

    if not run.has(log):
        raise UserError(f"run {run.run_id} has no {log}: run the job with load.mode accuracy")
    spec = load_spec_text(run.read_text("job.yaml"), f"{run.location}/job.yaml")
    config = spec.worker_config()
    _, table = prepare_dataset(config)
    task = task_class(config.task)(table)
    responses = log_responses(run.read_text(log))
    score = task.score_responses(responses)
    return LogAccuracy(len(responses), task.num_examples() - len(responses), score.scored, score.correct)
