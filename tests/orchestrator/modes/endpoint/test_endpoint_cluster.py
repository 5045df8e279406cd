"""An endpoint on a real two-node Ray cluster: client actors on both nodes, against the mock server and
against a real `transformers serve` (a tiny random Llama with SmolLM2's tokenizer), under the endpoint
mode's own schedule and under LoadGen (orchestrator/modes/loadgen/endpoint_point.py)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.builders import stored_rows
from tests.fakes.openai_server import serve
from tests.servers import tiny_llama_serve

pytestmark = pytest.mark.slow
BENCH = [sys.executable, "-m", "orchestrator.cli"]
ROOT = Path(__file__).resolve().parents[4]


def bench(cluster, *args, timeout=300):
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=timeout, env=cluster.env(),
                          cwd=ROOT)


def test_two_client_actors_on_two_nodes_pool_every_sample(ray_cluster, tmp_path):
    with serve(ttft_ms=20, itl_ms=4) as url:
        out = bench(ray_cluster, "submit", "jobs/endpoint_tiny.yaml", "--address", ray_cluster.address,
                    "--results", str(tmp_path), "--set", f"endpoint.url={url}", "--set", "endpoint.model=mock-model",
                    "--set", "sweep={}", "--set", "load.rate=20", "--set", "load.requests=60")
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = stored_rows(tmp_path)
    assert row["clients"] == 2 and set(row["client_nodes"].split(",")) == {"127.0.0.2", "127.0.0.3"}
    assert row["requests_completed"] == 60 and row["output_tokens_mean"] == 16
    requests = pq.read_table(tmp_path / "runs" / row["run_id"] / "requests.parquet").to_pylist()
    assert len({r["source"] for r in requests}) == 2
    for column, key in (("ttft", "ttft_s"), ("e2e", "e2e_s"), ("ttft_sent", "ttft_sent_s")):
        every = [r[key] for r in requests]
        for q, suffix in ((50, "p50"), (99, "p99"), (99.9, "p999")):
            assert row[f"{column}_{suffix}"] == pytest.approx(float(np.percentile(every, q)))
    assert "ttft" in out.stdout.lower() or "TTFT" in out.stdout


@pytest.fixture(scope="module")
def tiny_llama_server(tmp_path_factory):
    """`transformers serve` on a random 2-layer Llama with SmolLM2's tokenizer, on the CPU."""
    with tiny_llama_serve(tmp_path_factory.mktemp("tiny-llama")) as served:
        yield served


def test_a_short_sweep_against_transformers_serve_from_two_client_actors(ray_cluster, tiny_llama_server, tmp_path):
    """jobs/endpoint_tiny.yaml as a user runs it: two rates, two clients on two nodes, EOS ignored
    the way transformers serve takes it (it refuses `ignore_eos`), and `bench report` of the sweep."""
    url, model = tiny_llama_server
    out = bench(ray_cluster, "submit", "jobs/endpoint_tiny.yaml", "--address", ray_cluster.address,
                "--results", str(tmp_path), "--set", f"endpoint.url={url}", "--set", f"endpoint.model={model}",
                "--set", 'endpoint.extra_body={"generation_config": "{\\"eos_token_id\\": -1}"}',
                "--set", "load.requests=10", "--set", "prompts.max_tokens=8")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = stored_rows(tmp_path)
    assert [r["offered_rate"] for r in rows] == [2.0, 4.0] and rows[0]["sweep_id"] == rows[1]["sweep_id"]
    for row in rows:
        assert row["requests_completed"] == 10 and row["output_tokens_mean"] == 8  # usage from the server
        assert set(row["client_nodes"].split(",")) == {"127.0.0.2", "127.0.0.3"}
        assert 0 < row["ttft_sent_p50"] <= row["ttft_p50"] < row["e2e_p50"]
        assert row["input_tokens_mean"] > 0 and row["server_metrics"].endswith("HTTP 404")  # it has no /metrics
    report = bench(ray_cluster, "report", rows[1]["run_id"], "--results", str(tmp_path))
    assert report.returncode == 0, report.stderr
    folder = tmp_path / "runs" / rows[1]["run_id"] / "report"
    assert {"report-latency_cdf.png", "report-latency_vs_rate.png", "report-schedule_lag.png"} <= \
        {p.name for p in folder.iterdir()}
    refused = bench(ray_cluster, "submit", "jobs/endpoint_tiny.yaml", "--address", ray_cluster.address,
                    "--results", str(tmp_path / "refused"), "--set", f"endpoint.url={url}",
                    "--set", f"endpoint.model={model}", "--set", "prompts.ignore_eos=true")
    assert refused.returncode == 2 and "refused a field of the request (HTTP 422" in refused.stderr
    assert "ignore_eos" in refused.stderr and not (tmp_path / "refused").exists()


