"""The driver: a job from spec to stored rows, one per grid point, whatever drives its load.

    preflight (no cluster needed) -> connect (or start) Ray -> for each point: a session, then the
    mode its `load.kind` names (orchestrator/modes/), which brings the workers up, runs, and stores
    the point's row

The driver names no mode: `modes.mode_for` picks it. Ctrl-C stops the workers and raises
RunInterrupted; a resume of a finished run is RunComplete before Ray starts.
"""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator.cluster.progress import RunProgress
from orchestrator.metrics.store import ResultsStore
from orchestrator.modes import mode_for
from orchestrator.point import Point
from orchestrator.preflight import preflight
from orchestrator.session import RunResult, new_run_id, open_session
from orchestrator.spec import JobBase
from orchestrator.timeline import Timeline
from workers.errors import RunComplete, RunInterrupted, UserError


def run_job(spec: JobBase, **options) -> RunResult:
    """Run a single-point job (no `sweep`) and store its row. See `run_all` for the options."""
    if spec.sweep:
        raise ValueError("run_job runs one point; use run_all for a sweep")
    return run_all(spec, **options)[0]


def run_all(
    spec: JobBase,
    *,
    results_dir: str | Path = "results",
    address: str | None = None,
    in_process: bool = False,
    progress: bool = False,
    verbose: bool = False,
    node_ip: str | None = None,
    run_id: str | None = None,
    resume: bool = False,
) -> list[RunResult]:
    """Run a job, or every point of its sweep on the same cluster, one stored row per point.

    Raises UserError (bad input) or RunFailed (the run could not finish); on Ctrl-C,
    RunInterrupted after the workers are stopped; RunComplete for a resume of a finished run.
    """
    submitted = time.perf_counter()
    store = ResultsStore(results_dir)
    store.check_writable()  # before any data is prepared or Ray starts
    points = spec.points()
    if resume and len(points) > 1:
        raise UserError("--resume takes the run id of one point; every point of a sweep is its own run")
    if resume and run_id and store.has_row(run_id):  # before starting Ray: nothing will run
        raise RunComplete(f"run {run_id} is already complete (its row is in {store.location}); nothing to resume, "
                          "nothing added")
    sweep_id = new_run_id(f"{spec.name}-sweep") if len(points) > 1 else None
    for point in points:
        _check_point(point, in_process, data_on_nodes=address is not None and not in_process)
    started_ray = False
    current = run_id or ""
    ray: tuple[float, float] | None = None  # (seconds to start or join Ray, when it was ready), for the first point
    try:
        if not in_process:
            from orchestrator.cluster.connect import connect

            before = time.perf_counter()
            started_ray = connect(address, verbose=verbose, node_ip=node_ip)
            ray = (time.perf_counter() - before, time.perf_counter() - submitted)
        out = []
        for spec_point in points:
            current = run_id if run_id and len(points) == 1 else new_run_id(spec_point.name)
            session = open_session(store, current, resume, sweep_id, submitted)
            out.append(_run_point(spec_point, store, session, in_process, progress, ray))
            submitted, ray = time.perf_counter(), None
        return out
    except KeyboardInterrupt:
        raise RunInterrupted(current, store.run(current).exists(), store.shown_uri) from None
    finally:
        if started_ray:
            from orchestrator.cluster.connect import disconnect

            disconnect()


def _check_point(spec: JobBase, in_process: bool, data_on_nodes: bool) -> None:
    """What a point needs that no cluster can give: its files, a shape one process can run, and
    whatever its target can be asked before anything starts (orchestrator/preflight.py)."""
    preflight(spec, data_on_nodes=data_on_nodes, in_process=in_process)


def _run_point(spec: JobBase, store: ResultsStore, session, in_process: bool, progress: bool,
               ray: tuple[float, float] | None) -> RunResult:
    """One grid point, handed to the mode its load names. `ray`: how long starting or joining Ray
    took and when it was ready (the command's first point)."""
    with RunProgress(enabled=progress) as bar:
        point = Point(spec, store, session, in_process, bar, Timeline(session.started, session.started_at),
                      ray_start_seconds=ray[0] if ray else None)
        if ray is not None:
            point.timeline.mark("ray_started", ray[1])
        return mode_for(spec.load.kind)(point)
