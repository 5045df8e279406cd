"""--as-job pieces that need no cluster: where the head writes results, as its shell reads it."""

import os
import subprocess

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.cluster.jobs_api import entrypoint


def head_shell_args(command: str, **env) -> list[str]:
    """The entrypoint's arguments after /bin/sh (what Ray's job supervisor runs it with) expands them."""
    assert command.startswith("bench ")
    out = subprocess.run(["/bin/sh", "-c", "printf '%s\\n' " + command.removeprefix("bench ")],
                         capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"], **env})
    return out.stdout.splitlines()


def test_without_results_the_head_writes_to_its_own_durable_folder():
    command = entrypoint("run-1", None, verbose=False)
    assert head_shell_args(command, HOME="/home/ray")[-2:] == ["--results", "/home/ray/raybench-results"]
    assert head_shell_args(command, HOME="/home/ray", RAYBENCH_RESULTS="/data/bench")[-1] == "/data/bench"


def test_a_uri_with_options_reaches_the_head_as_one_argument():
    uri = "s3://bench/r?endpoint_override=http://10.0.0.9:9000&scheme=http"
    assert head_shell_args(entrypoint("run-1", uri, verbose=True), HOME="/h")[-2:] == ["--results", uri]


@pytest.mark.parametrize("results", ["results", "./out"])
def test_a_relative_results_path_is_refused_for_a_job(results):
    out = CliRunner().invoke(app, ["submit", "jobs/smoke.yaml", "--as-job", "--results", results,
                                   "--address", "http://127.0.0.2:9"])
    assert out.exit_code == 2
    assert out.stderr.strip().splitlines() == [
        f"error: --results {results}: with --as-job give a URI (s3://bucket/prefix) or an absolute path on the head, "
        "or leave it out for $RAYBENCH_RESULTS or ~/raybench-results on the head"]


@pytest.mark.parametrize("results, what", [("s3://AKIAEXAMPLE:wJalrSECRET@bench/runs", "user:secret@"),
                                           ("s3://bench/runs?secret_key=wJalrSECRET&region=x", "secret_key=")])
def test_credentials_in_the_results_uri_are_refused_for_a_job(results, what):
    """The entrypoint (with --results) is stored by the Jobs API and shown in the dashboard: one
    line, exit 2, before anything is submitted, and the secret is not echoed."""
    out = CliRunner().invoke(app, ["submit", "jobs/smoke.yaml", "--as-job", "--results", results,
                                   "--address", "http://127.0.0.2:9"])
    assert out.exit_code == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: --results s3://") and f"the URI holds credentials ({what})" in line
    assert "environment" in line and "instance role" in line and "wJalrSECRET" not in line
