"""This driver's part of a run: its clock, and what earlier drivers of the same run left behind.

A run id names one grid point's run folder. The first driver's start is `started_at` in
`runs/<id>/run.json`; every `bench submit --resume` adds its own start (epoch seconds) to
`runs/<id>/sessions.json` before it runs anything. A driver that dies writes no end; its last sign
of life is the end of the last shard it saved. So the pause before session k runs from the later of
(session k-1's start, the last shard end before session k started) to session k's start.
METRICS.md: `e2e_time` and the whole spans of a resumed run count the time a driver was running,
not the time no driver was there.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path

from orchestrator.metrics.passes import Pause, completed
from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.store import ResultsStore, RunFolder
from workers.contract import DataInfo, ShardResult, WorkerInfo
from workers.errors import UserError

SESSIONS = "sessions.json"


def new_run_id(name: str) -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{name}-{secrets.token_hex(3)}"


@dataclass
class Session:
    """This driver process's part of a run: its clock and, when resuming, what was done before:
    the finished shards, the seconds earlier drivers ran it, and when no driver was running it."""

    run: RunFolder
    started: float  # perf_counter: submit for a command's first point, the previous point's end after
    done: dict[tuple[str, int, int], ShardResult]
    prior_seconds: float
    sweep_id: str | None
    pauses: tuple[Pause, ...] = ()

    @property
    def started_at(self) -> float:
        """This session's start in epoch seconds (`started` is a perf_counter reading)."""
        return time.time() - (time.perf_counter() - self.started)

    def e2e_seconds(self) -> float:
        """The run's e2e_time so far: earlier drivers' seconds and this one's."""
        return self.prior_seconds + time.perf_counter() - self.started


def open_session(store: ResultsStore, run_id: str, resume: bool, sweep_id: str | None, started: float) -> Session:
    """`started` is the perf_counter the point's e2e_time counts from: submit for the first point
    (so cluster connect is in it), the end of the previous point for the next ones."""
    run = store.run(run_id)
    if not resume:
        return Session(run, started, {}, 0.0, sweep_id)
    if not run.exists():
        raise UserError(f"--resume {run_id}: no such run in {store.location}")
    saved = run.load_shards()
    meta = json.loads(run.read_text("run.json")) if run.has("run.json") else {}
    session = Session(run, started, completed(saved), 0.0, meta.get("sweep_id"))
    starts = record_session(run, session.started_at)
    session.pauses = pauses_between(starts, [r.end_ts for r in saved])
    paused = sum(to - since for since, to in session.pauses)
    session.prior_seconds = max(0.0, starts[-1] - starts[0] - paused)
    return session


def pauses_between(session_starts: list[float], shard_ends: list[float]) -> tuple[Pause, ...]:
    """(from, to) of every stretch with no driver, from the sessions' starts and the shards' ends."""
    out = []
    starts = sorted(session_starts)
    for previous, start in pairwise(starts):
        alive = max([previous] + [end for end in shard_ends if previous <= end <= start])
        if start > alive:
            out.append((alive, start))
    return tuple(out)


def session_starts(run: RunFolder) -> list[float]:
    """The starts recorded so far: sessions.json once a run was resumed, else the first driver's start."""
    if run.has(SESSIONS):
        return list(json.loads(run.read_text(SESSIONS)))
    meta = json.loads(run.read_text("run.json")) if run.has("run.json") else {}
    return [meta["started_at"]] if meta.get("started_at") is not None else []


def record_session(run: RunFolder, started_at: float) -> list[float]:
    """Add this driver's start to the run's sessions; returns every start, this one last."""
    starts = session_starts(run) + [started_at]
    run.write_text(SESSIONS, json.dumps(starts))
    return starts


@dataclass
class RunResult:
    """What `run_job`/`run_all` return for each point: the stored row and what it was made from."""

    run_id: str
    row: MetricsRow
    run_dir: Path | str  # a local Path, or where the run is in a remote store (s3://bucket/prefix/runs/<id>)
    results: list[ShardResult]
    infos: list[WorkerInfo]
    data: list[DataInfo]  # the data preparation (one per node that prepared it)
    failed_attempts: list[ShardResult] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)  # per-question records of the measured pass (mmlu)
    timeline: dict = field(default_factory=dict)  # where the time went (orchestrator/timeline.py)
