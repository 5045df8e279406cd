"""One grid point as every mode gets it, and the step every mode ends with: the run folder and the row.

The driver makes a `Point` for each grid point (its spec, the results store, this driver's session,
the progress bar, the timeline) and hands it to the mode the job's load names
(orchestrator/modes/). Every mode brings its workers up the same way (orchestrator/cluster/bring_up.py)
and ends with `finish` (or, for a mode without workers or shards, `store_row`: the endpoint mode),
so every row has the same setup figures, run folder files and timeline.
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
from workers.requests import RequestRecord


@dataclass
class Point:
    spec: EngineJob  # an EndpointJob in the endpoint mode
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
           data: list[DataInfo], failed: list[ShardResult], predictions: list[dict],
           requests: list[RequestRecord] | None = None) -> RunResult:
    """The run folder's tables, metrics.md and timeline, then the row: the row is added last, so a
    run that fails on the way adds none. `requests` (generate): the records the row's latencies were
    read from, kept in requests.parquet (default: the measured shards' own)."""
    from orchestrator.metrics.generation import requests_table
    from orchestrator.views.report import metrics_markdown

    run, spec = point.run, point.spec
    run.write_shards_table(results, infos)
    run.write_workers_table(infos)
    if requests is None:
        head = "infer" if row.items_infer is not None else "val"
        requests = [rec for (p, repeat, _), r in sorted(completed(results).items()) if p == head and repeat == 0
                    for rec in r.requests]
    run.write_records("requests.parquet", requests_table(requests))
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
    timeline = store_row(point, row, text, results, infos=infos)
    return RunResult(run.run_id, row, run.path, results, infos, data, failed, predictions, timeline)


def store_row(point: Point, row: MetricsRow, markdown: str, results: list[ShardResult] = (),
              timeline_extra: dict | None = None, infos: list[WorkerInfo] = ()) -> dict:
    """What every mode ends with, whatever files it wrote before: metrics.md, the row (added last
    but the timeline, so a run that fails on the way adds none) and timeline.json (`timeline_extra`:
    what a mode adds to it, e.g. an endpoint run's schedules and the server's metrics)."""
    run = point.run
    run.write_text("metrics.md", markdown)
    point.store.append_rows([row])
    point.timeline.mark("row_written")
    timeline = {**point.timeline.record(list(results), list(infos)), **(timeline_extra or {})}
    run.write_text(TIMELINE_FILE, json.dumps(timeline))
    return timeline
