"""Bad input to an endpoint job: one line naming the cause, exit 2, in seconds, and nothing stored."""

import socket
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.fakes.openai_server import serve
from tests.orchestrator.modes.endpoint.helpers import endpoint_job


def submit(tmp_path: Path, raw: dict, *sets: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    started = time.perf_counter()
    out = CliRunner().invoke(app, ["submit", str(job), "--no-ray", "--results", str(results),
                                   *[a for s in sets for a in ("--set", s)]])
    return out, time.perf_counter() - started, results


def refused(out, results: Path) -> str:
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.output
    assert not results.exists() or not any(results.rglob("*")), sorted(results.rglob("*"))  # nothing stored
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_url_where_nothing_listens_fails_in_seconds(tmp_path):
    out, seconds, results = submit(tmp_path, endpoint_job(f"http://127.0.0.1:{closed_port()}"))
    line = refused(out, results)
    assert "endpoint.url: nothing answers at http://127.0.0.1:" in line and seconds < 5


def test_an_address_that_never_answers_fails_within_the_connect_timeout(tmp_path):
    """192.0.2.1 is TEST-NET-1: nothing routes there, so a connect waits for its timeout (or is refused)."""
    raw = endpoint_job("http://192.0.2.1:8000", endpoint={"connect_timeout_s": 1.5})
    out, seconds, results = submit(tmp_path, raw)
    assert "endpoint.url: nothing answers at http://192.0.2.1:8000" in refused(out, results) and seconds < 5


@pytest.mark.parametrize("sets, said", [
    (["load.rate=0"], "load.rate: Input should be greater than 0 (got 0)"),
    (["load.rate=-2"], "load.rate: Input should be greater than 0"),
    (["slo.p95_ms=300"], "slo.p95_ms: unknown field"),
    (["endpoint.url=localhost:8000"], "endpoint.url: 'localhost:8000' is not an http(s) URL"),
    (["load.concurrency=4"], "give exactly one of rate"),
    (["load.kind=offline"], "an endpoint job's load is kind endpoint"),
])
def test_a_bad_field_is_named_before_anything_is_asked(tmp_path, sets, said):
    out, seconds, results = submit(tmp_path, endpoint_job(f"http://127.0.0.1:{closed_port()}", slo={"ttft_ms": 100}),
                                   *sets)
    assert said in refused(out, results) and seconds < 5


@pytest.mark.slow
def test_what_the_server_refuses_is_named_before_any_load_is_sent(tmp_path, monkeypatch):
    with serve(api_key="right", models=["served-model"]) as url:
        no_key, _, results = submit(tmp_path / "a", endpoint_job(url, endpoint={"model": "served-model"}))
        line = refused(no_key, results)
        assert f"endpoint.api_key_env: the server at {url} refused the request (HTTP 401: Incorrect API key" in line
        monkeypatch.setenv("MOCK_KEY", "wrong")
        wrong, _, results = submit(tmp_path / "b", endpoint_job(url, endpoint={"model": "served-model",
                                                                                "api_key_env": "MOCK_KEY"}))
        assert "the key in $MOCK_KEY is not one it takes" in refused(wrong, results)
        monkeypatch.setenv("MOCK_KEY", "right")
        model, _, results = submit(tmp_path / "c", endpoint_job(url, endpoint={"model": "no-such-model",
                                                                                "api_key_env": "MOCK_KEY"}))
        line = refused(model, results)
        assert f"endpoint.model: the server at {url} does not serve 'no-such-model'" in line
        assert "it serves: served-model" in line
        monkeypatch.delenv("MOCK_KEY")
        unset, _, results = submit(tmp_path / "d", endpoint_job(url, endpoint={"model": "served-model",
                                                                                "api_key_env": "MOCK_KEY"}))
        assert "endpoint.api_key_env: the environment variable MOCK_KEY is not set" in refused(unset, results)


def test_find_peak_with_too_few_requests_for_a_p99_is_refused(tmp_path):
    raw = endpoint_job(f"http://127.0.0.1:{closed_port()}", slo={"ttft_ms": 100},
                       load={"mode": "find_peak", "requests": 100})
    out, _, results = submit(tmp_path, raw)
    assert "load.requests: find_peak holds each probe's p99 to the slo, which 100 requests cannot show (at least 299" \
        in refused(out, results)
