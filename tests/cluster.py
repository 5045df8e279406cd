"""A real multi-node Ray cluster on one machine, for tests: `ray start` processes on loopback IPs.

Each node is `ray start --block` in its own process group on its own 127.0.0.x address with its own
ports, under token authentication (a fresh token per cluster). Teardown kills exactly those process
groups (never `ray stop`, which would kill every Ray on the machine).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    root: Path
    gpus_per_node: int = 2
    cpus_per_node: int = 2
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    procs: list[subprocess.Popen] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    node_env: dict[str, str] = field(default_factory=dict)  # extra environment of the Ray nodes only

    def __post_init__(self) -> None:
        # Ray's unix sockets live under --temp-dir and their paths must stay under ~107 bytes:
        # pytest's tmp paths are too long, so the Ray temp dir is a short one of our own.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp"))
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.metrics_ports: dict[str, int] = {}

    @property
    def address(self) -> str:
        return f"127.0.0.2:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.2:{self.dashboard_port}"

    def env(self) -> dict[str, str]:
        """What every process that talks to this cluster needs (token auth stays on)."""
        bin_dir = str(Path(sys.executable).parent)
        return dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0",
                    PATH=f"{bin_dir}:{os.environ.get('PATH', '')}", RAY_metrics_report_interval_ms="1000")

    def _start(self, ip: str, head: bool) -> None:
        metrics = free_port()
        self.metrics_ports[ip] = metrics
        args = [RAY, "start", "--block", "--node-ip-address", ip, "--num-gpus", str(self.gpus_per_node),
                "--num-cpus", str(self.cpus_per_node), "--metrics-export-port", str(metrics),
                "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()), "--disable-usage-stats"]
        if head:
            args += ["--head", "--port", str(self.gcs_port), "--temp-dir", str(self.temp_dir),
                     "--dashboard-host", "127.0.0.2", "--dashboard-port", str(self.dashboard_port),
                     "--ray-client-server-port", str(free_port())]
        else:
            args += ["--address", self.address]
        log = open(self.root / f"node-{ip}.log", "w")
        fake = {"RAYBENCH_FAKE_GPUS": "1"} if self.gpus_per_node else {}  # workers/device.py: GPUs it declares, not has
        self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                           env={**self.env(), **fake, **self.node_env}, start_new_session=True))
        self.ips.append(ip)

    def start(self, nodes: int = 2, timeout_s: float = 90, attempts: int = 2) -> "LocalCluster":
        """Start the nodes; a start that fails (a dashboard module crashing under load has been
        seen) is torn down completely and tried once more on fresh ports."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_all(nodes, timeout_s)
            except (TimeoutError, subprocess.SubprocessError, OSError):
                self.stop()
                self.procs, self.ips = [], []
                self.__post_init__()
                if attempt == attempts:
                    raise
        return self

    def _start_all(self, nodes: int, timeout_s: float) -> "LocalCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        self._start("127.0.0.2", head=True)
        self._wait_nodes(1, timeout_s)
        for i in range(1, nodes):
            self._start(f"127.0.0.{2 + i}", head=False)
        self._wait_nodes(nodes, timeout_s)
        self._wait_dashboard(timeout_s)
        return self

    def _wait_dashboard(self, timeout_s: float) -> None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{self.dashboard}/api/version",
                                         headers={"Authorization": f"Bearer {self.token}"})
        deadline = time.time() + timeout_s
        while True:
            try:
                urllib.request.urlopen(request, timeout=2).read()
                return
            except (urllib.error.URLError, OSError):
                if time.time() > deadline:
                    raise TimeoutError(f"the dashboard at {self.dashboard} did not answer; see {self.root}")
                time.sleep(0.5)

    def _wait_nodes(self, count: int, timeout_s: float) -> None:
        code = ("import ray, time\n"
                f"ray.init(address='{self.address}', log_to_driver=False, logging_level='error')\n"
                f"deadline = time.time() + {timeout_s}\n"
                f"while sum(n['Alive'] for n in ray.nodes()) < {count} and time.time() < deadline: time.sleep(0.5)\n"
                f"assert sum(n['Alive'] for n in ray.nodes()) >= {count}, ray.nodes()\n")
        deadline = time.time() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.2", self.gcs_port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise TimeoutError(f"Ray head did not start; see {self.root}")
                time.sleep(0.5)
        subprocess.run([sys.executable, "-c", code], env=self.env(), check=True, timeout=timeout_s + 30,
                       capture_output=True)

    def stop_node(self, ip: str) -> None:
        """Kill one node's whole process group (raylet, its workers): a lost machine."""
        proc = self.procs[self.ips.index(ip)]
        _kill_group(proc)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _kill_group(proc)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """`ray start --block` hangs on SIGTERM at times: give it a moment, then kill its group."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
