"""`bench`: the command line. Parses, calls one function per command, prints. No logic here.

Heavy imports (ray, torch, transformers) happen inside commands, so `bench --help` is instant.
User errors print one line on stderr and exit 2; a run that fails (a shard failing for good, every
worker dead) exits 1; Ctrl-C stops the workers, keeps the finished shards and exits 130.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Distributed inference benchmarks on Ray: run job specs, read the metrics table.",
)

JobArg = Annotated[Path, typer.Argument(help="job spec (YAML)", show_default=False)]
OptionalJobArg = Annotated[Optional[Path], typer.Argument(help="job spec (YAML); omit with --resume", show_default=False)]
ResultsOpt = Annotated[Path, typer.Option("--results", help="results folder")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: key=value (dotted keys)")]
RunArg = Annotated[str, typer.Argument(help="run id (as printed by bench submit)")]
DashboardOpt = Annotated[Optional[str], typer.Option("--address", help="Ray dashboard URL (default $RAY_ADDRESS or http://127.0.0.1:8265)")]


def fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    from workers.errors import RunFailed, UserError

    try:
        yield
    except RunFailed as exc:
        fail(str(exc), 130 if type(exc).__name__ == "RunInterrupted" else 1)
    except UserError as exc:
        fail(str(exc), 2)


def _overrides(sets: list[str] | None, workers: int | None) -> list[str]:
    return list(sets or []) + ([f"workers={workers}"] if workers is not None else [])


def _load(job: Path | None, sets: list[str] | None, workers: int | None, resume: str | None, results: Path):
    """The spec to run: the job file with overrides, or the resolved spec kept in a resumed run."""
    from orchestrator.spec import load_spec
    from workers.errors import UserError

    if resume is None:
        if job is None:
            raise UserError("give a job file (bench submit JOB.yaml) or --resume RUN_ID")
        return load_spec(job, _overrides(sets, workers))
    if job is not None or sets or workers is not None:
        raise UserError("--resume RUN_ID re-runs the stored spec of that run: give no job file, --set or --workers")
    saved = results / "runs" / resume / "job.yaml"
    if not saved.exists():
        raise UserError(f"--resume {resume}: no such run in {results / 'runs'}")
    return load_spec(saved)


@app.command()
def submit(
    job: OptionalJobArg = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", help="number of worker actors")] = None,
    results: ResultsOpt = Path("results"),
    sets: SetOpt = None,
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster: auto, ray://head:10001 or head:6379; with --as-job the dashboard URL")] = None,
    as_job: Annotated[bool, typer.Option("--as-job", help="submit through the Ray Jobs API (shows in the dashboard's Jobs view)")] = False,
    resume: Annotated[Optional[str], typer.Option("--resume", help="finish an interrupted run: only its missing shards run")] = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="run one worker in this process, without Ray")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show worker logs")] = False,
    node_ip: Annotated[Optional[str], typer.Option("--node-ip", help="address a local Ray binds to")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", hidden=True)] = None,
) -> None:
    """Run a job and print its merged metrics table."""
    from rich.console import Console

    results = results.expanduser()
    with user_errors():
        if no_ray and workers is None and resume is None:
            workers = 1  # in-process mode is one worker: say so in the spec (and the row)
        spec = _load(job, sets, workers, resume, results)
        if as_job:
            return _submit_as_job(spec, address, results, verbose)
        from orchestrator.driver import run_job

        result = run_job(spec, results_dir=results, address=address, in_process=no_ray, progress=sys.stderr.isatty(),
                         verbose=verbose, node_ip=node_ip, run_id=resume or run_id, resume=resume is not None)
    console = Console(width=None if sys.stdout.isatty() else 220)
    from orchestrator.report import metrics_table

    console.print(metrics_table([result.row], title=f"{spec.name}: {spec.task.name} · {spec.model.label}"))
    if result.row.acc_flagged:
        console.print(f"[yellow]acc: infer and val differ by {result.row.acc_gap:.4f} (> acc_tolerance {spec.acc_tolerance})")
    if result.row.retries:
        console.print(f"retries: {result.row.retries} failed attempt(s) re-run (see {result.run_dir / 'retries.parquet'})")
    console.print(f"run id: {result.run_id}")
    console.print(f"results: {results / 'metrics.parquet'} (row appended); run folder: {result.run_dir}")


def _submit_as_job(spec, address: str | None, results: Path, verbose: bool) -> None:
    from orchestrator.driver import new_run_id
    from orchestrator.jobs_api import submit_as_job
    from orchestrator.spec import dump_spec

    run_id = new_run_id(spec.name)
    submit_as_job(dump_spec(spec), run_id=run_id, name=spec.name, address=address, results=str(results), verbose=verbose)
    typer.echo(f"submitted run {run_id} as a Ray job; results go to {results} on the head node")
    typer.echo(f"follow it: bench status {run_id} · bench logs {run_id} --follow")


@app.command()
def status(run: RunArg, address: DashboardOpt = None) -> None:
    """Status of a run submitted with --as-job."""
    with user_errors():
        from orchestrator.jobs_api import status as job_status

        state, message = job_status(run, address)
    typer.echo(f"{run}: {state}" + (f" ({message})" if message else ""))


@app.command()
def logs(run: RunArg, address: DashboardOpt = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the run ends")] = False) -> None:
    """Logs of a run submitted with --as-job."""
    with user_errors():
        from orchestrator.jobs_api import logs as job_logs

        job_logs(run, address, follow, lambda text: typer.echo(text, nl=False))


@app.command()
def validate(job: JobArg, sets: SetOpt = None) -> None:
    """Check a job spec without running it."""
    with user_errors():
        from orchestrator.preflight import preflight
        from orchestrator.spec import load_spec

        spec = load_spec(job, _overrides(sets, None))
        preflight(spec)
    typer.echo(f"{job}: ok ({spec.task.name}, {spec.model.label}, engine {spec.engine.name}, bs {spec.bs}, seq_len {spec.seq_len})")


if __name__ == "__main__":  # pragma: no cover
    app()