def test_loadgen_server_from_two_client_actors_on_two_nodes(ray_cluster, tmp_path):
    """jobs/endpoint_loadgen_tiny.yaml as a Server: LoadGen's samples go to client actors on both nodes
    (place p is on client p mod 2), each one request streamed back over a Ray streaming call; the
    mock's 20 ms to the first token and 4 ms per token are LoadGen's, plus the hops."""
    with serve(ttft_ms=20, itl_ms=4, output_tokens=16) as url:
        out = bench(ray_cluster, "submit", "jobs/endpoint_loadgen_tiny.yaml", "--address", ray_cluster.address,
                    "--results", str(tmp_path), "--set", f"endpoint.url={url}", "--set", "endpoint.model=mock-model",
                    "--set", "clients=2", "--set", "load.scenario=server", "--set", "load.target_qps=40",
                    "--set", "load.rules=smoke")
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = stored_rows(tmp_path)
    assert row["load"] == "loadgen" and row["scenario"] == "server" and row["clients"] == 2
    assert set(row["client_nodes"].split(",")) == {"127.0.0.2", "127.0.0.3"}
    assert row["loadgen_result"] == "VALID" and row["loadgen_errors"] == 0, row["verdict_reasons"]
    assert row["request_errors"] == 0 and row["requests"] == row["query_count"] >= 459
    assert 0.020 <= row["loadgen_ttft_p50"] < 0.030 and row["loadgen_tpot_p50"] == pytest.approx(0.004, abs=0.001)
    requests = pq.read_table(tmp_path / "runs" / row["run_id"] / "requests.parquet").to_pylist()
    assert {int(r["source"].split()[-1]) % 2 for r in requests} == {0, 1}  # both clients answered samples
    assert "LoadGen server performance at 40 QPS" in out.stdout


def test_loadgen_single_stream_against_transformers_serve(ray_cluster, tiny_llama_server, tmp_path):
    """jobs/endpoint_loadgen_tiny.yaml against a real server: LoadGen's SingleStream with token latencies
    from what `transformers serve` streams (8 tokens each, EOS off), and `bench report` of the run."""
    url, model = tiny_llama_server
    out = bench(ray_cluster, "submit", "jobs/endpoint_loadgen_tiny.yaml", "--address", ray_cluster.address,
                "--results", str(tmp_path), "--set", f"endpoint.url={url}", "--set", f"endpoint.model={model}",
                "--set", 'endpoint.extra_body={"generation_config": "{\\"eos_token_id\\": -1}"}',
                "--set", "prompts.max_tokens=8")
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = stored_rows(tmp_path)
    assert row["loadgen_result"] == "VALID" and row["loadgen_errors"] == 0, row["verdict_reasons"]
    assert row["query_count"] >= 64 and row["requests"] == row["query_count"] and row["request_errors"] == 0
    assert row["output_tokens_mean"] == 8 and row["input_tokens_mean"] > 0  # the server's usage
    assert 0 < row["loadgen_ttft_p50"] < row["query_latency_p50"] and row["loadgen_tpot_p50"] > 0
    assert row["loadgen_tokens_per_s"] > 0
    report = bench(ray_cluster, "report", row["run_id"], "--results", str(tmp_path))
    assert report.returncode == 0, report.stderr
    folder = tmp_path / "runs" / row["run_id"] / "report"
    assert {"report-queries.png", "report-ttft.png", "report-tpot.png"} <= {p.name for p in folder.iterdir()}
