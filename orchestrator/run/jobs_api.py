"""`bench submit --as-job`, `bench status`, `bench logs`: runs through the Ray Jobs API.

The job then shows in the dashboard's Jobs view with its logs, and survives the submitting
laptop going away. The resolved spec travels as the job's working_dir; the entrypoint is the same
`bench submit`, run on the head against the cluster it is in, under the run id we chose here
(submission id = run id), so `bench status RUN` and `bench logs RUN` find it. The Jobs API takes
the dashboard's HTTP address (`ray dashboard cluster.yaml` forwards it to localhost:8265); with
token auth on, Ray's client sends `Authorization: Bearer <token>` from RAY_AUTH_TOKEN or
~/.ray/auth_token (RAY_AUTH_MODE=token).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import tempfile
from pathlib import Path
from typing import Callable

from workers.errors import UserError, first_line

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"


def dashboard_address(address: str | None) -> str:
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_DASHBOARD
    if not address.startswith(("http://", "https://")):
        raise UserError(f"--address {address}: the Jobs API needs the dashboard's URL, e.g. {DEFAULT_DASHBOARD}")
    return address


def client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    url = dashboard_address(address)
    try:
        return JobSubmissionClient(url)
    except Exception as exc:  # noqa: BLE001 - connection refused, 401, bad URL: all one line for the user
        raise UserError(f"--address {url}: cannot reach the Ray Jobs API: {first_line(exc)}") from exc


def entrypoint(run_id: str, results: str, verbose: bool) -> str:
    parts = ["bench", "submit", "job.yaml", "--address", "auto", "--run-id", run_id, "--results", results]
    return shlex.join(parts + (["--verbose"] if verbose else []))


def submit_as_job(job_yaml: str, *, run_id: str, name: str, address: str | None, results: str, verbose: bool) -> str:
    """Submit the resolved spec as a Ray job; returns the submission id (= the run id)."""
    jobs = client(address)
    with tempfile.TemporaryDirectory(prefix="raybench-job-") as folder:
        (Path(folder) / "job.yaml").write_text(job_yaml)
        try:
            return jobs.submit_job(
                entrypoint=entrypoint(run_id, results, verbose),
                submission_id=run_id,
                runtime_env={"working_dir": folder},
                metadata={"raybench_job": name},
            )
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"Jobs API refused the submission: {first_line(exc)}") from exc


def status(run_id: str, address: str | None) -> tuple[str, str]:
    jobs = client(address)
    try:
        info = jobs.get_job_info(run_id)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"run {run_id}: no such job on {dashboard_address(address)}") from exc
    return str(info.status.value if hasattr(info.status, "value") else info.status), info.message or ""


def logs(run_id: str, address: str | None, follow: bool, write: Callable[[str], None]) -> None:
    """Write the job's log so far; with `follow`, keep writing until the job ends."""
    jobs = client(address)
    status(run_id, address)  # a clear error for an unknown run
    if not follow:
        write(jobs.get_job_logs(run_id))
        return

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(run_id):
            write(chunk)

    asyncio.run(tail())
