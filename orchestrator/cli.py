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
ResultsOpt = Annotated[Optional[str], typer.Option(
    "--results", envvar="RAYBENCH_RESULTS", show_default=False,
    help="results folder or URI (s3://bucket/prefix, gs://..., hdfs://...); default ./results")]
LOCAL_RESULTS = "results"
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: key=value (dotted keys)")]
RunArg = Annotated[str, typer.Argument(help="run id (as printed by bench submit)")]
DashboardOpt = Annotated[Optional[str], typer.Option("--address", help="Ray dashboard URL (default $RAY_ADDRESS or http://127.0.0.1:8265)")]


def fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    from workers.errors import RunFailed, RunInterrupted, UserError

    try:
        yield
    except RunInterrupted as exc:
        fail(str(exc), 130)
    except RunFailed as exc:
        fail(str(exc), 1)
    except UserError as exc:
        fail(str(exc), 2)


def _overrides(sets: list[str] | None, workers: int | None) -> list[str]:
    return list(sets or []) + ([f"workers={workers}"] if workers is not None else [])


def _load(job: Path | None, sets: list[str] | None, workers: int | None, resume: str | None, results: str):
    """The spec to run: the job file with overrides, or the resolved spec kept in a resumed run."""
    from orchestrator.metrics.store import ResultsStore
    from orchestrator.spec import load_spec, load_spec_text
    from workers.errors import UserError

    if resume is None:
        if job is None:
            raise UserError("give a job file (bench submit JOB.yaml) or --resume RUN_ID")
        return load_spec(job, _overrides(sets, workers))
    if job is not None or sets:
        raise UserError("--resume RUN_ID re-runs the stored spec of that run: give no job file or --set "
                        "(--workers may change: the shards do not depend on it)")
    store = ResultsStore(results)
    run = store.run(resume)
    if not run.exists():
        raise UserError(f"--resume {resume}: no such run in {store.location}")
    return load_spec_text(run.read_text("job.yaml"), f"{run.location}/job.yaml", _overrides(None, workers))


@app.command()
def submit(
    job: OptionalJobArg = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", help="number of worker actors")] = None,
    results: ResultsOpt = None,
    sets: SetOpt = None,
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster: auto, ray://head:10001 or head:6379; with --as-job the dashboard URL")] = None,
    temp_dir: Annotated[Optional[str], typer.Option("--temp-dir", help="with --address auto: the --temp-dir the cluster's `ray start` was given")] = None,
    as_job: Annotated[bool, typer.Option("--as-job", help="submit through the Ray Jobs API (shows in the dashboard's Jobs view)")] = False,
    resume: Annotated[Optional[str], typer.Option("--resume", help="finish an interrupted run: only its missing shards run")] = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="run one worker in this process, without Ray")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show worker logs")] = False,
    node_ip: Annotated[Optional[str], typer.Option("--node-ip", help="address a local Ray binds to")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 when a row is flagged (acc gap) or INVALID")] = False,
    run_id: Annotated[Optional[str], typer.Option("--run-id", hidden=True)] = None,
) -> None:
    """Run a job (every point of its sweep) and print the merged metrics table."""
    import os

    with user_errors():
        spec = _load(job, sets, workers, resume, results or LOCAL_RESULTS)
        if no_ray and workers is None and resume is None and "workers" in type(spec).model_fields:
            spec = _load(job, sets, 1, resume, results or LOCAL_RESULTS)  # one worker: say so in the spec and row
        if as_job:
            return _submit_as_job(spec, address, results, verbose)
        from orchestrator.metrics.store import ResultsStore
        from orchestrator.driver import run_all

        store = ResultsStore(results or LOCAL_RESULTS)
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # Ray sets it (by that name) for a job's entrypoint
            from orchestrator.cluster.jobs_api import RESULTS_LINE

            typer.echo(f"{RESULTS_LINE}{store.location}")
        if address == "auto":
            from orchestrator.cluster.connect import resolve_address

            address = resolve_address(address, temp_dir)
        from workers.errors import RunComplete

        try:
            runs = run_all(spec, results_dir=store.uri, address=address, in_process=no_ray,
                           progress=sys.stderr.isatty(), verbose=verbose, node_ip=node_ip, run_id=resume or run_id,
                           resume=resume is not None)
        except RunComplete as done:
            typer.echo(str(done))
            return
    from orchestrator.views.report import print_runs

    trouble = print_runs(runs, spec, store.location, width=None if sys.stdout.isatty() else 220)
    if strict and trouble:
        fail(f"--strict: {trouble}", 1)


