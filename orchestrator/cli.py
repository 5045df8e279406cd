"""`bench`: the command line. Parses, calls one function per command, prints. No logic here.

Heavy imports (ray, torch, transformers) happen inside commands, so `bench --help` is instant.
User errors print one line on stderr and exit 2; a run that fails (a shard failing for good, every
worker dead) exits 1.
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
ResultsOpt = Annotated[Path, typer.Option("--results", help="results folder")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: key=value (dotted keys)")]


@contextmanager
def user_errors() -> Iterator[None]:
    from workers.errors import RunFailed, UserError

    try:
        yield
    except RunFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _overrides(sets: list[str] | None, workers: int | None) -> list[str]:
    return list(sets or []) + ([f"workers={workers}"] if workers is not None else [])


@app.command()
def submit(
    job: JobArg,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", help="number of worker actors")] = None,
    results: ResultsOpt = Path("results"),
    sets: SetOpt = None,
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster: auto, ray://head:10001 or head:6379")] = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="run one worker in this process, without Ray")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show worker logs")] = False,
    node_ip: Annotated[Optional[str], typer.Option("--node-ip", help="address a local Ray binds to")] = None,
) -> None:
    """Run a job and print its merged metrics table."""
    from rich.console import Console

    with user_errors():
        from orchestrator.driver import run_job
        from orchestrator.report import metrics_table
        from orchestrator.spec import load_spec

        spec = load_spec(job, _overrides(sets, workers))
        result = run_job(spec, results_dir=results, address=address, in_process=no_ray,
                         progress=sys.stderr.isatty(), verbose=verbose, node_ip=node_ip)
    console = Console(width=None if sys.stdout.isatty() else 220)
    console.print(metrics_table([result.row], title=f"{spec.name}: {spec.task.name} · {spec.model.label}"))
    if result.row.acc_flagged:
        console.print(f"[yellow]acc: infer and val differ by {result.row.acc_gap:.4f} (> acc_tolerance {spec.acc_tolerance})")
    console.print(f"run id: {result.run_id}")
    console.print(f"results: {results / 'metrics.parquet'} (row appended); run folder: {result.run_dir}")


@app.command()
def validate(job: JobArg, sets: SetOpt = None) -> None:
    """Check a job spec without running it."""
    with user_errors():
        from orchestrator.preflight import preflight
        from orchestrator.spec import load_spec

        spec = load_spec(job, _overrides(sets, None))
        preflight(spec)
    typer.echo(f"{job}: ok ({spec.task.name}, {spec.model.label}, engine {spec.engine.name}, bs {spec.bs}, seq_len {spec.seq_len})")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
