"""`bench` against a real Ray node with Ray's TLS on (RAY_USE_TLS=1, a CA and a node certificate
made here): the CLI's own check of the address reaches the GCS over TLS, and a LoadGen run's
lanes are TLS too, both ends on Ray's files (workers/lane_transport.py)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.builders import stored_rows
from tests.cluster import RAY, free_port

pytestmark = pytest.mark.slow
NODE_IP = "127.0.0.6"  # an address of its own: other tests' clusters use 127.0.0.2 and .3

# `bench submit` in a process of its own, counting the TLS connections the driver makes (lanes only:
# Ray's gRPC is C++), printed last on stderr
BENCH_COUNTING_TLS = """
import atexit, sys
import workers.lane_transport as transport
made = []
original = transport.TLSTransport.__init__
def counted(self, *args, **kwargs):
    original(self, *args, **kwargs)
    made.append(1)
transport.TLSTransport.__init__ = counted
atexit.register(lambda: print(f"tls lanes: {len(made)}", file=sys.stderr))
from orchestrator.cli import app
sys.argv = ["bench", *sys.argv[1:]]
app()
"""


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory):
    from tests.workers.tls_certs import _issue, _write
    from cryptography.hazmat.primitives.asymmetric import ec

    pki = tmp_path_factory.mktemp("pki")
    ca_key, node_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _issue("ray-ca", ca_key, None, [])
    _write(pki, "ca", ca)
    _write(pki, "node", _issue("node", node_key, (ca.subject, ca_key), [NODE_IP]), node_key)
    port, temp = free_port(), Path(tempfile.mkdtemp(prefix="rb-tls-", dir="/tmp"))  # Ray's socket paths stay short
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="tls-test-token", RAY_USAGE_STATS_ENABLED="0",
               RAY_USE_TLS="1", RAY_TLS_SERVER_CERT=str(pki / "node.crt"), RAY_TLS_SERVER_KEY=str(pki / "node.key"),
               RAY_TLS_CA_CERT=str(pki / "ca.crt"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    ports = [f"--{name}={free_port()}" for name in ("node-manager-port", "object-manager-port", "metrics-export-port",
                                                    "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "runtime-env-agent-port", "ray-client-server-port")]
    log = open(pki / "node.log", "w")
    node = subprocess.Popen([RAY, "start", "--block", "--head", "--node-ip-address", NODE_IP, "--port", str(port),
                             "--num-cpus", "2", "--temp-dir", str(temp), "--include-dashboard", "false",
                             "--disable-usage-stats", *ports], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection((NODE_IP, port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or node.poll() is not None:
                    raise TimeoutError(f"the TLS node did not start; see {pki / 'node.log'}") from None
                time.sleep(0.5)
        yield env, f"{NODE_IP}:{port}"
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=10)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_loadgen_run_on_a_cluster_with_rays_tls_hands_batches_over_tls_lanes(tls_node, tmp_path):
    env, address = tls_node
    run = subprocess.run([sys.executable, "-c", BENCH_COUNTING_TLS, "submit", "jobs/synthetic_server.yaml",
                          "--address", address, "--workers", "2", "--results", str(tmp_path),
                          "--set", "load.latency_bound_ms=1000"],
                         cwd=Path(__file__).parents[3], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "load.hand_over" not in run.stderr  # no fallback to actor calls
    assert run.stderr.strip().splitlines()[-1] == "tls lanes: 2"  # one per worker, each a TLS connection
    (row,) = stored_rows(tmp_path)
    assert row["loadgen_result"] == "VALID" and json.loads(row["loadgen_settings"])["hand_over"] == "direct"
