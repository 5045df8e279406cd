"""One grid point as every mode gets it, and the step every mode ends with: the run folder and the row.

The driver makes a `Point` for each grid point (its spec, the results store, this driver's session,
the progress bar, the timeline) and hands it to the mode the job's load names
(orchestrator/modes/). Every mode brings its workers up the same way (orchestrator/cluster/bring_up.py)
and ends with `finish`, so every row has the same setup figures, run folder files and timeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from orchestrator.cluster.progress import RunProgress
from orchestrator.metrics.passes import completed
from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.store import ResultsStore
from orchestrator.session import RunResult, Session
from orchestrator.spec import EngineJob
from orchestrator.timeline import TIMELINE_FILE, Timeline
from workers.contract import DataInfo, ShardResult, WorkerInfo


@dataclass
class Point:
    spec: EngineJob
    store: ResultsStore
    session: Session
    in_process: bool
    bar: RunProgress
    timeline: Timeline
    ray_start_seconds: float | None = None  # starting or joining Ray: the command's first point only

    @property
    def run(self):
        return self.session.run

    @property
    def run_id(self) -> str:
        return self.session.run.run_id

    def status(self, text: str) -> None:
        self.bar.status(f"run {self.run_id}: {text}")


def finish(point: Point, row: MetricsRow, results: list[ShardResult], infos: list[WorkerInfo],
           data: list[DataInfo], failed: list[ShardResult], predictions: list[dict]) -> RunResult:
    """The run folder's tables, metrics.md and timeline, then the row: the row is added last, so a
    run that fails on the way adds none."""
    from orchestrator.views.report import metrics_markdown

    run, spec = point.run, point.spec
    run.write_shards_table(results, infos)
    run.write_workers_table(infos)
    records = [dict(rec, **{"pass": r.pass_name, "repeat": r.repeat})
               for r in completed(results).values() for rec in r.records]
    run.write_records("predictions.parquet", records)
    run.write_records("retries.parquet", [
        {"pass": r.pass_name, "repeat": r.repeat, "shard_id": r.shard_id, "attempt": r.attempt, "worker_id": r.worker_id,
         "node_id": r.node_id, "kind": r.error.kind, "message": r.error.message}
        for r in failed
    ])
    text = metrics_markdown([row])
    if spec.task.name == "mmlu":
        from orchestrator.metrics.subjects import subjects_markdown

        text += "\n" + subjects_markdown(predictions, scoring=spec.task.scoring)
    run.write_text("metrics.md", text)
    point.store.append_rows([row])
    point.timeline.mark("row_written")
    timeline = point.timeline.record(results, infos)
    run.write_text(TIMELINE_FILE, json.dumps(timeline))
    return RunResult(run.run_id, row, run.path, results, infos, data, failed, predictions, timeline)
