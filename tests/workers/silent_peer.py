"""A worker whose machine stops answering, for tests/workers/test_lane_server.py: two network namespaces.

A killed process leaves a FIN or a RST behind; a node that loses power or its link leaves nothing,
and only TCP keepalive tells the driver. Dropping packets on the driver's own machine does not
show it (Linux treats a probe its own queue dropped as local congestion and keeps trying), so the
worker's end runs in a namespace of its own, linked by a veth pair, and its side of the link stops
sending: to the driver it is a machine that went silent.

`near` (run under `unshare --net`, as root) sets up the link, starts `far` in a namespace of its
own, opens a lane to it with short keepalive settings, and prints one JSON line: whether a batch
slower than the keepalive span came back, and what became of a batch in flight when `far` went
silent. Namespaces made by `unshare` end with their processes: nothing is left on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import workers.lane_server as lane_end

FAR_ADDRESS = "10.213.0.2"
IDLE_S, INTERVAL_S, PROBES = 1, 1, 2  # the lane gives a silent peer up after 3 s (workers/lane_server.py)


def sh(command: str) -> None:
    subprocess.run(command, shell=True, check=True)


def far() -> None:
    """The worker's end: wait for the link's far side to arrive in this namespace, serve `sleep`."""
    deadline = time.monotonic() + 20
    while subprocess.run(["ip", "link", "show", "far0"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("far0 never arrived")
        time.sleep(0.05)
    sh(f"ip link set lo up && ip addr add {FAR_ADDRESS}/24 dev far0 && ip link set far0 up")
    server = lane_end.LaneServer(FAR_ADDRESS, bytes.fromhex(sys.stdin.readline().strip()), {"sleep": time.sleep})
    print(server.address[1], flush=True)
    sys.stdin.readline()  # until `near` closes our stdin


def near() -> None:
    lane_end.KEEPALIVE_IDLE_S, lane_end.KEEPALIVE_INTERVAL_S, lane_end.KEEPALIVE_PROBES = IDLE_S, INTERVAL_S, PROBES
    from orchestrator.targets.lane_client import DirectLane

    sh("ip link set lo up && ip link add near0 type veth peer name far0 && "
       "ip addr add 10.213.0.1/24 dev near0 && ip link set near0 up")
    worker = subprocess.Popen(["unshare", "--net", sys.executable, "-m", "tests.workers.silent_peer", "far"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.2)  # unshare has made the namespace before it runs Python
        sh(f"ip link set far0 netns {worker.pid}")
        key = os.urandom(32)
        worker.stdin.write(key.hex() + "\n")
        worker.stdin.flush()
        lane = DirectLane((FAR_ADDRESS, int(worker.stdout.readline())), key, 0)
        span = IDLE_S + INTERVAL_S * PROBES
        slow = lane.call("sleep", span + 1.5).result(timeout=30)  # slower than the span, the peer alive
        in_flight = lane.call("sleep", 60)
        time.sleep(0.3)
        sh(f"nsenter --net --target {worker.pid} tc qdisc add dev far0 root tbf rate 8bit burst 1 latency 1ms")
        silent_at = time.monotonic()
        try:
            in_flight.result(timeout=30)
            outcome = "came back"
        except TimeoutError:
            outcome = "still waiting after 30 s"
        except Exception as exc:  # noqa: BLE001 - reported to the test
            outcome = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"slow_batch": "came back" if slow is None else repr(slow), "silent": outcome,
                          "after_s": round(time.monotonic() - silent_at, 2)}), flush=True)
    finally:
        worker.stdin.close()
        worker.kill()
        worker.wait()


if __name__ == "__main__":
    {"near": near, "far": far}[sys.argv[1]]()
