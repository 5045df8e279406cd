"""The head's Metrics path from the README, for real: Debian's `prometheus` runs the config Ray
writes into its session directory and sees our live series, with the run's tags, on both nodes."""

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from tests.cluster import free_port

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus binary: as root, `apt-get install -y prometheus` "
                                                  "(.ci/run does)"),
]
BENCH = [sys.executable, "-m", "orchestrator.cli"]


def prometheus_api(port: int, path: str, **params) -> dict:
    url = f"http://127.0.0.2:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]


def wait_ready(port: int, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.2:{port}/-/ready", timeout=2).close()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def test_prometheus_from_debian_sees_raybench_series_through_rays_own_config(ray_cluster, tmp_path):
    config = ray_cluster.temp_dir / "session_latest" / "metrics" / "prometheus" / "prometheus.yml"
    assert config.exists(), "Ray wrote no Prometheus config into its session directory"
    port = free_port()
    with open(tmp_path / "prometheus.log", "w") as log:
        prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.2:{port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run_id = "prometheus-test-run"
    try:
        wait_ready(port)
        job = subprocess.Popen([*BENCH, "submit", "jobs/synthetic.yaml", "--address", ray_cluster.address,
                                "--results", str(tmp_path / "results"), "--run-id", run_id],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ray_cluster.env())
        series: list[dict] = []
        deadline = time.time() + 150  # Ray's config scrapes every 10 s; the job runs ~20 s
        while not series and time.time() < deadline:
            series = prometheus_api(port, "query", query=f'ray_raybench_items_total{{run_id="{run_id}"}}')["result"]
            if not series:
                time.sleep(2)
        _, err = job.communicate(timeout=240)
        assert job.returncode == 0, err
        assert series, f"Prometheus never saw ray_raybench_items_total for {run_id}; see {tmp_path / 'prometheus.log'}"
        labels = series[0]["metric"]
        assert labels["run_id"] == run_id and labels["pass"] == "infer" and labels["worker"].isdigit()
        assert float(series[0]["value"][1]) > 0
        scraped = {t["labels"]["instance"] for t in prometheus_api(port, "targets")["activeTargets"]
                   if t["health"] == "up"}
        assert {f"{ip}:{p}" for ip, p in ray_cluster.metrics_ports.items()} <= scraped  # both nodes' endpoints
    finally:
        prometheus.terminate()  # ours, by its pid
        try:
            prometheus.wait(timeout=15)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait(timeout=15)