def _submit_as_job(spec, address: str | None, results: str | None, verbose: bool) -> None:
    from orchestrator.metrics.location import display_uri, is_uri
    from orchestrator.driver import new_run_id
    from orchestrator.cluster.jobs_api import HEAD_RESULTS_SHOWN, announced_results, job_results, submit_as_job
    from orchestrator.spec import dump_spec

    run_id = new_run_id(spec.name)
    target = job_results(results)
    submit_as_job(dump_spec(spec), run_id=run_id, name=spec.name, address=address, results=target, verbose=verbose)
    typer.echo(f"submitted run {run_id} as a Ray job")
    if target is not None and is_uri(target):
        typer.echo(f"results go to {display_uri(target)}")
    elif (where := announced_results(run_id, address)) is not None:
        typer.echo(f"results go to {where} on the head node")
    else:
        typer.echo(f"results go to {target or HEAD_RESULTS_SHOWN} on the head node (the job has not said yet: bench logs {run_id})")
    typer.echo(f"follow it: bench status {run_id} · bench logs {run_id} --follow")


@app.command()
def status(run: RunArg, address: DashboardOpt = None) -> None:
    """Status of a run submitted with --as-job."""
    with user_errors():
        from orchestrator.cluster.jobs_api import status as job_status

        state, message = job_status(run, address)
    typer.echo(f"{run}: {state}" + (f" ({message})" if message else ""))


@app.command()
def logs(run: RunArg, address: DashboardOpt = None,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the run ends")] = False) -> None:
    """Logs of a run submitted with --as-job."""
    with user_errors():
        from orchestrator.cluster.jobs_api import logs as job_logs

        job_logs(run, address, follow, lambda text: typer.echo(text, nl=False))


@app.command()
def validate(
    job: JobArg,
    sets: SetOpt = None,
    plan: Annotated[bool, typer.Option("--plan", help="prepare the data (filling its cache) and print the run's plan")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="with --plan: table | json")] = "table",
) -> None:
    """Check a job spec without running it; with --plan, print what the run would do."""
    with user_errors():
        from orchestrator.preflight import preflight
        from orchestrator.spec import load_spec
        from workers.errors import UserError

        if fmt not in ("table", "json"):
            raise UserError(f"--format: '{fmt}' is not one of table, json")
        spec = load_spec(job, _overrides(sets, None))
        if plan and hasattr(spec, "endpoint"):
            raise UserError("--plan: an endpoint job has no shards to plan (its schedule is drawn when it runs)")
        if plan:
            from orchestrator.modes.offline.preview import preview

            shown = preview(spec)
        else:
            preflight(spec)
    if plan:
        from orchestrator.views.plan_view import plan_json, print_plan

        if fmt == "json":
            typer.echo(plan_json(shown))
        else:
            print_plan(shown, width=None if sys.stdout.isatty() else 160)
        return
    if hasattr(spec, "endpoint"):
        typer.echo(f"{job}: ok (endpoint {', '.join(spec.endpoint.url)}, model {spec.endpoint.model} answers, "
                   f"load {spec.load.kind})")
        return
    typer.echo(f"{job}: ok ({spec.task.name}, {spec.model.label}, engine {spec.engine.name}, bs {spec.bs}, seq_len {spec.seq_len})")


@app.command()
def schema() -> None:
    """Print the JSON Schema of job files (bench schema > job.schema.json), for editors to validate and complete."""
    import json

    from orchestrator.reference import job_schema

    typer.echo(json.dumps(job_schema(), indent=2))


FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table | csv | json | markdown")]


