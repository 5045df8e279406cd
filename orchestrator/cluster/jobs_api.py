"""`bench submit --as-job`, `bench status`, `bench logs`: runs through the Ray Jobs API.

The job then shows in the dashboard's Jobs view with its logs, and survives the submitting
laptop going away. The resolved spec travels as the job's working_dir; the entrypoint is the same
`bench submit`, run on the head against the cluster it is in, under the run id we chose here
(submission id = run id), so `bench status RUN` and `bench logs RUN` find it. The Jobs API takes
the dashboard's HTTP address (`ray dashboard cluster.yaml` forwards it to localhost:8265); with
token auth on, Ray's client sends `Authorization: Bearer <token>` from RAY_AUTH_TOKEN or
~/.ray/auth_token (RAY_AUTH_MODE=token), and we check that the dashboard takes it first (auth.py).

The entrypoint is stored by the Jobs API and shown in the dashboard (and `ray job list`) to anyone
who can reach it, so a `--results` URI that carries credentials (`s3://KEY:SECRET@bucket/...`, or
a `secret_key=` option) is refused: the nodes use their own (environment, ~/.aws, instance role).

The entrypoint runs in a copy of the working_dir that Ray unpacks under its session directory and
deletes later, so results never go to a relative path there: `--results` is a URI or an absolute
path, and without one the job writes to $RAYBENCH_RESULTS on the head (when the cluster's nodes
export it) or else ~/raybench-results, expanded by the head's shell. The job prints the absolute
location as its first line, which `submit_as_job` waits for, so the user is told exactly where.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import tempfile
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

from workers.errors import UserError, first_line

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
HEAD_RESULTS = '"${RAYBENCH_RESULTS:-$HOME/raybench-results}"'  # expanded by the head's /bin/sh
HEAD_RESULTS_SHOWN = "$RAYBENCH_RESULTS or ~/raybench-results"
RESULTS_LINE = "raybench results: "  # the job's first line names its results store


def dashboard_address(address: str | None) -> str:
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_DASHBOARD
    if not address.startswith(("http://", "https://")):
        raise UserError(f"--address {address}: the Jobs API needs the dashboard's URL, e.g. {DEFAULT_DASHBOARD}")
    return address


def client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    from orchestrator.cluster.auth import check_dashboard

    url = dashboard_address(address)
    check_dashboard(url, f"--address {url}")
    try:
        return JobSubmissionClient(url)
    except Exception as exc:  # noqa: BLE001 - connection refused, 401, bad URL: all one line for the user
        raise UserError(f"--address {url}: cannot reach the Ray Jobs API: {first_line(exc)}") from exc


SECRET_OPTION = re.compile(r"secret|token|password|passwd|credential|access_key", re.IGNORECASE)


def credentials_in(uri: str) -> str | None:
    """What in `uri` is a credential ('user:secret@', a secret_key= option), or None."""
    parts = urlsplit(uri)
    if parts.password is not None:
        return "user:secret@"
    found = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True) if SECRET_OPTION.search(name)]
    return f"{found[0]}=" if found else None


def job_results(results: str | None) -> str | None:
    """Where a job's results go, as the head will read it: a URI or an absolute path (None: the
    head's default). A relative path would land in Ray's temporary copy of the working_dir; a URI
    with credentials would be shown in the dashboard."""
    from orchestrator.metrics.location import display_uri, is_uri

    if results is not None and is_uri(results):
        secret = credentials_in(results)
        if secret is not None:
            raise UserError(f"--results {display_uri(results)}: the URI holds credentials ({secret}), which --as-job "
                            "would store in the Jobs API entrypoint, visible in the dashboard; give the nodes "
                            "credentials through their environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                            "~/.aws) or an instance role, and a URI without them")
    if results is None or is_uri(results):
        return results
    path = Path(results).expanduser()
    if not path.is_absolute():
        raise UserError(f"--results {results}: with --as-job give a URI (s3://bucket/prefix) or an absolute path on "
                        f"the head, or leave it out for {HEAD_RESULTS_SHOWN} on the head")
    return str(path)


def entrypoint(run_id: str, results: str | None, verbose: bool) -> str:
    parts = ["bench", "submit", "job.yaml", "--address", "auto", "--run-id", run_id] + (["--verbose"] if verbose else [])
    return shlex.join(parts) + " --results " + (shlex.quote(results) if results else HEAD_RESULTS)


def submit_as_job(job_yaml: str, *, run_id: str, name: str, address: str | None, results: str | None,
                  verbose: bool) -> str:
    """Submit the resolved spec as a Ray job; returns the submission id (= the run id). The job's
    name (the spec's) goes under the metadata key the dashboard's Jobs view shows as "Name"."""
    from ray.dashboard.modules.job.common import JOB_NAME_METADATA_KEY

    jobs = client(address)
    with tempfile.TemporaryDirectory(prefix="raybench-job-") as folder:
        (Path(folder) / "job.yaml").write_text(job_yaml)
        try:
            return jobs.submit_job(
                entrypoint=entrypoint(run_id, results, verbose),
                submission_id=run_id,
                runtime_env={"working_dir": folder},
                metadata={JOB_NAME_METADATA_KEY: name, "raybench_run_id": run_id},
            )
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"Jobs API refused the submission: {first_line(exc)}") from exc


def announced_results(run_id: str, address: str | None, timeout_s: float = 30.0) -> str | None:
    """The results location the job printed first (see RESULTS_LINE), or None when the job ended
    or did not get that far within `timeout_s`."""
    jobs = client(address)

    async def first_announcement() -> str | None:
        text = ""
        async for chunk in jobs.tail_job_logs(run_id):  # chunks need not end at line ends
            text += chunk
            for line in text.splitlines(keepends=True):
                if line.startswith(RESULTS_LINE) and line.endswith("\n"):
                    return line.removeprefix(RESULTS_LINE).strip()
        return None

    async def bounded() -> str | None:
        try:
            return await asyncio.wait_for(first_announcement(), timeout_s)
        except asyncio.TimeoutError:
            return None

    return asyncio.run(bounded())


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
