"""The endpoint mode on a real two-node Ray cluster: client actors on both nodes, against the mock
server and against a real `transformers serve` (a tiny random Llama with SmolLM2's tokenizer)."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.builders import SMOLLM2_GGUF, save_tiny_llama, smollm2_package_dir, stored_rows
from tests.cluster import free_port
from tests.fakes.openai_server import serve

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
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_package_dir(), gguf_file=SMOLLM2_GGUF)
    tokenizer.save_pretrained(folder)
    save_tiny_llama(folder, len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id)
    port = free_port()
    log = open(folder / "serve.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("transformers")), "serve", str(folder), "--device",
                             "cpu", "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"transformers serve did not start: {(folder / 'serve.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url, str(folder)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


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