@app.command()
def results(
    results: ResultsOpt = None,
    where: Annotated[Optional[list[str]], typer.Option(
        "--where", help="COLUMN OP VALUE, OP one of = != > >= < <= ~ (substring); repeat to AND")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", "-c", help="comma-separated columns")] = None,
    sort: Annotated[Optional[str], typer.Option("--sort", help="column to sort by; -column for descending")] = None,
    last: Annotated[Optional[int], typer.Option("--last", help="only the last N rows")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Query the global metrics table."""
    from rich.console import Console

    with user_errors():
        from orchestrator.views.query import results as query_results

        out = query_results(results or LOCAL_RESULTS, where, columns.split(",") if columns else None, fmt, sort, last)
    if isinstance(out, str):
        typer.echo(out, nl=False)
    else:
        Console(width=None if sys.stdout.isatty() else 220).print(out)


@app.command()
def report(
    run: Annotated[str, typer.Argument(help="run id, or a unique part of it")],
    results: ResultsOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="folder; default runs/<id>/report in a local results folder, ./report-<id> for a URI")] = None,
) -> None:
    """Write a Markdown and a self-contained HTML report of one run, with plots."""
    with user_errors():
        from orchestrator.views.html_report import report_run

        md_path, html_path = report_run(results or LOCAL_RESULTS, run, out)
    typer.echo(f"report: {md_path}\nreport: {html_path}")


@app.command()
def accuracy(
    run: RunArg,
    results: ResultsOpt = None,
) -> None:
    """Score a LoadGen accuracy run's log again (its responses, with the run's own data and task)."""
    with user_errors():
        from orchestrator.metrics.store import ResultsStore
        from orchestrator.modes.loadgen.accuracy import accuracy_of_run

        store = ResultsStore(results or LOCAL_RESULTS)
        folder = store.run(run)
        if not folder.exists():
            from workers.errors import UserError

            raise UserError(f"no run {run} in {store.location}")
        scored = accuracy_of_run(folder)
    value = "-" if scored.accuracy is None else f"{scored.accuracy:.4f}"
    typer.echo(f"accuracy from LoadGen's log: {value} ({scored.correct} of {scored.scored} scored; {scored.examples} "
               f"examples answered, {scored.missing} missing)")


export_app = typer.Typer(no_args_is_help=True, help="Write runs out in another tool's layout.")
app.add_typer(export_app, name="export")


@export_app.command("mlperf")
def export_mlperf(
    runs: Annotated[list[str], typer.Argument(help="LoadGen run ids (or unique parts): performance, accuracy, "
                                                    "audited runs; then the output folder", show_default=False)],
    results: ResultsOpt = None,
    division: Annotated[str, typer.Option("--division", help="closed | open")] = "open",
    submitter: Annotated[str, typer.Option("--submitter", help="the submitter's folder name")] = "raybench",
    system: Annotated[Optional[str], typer.Option("--system", help="system folder name; default from the devices")] = None,
    benchmark: Annotated[Optional[str], typer.Option("--benchmark", help="the checker's benchmark name (bert-99.9, "
                                                     "resnet, ...); default from load.mlperf_model")] = None,
    system_json: Annotated[Optional[Path], typer.Option("--system-json", help="your system description fields (JSON), "
                                                        "over what the runs recorded")] = None,
) -> None:
    """Lay LoadGen runs out as an MLPerf Inference submission tree and check it by the submission
    checker's rules (every problem is printed; exit 1 when there is any)."""
    import json

    with user_errors():
        from orchestrator.metrics.store import ResultsStore
        from orchestrator.submission.tree import Identity, export_runs
        from orchestrator.views.query import find_row
        from workers.errors import UserError

        if len(runs) < 2:
            raise UserError("give one or more run ids and then the output folder: bench export mlperf RUN_ID... DIR")
        *ids, out = runs
        fields = None
        if system_json is not None:
            try:
                fields = json.loads(system_json.read_text())
            except (OSError, ValueError) as exc:
                raise UserError(f"--system-json {system_json}: {exc}") from exc
        store = ResultsStore(results or LOCAL_RESULTS)
        rows = [find_row(store, run) for run in ids]
        folder, problems = export_runs(store, rows, Path(out), Identity(division, submitter, system, benchmark, fields))
    typer.echo(f"submission tree: {folder}")
    if problems:
        typer.echo(f"{len(problems)} problem(s) by the submission checker's rules:")
        for problem in problems:
            typer.echo(f"  {problem}")
        raise typer.Exit(1)
    typer.echo("no problem by the submission checker's rules raybench checks")


@app.command()
def compare(
    run_a: Annotated[str, typer.Argument(help="baseline run id (or a unique part)")],
    run_b: Annotated[str, typer.Argument(help="run to compare with the baseline")],
    results: ResultsOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | markdown")] = "table",
    alpha: Annotated[float, typer.Option("--alpha", help="rank-test significance level")] = 0.01,
    min_effect: Annotated[float, typer.Option("--min-effect", help="smallest relative change called beyond noise")] = 0.03,
) -> None:
    """Per-column deltas B - A, each marked beyond or within noise."""
    from rich.console import Console

    with user_errors():
        from orchestrator.views.compare import (
            compare_runs,
            config_changes,
            deltas_markdown,
            deltas_table,
            prompt_warning,
        )

        row_a, row_b, deltas = compare_runs(results or LOCAL_RESULTS, run_a, run_b, alpha, min_effect)
    changes = ", ".join(f"{c}: {a} -> {b}" for c, a, b in config_changes(row_a, row_b)) or "none"
    warning = prompt_warning(row_a, row_b)
    if fmt == "markdown":
        typer.echo(deltas_markdown(deltas) + f"\nsetup changes: {changes}" + (f"\n\n**{warning}**" if warning else ""))
        return
    console = Console(width=None if sys.stdout.isatty() else 220)
    console.print(deltas_table(deltas, title=f"A {row_a.run_id} -> B {row_b.run_id}"))
    console.print(f"setup changes: {changes}")
    if warning:
        console.print(warning, style="bold red", markup=False)


if __name__ == "__main__":  # pragma: no cover
    app()
