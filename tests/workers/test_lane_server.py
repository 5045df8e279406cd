"""The direct lane between the driver and a worker (workers/lane_server.py, orchestrator/targets/lane_client.py),
over real sockets on loopback, without Ray: replies in order, the key's challenge, errors, a worker
process killed mid-batch, a port that never answers, a worker's machine gone silent."""

import json
import multiprocessing
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from multiprocessing import AuthenticationError
from pathlib import Path

import pytest

from orchestrator.targets.lane_client import DirectLane, LaneFailed, LaneLost, connect
from workers.lane_server import LaneServer

KEY = b"k" * 32


def double(x):
    if x == "boom":
        raise ValueError("bad batch\nsecond line")
    return x * 2


def test_batches_come_back_in_order_and_closing_ends_the_workers_end():
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double})
    lane = DirectLane(server.address, KEY, 0)
    assert [lane.run(n).result(timeout=5) for n in range(20)] == [2 * n for n in range(20)]
    lane.close()
    server._thread.join(timeout=5)
    assert not server._thread.is_alive()


def generate(n, emit):
    """A streaming call: a first token, then the rest, each told before the reply (a generation's shape)."""
    for token in range(n):
        emit(("token", token, time.perf_counter()))
        time.sleep(0.05 if token == 0 else 0)
    return {"tokens": n}


def test_a_call_streams_its_events_before_its_reply_and_the_next_call_keeps_its_own():
    """The first event reaches the driver while the call still runs (a first token before its batch
    ends); every event reaches the call that told it, in order; a plain call between is unaffected."""
    server = LaneServer("127.0.0.1", KEY, {"generate": generate, "run_samples": double},
                        streaming=frozenset({"generate"}))
    lane = DirectLane(server.address, KEY, 0)
    seen: list[tuple] = []
    first = threading.Event()

    def on_event(event):
        seen.append(event)
        first.set()

    future = lane.call("generate", 3, on_event=on_event)
    assert first.wait(timeout=5) and not future.done()  # the first token is here; the call is not over
    assert future.result(timeout=5) == {"tokens": 3}
    assert [e[:2] for e in seen] == [("token", 0), ("token", 1), ("token", 2)]
    assert lane.run(5).result(timeout=5) == 10
    later: list = []
    assert lane.call("generate", 2, on_event=later.append).result(timeout=5) == {"tokens": 2}
    assert [e[1] for e in later] == [0, 1] and len(seen) == 3
    lane.close()


def test_a_listener_that_raises_fails_its_own_call_and_the_lane_stays_in_step():
    server = LaneServer("127.0.0.1", KEY, {"generate": generate, "run_samples": double},
                        streaming=frozenset({"generate"}))
    lane = DirectLane(server.address, KEY, 0)

    def broken(event):
        raise RuntimeError("a bug in the listener")

    with pytest.raises(RuntimeError, match="a bug in the listener"):
        lane.call("generate", 3, on_event=broken).result(timeout=5)
    assert lane.run(2).result(timeout=5) == 4  # the reply and the other events were still read
    lane.close()


def test_a_wrong_key_is_refused_and_the_worker_waits_for_the_right_one():
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double})
    with pytest.raises(AuthenticationError):
        connect(server.address, b"x" * 32)
    lane = DirectLane(server.address, KEY, 0)
    assert lane.run(4).result(timeout=5) == 8
    lane.close()


def test_an_error_outside_run_samples_fails_the_call_with_its_first_line_and_the_lane_goes_on():
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double})
    lane = DirectLane(server.address, KEY, 0)
    with pytest.raises(LaneFailed, match="^ValueError: bad batch$"):
        lane.run("boom").result(timeout=5)
    with pytest.raises(LaneFailed, match="KeyError: 'open_shell'"):  # only what the worker offers
        lane.call("open_shell", "rm").result(timeout=5)
    assert lane.run(1).result(timeout=5) == 2
    lane.close()


def test_the_warm_up_and_the_batches_run_on_the_same_thread_of_the_worker():
    """Engine state kept per thread (CUDA graph trees) must be warmed where the batches run."""
    threads = []
    server = LaneServer("127.0.0.1", KEY, {"warm_up": lambda pass_name: threads.append(threading.get_ident()) or 2,
                                          "run_samples": lambda batch: threads.append(threading.get_ident())})
    lane = DirectLane(server.address, KEY, 0)
    assert lane.call("warm_up", "infer").result(timeout=5) == 2
    lane.run("batch").result(timeout=5)
    lane.run("batch").result(timeout=5)
    lane.close()
    assert len(set(threads)) == 1 and threads[0] != threading.get_ident()


def test_a_connection_that_breaks_ends_the_workers_end_too():
    """The driver never dials a listener twice (it asks for a new lane): a broken connection, here
    reset by the driver's side, must not leave the worker listening with a thread for good."""
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double})
    lane = DirectLane(server.address, KEY, 0)
    assert lane.run(1).result(timeout=5) == 2
    sock = socket.socket(fileno=lane._conn.fileno())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # closing sends a reset
    sock.detach()
    lane._conn.close()
    server._thread.join(timeout=5)
    assert not server._thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        connect(server.address, KEY)


def serve_slowly(address_out) -> None:
    server = LaneServer("127.0.0.1", KEY, {"run_samples": lambda x: time.sleep(30)})
    address_out.put(server.address)
    server._thread.join()


def test_a_worker_process_killed_mid_batch_loses_the_lane_for_that_batch_and_every_later_one():
    ctx = multiprocessing.get_context("spawn")
    address_out = ctx.Queue()
    worker = ctx.Process(target=serve_slowly, args=(address_out,), daemon=True)
    worker.start()
    lane = DirectLane(address_out.get(timeout=60), KEY, 3)
    in_flight = lane.run("batch")
    time.sleep(0.2)
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(LaneLost, match="worker 3's connection broke"):
        in_flight.result(timeout=10)
    with pytest.raises(LaneLost):
        lane.run("next").result(timeout=10)
    lane.close()
    worker.join(timeout=10)


def test_a_port_that_never_answers_the_challenge_times_out_instead_of_hanging():
    with socket.socket() as silent:  # accepts TCP connections (the kernel does) but never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no answer from 127.0.0.1"):
            connect(silent.getsockname(), KEY, timeout_s=0.5)
        assert time.monotonic() - started < 5


def namespaces_missing() -> str | None:
    """Why the silent-machine test cannot run here (it needs root and Linux network namespaces), or None."""
    missing = [tool for tool in ("unshare", "nsenter", "ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (util-linux, iproute2)"
    if os.geteuid() != 0 or subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        return "needs root and network namespaces (unshare --net)"
    return None


@pytest.mark.skipif(namespaces_missing() is not None, reason=str(namespaces_missing()))
def test_a_worker_whose_machine_goes_silent_loses_the_lane_within_the_keepalive_span():
    """A node that loses power sends no FIN: without keepalive the batch in flight would wait for
    hours. Here the worker's end sits in a namespace of its own and its link stops sending
    (tests/workers/silent_peer.py); keepalive set to give up after 3 s. A batch slower than that
    span, the peer alive, still comes back: the kernel answers the probes, not the worker."""
    done = subprocess.run(["unshare", "--net", sys.executable, "-m", "tests.workers.silent_peer", "near"],
                          cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["slow_batch"] == "came back"
    assert seen["silent"].startswith("LaneLost: worker 0's connection broke") and "timed out" in seen["silent"]
    assert seen["after_s"] < 10  # 3 s of probes, and the 0.3 s before the link went silent
