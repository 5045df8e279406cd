"""The direct lane between the driver and a worker (workers/lane_server.py, orchestrator/targets/lane_client.py),
over real sockets on loopback, without Ray: replies in order, the key's challenge, errors, a worker
process killed mid-batch, a port that never answers, a worker's machine gone silent."""

import json
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.targets.lane_client import CONNECT_TIMEOUT_S, DirectLane, LaneFailed, LaneLost, connect
from workers.contract import SampleBatch, ShardResult
from workers.lane_codec import LaneEncodingError
from workers.lane_server import LaneServer
from workers.lane_transport import TLSFiles, tls_from_env
from workers.lane_wire import HANDSHAKE_TIMEOUT_S, HELLO, HandshakeFailed, accept

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
    return n


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
    assert future.result(timeout=5) == 3
    assert [e[:2] for e in seen] == [("token", 0), ("token", 1), ("token", 2)]
    assert lane.run(5).result(timeout=5) == 10
    later: list = []
    assert lane.call("generate", 2, on_event=later.append).result(timeout=5) == 2
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
    with pytest.raises(HandshakeFailed, match="refused the key"):
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
    sock = lane._channel.sock
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # closing sends a reset
    sock.close()
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


# ---- what crosses: msgpack of the lane's types, never pickle (workers/lane_codec.py) ----

def echo_result(batch):
    """A worker's run_samples in shape: a batch in, a ShardResult out."""
    return ShardResult(shard_id=batch.batch_id, pass_name=batch.pass_name, attempt=batch.attempt, worker_id=0,
                       node_id="n", device_name="cpu", pid=os.getpid(), examples=len(batch.indices),
                       records=[{"example": i} for i in batch.indices])


def test_batches_and_results_cross_without_any_unpickling(monkeypatch):
    """Both ends run here, with every unpickler made to fail: the old lane (multiprocessing.connection)
    unpickled every message and fails this test."""
    import multiprocessing.reduction
    import pickle

    def unpickled(*args, **kwargs):
        raise AssertionError("the lane unpickled something")

    for name in ("loads", "load", "Unpickler"):
        monkeypatch.setattr(pickle, name, unpickled)
    monkeypatch.setattr(multiprocessing.reduction.ForkingPickler, "loads", unpickled)
    server = LaneServer("127.0.0.1", KEY, {"run_samples": echo_result})
    lane = DirectLane(server.address, KEY, 0)
    result = lane.run(SampleBatch(batch_id=3, indices=(5, 2), pass_name="infer")).result(timeout=5)
    assert (result.shard_id, result.examples, result.records) == (3, 2, [{"example": 5}, {"example": 2}])
    lane.close()


def test_a_value_the_lane_does_not_carry_fails_its_call_and_the_lane_goes_on():
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double, "as_set": lambda x: {x}})
    lane = DirectLane(server.address, KEY, 0)
    with pytest.raises(LaneEncodingError, match="builtins.object"):
        lane.run(object()).result(timeout=5)  # refused here: nothing was sent
    with pytest.raises(LaneFailed, match="LaneEncodingError: the lane cannot carry this result: builtins.set"):
        lane.call("as_set", 1).result(timeout=5)  # refused by the worker's end, told as the call's failure
    assert lane.run(3).result(timeout=5) == 6
    lane.close()


# ---- every message authenticated (workers/lane_wire.py): a proxy on the path alters frames ----

HANDSHAKE = {"w2d": [len(HELLO) + 32, 32], "d2w": [32 + 32]}  # the handshake's messages before the frames, each way


class Proxy:
    """A man in the middle on loopback: forwards each direction frame by frame, and hands each frame
    of the `direction` named to `mangle(index, frame) -> the frames to send instead`."""

    def __init__(self, target, direction, mangle):
        self._target, self._direction, self._mangle = target, direction, mangle
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = self._listener.getsockname()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        near, _ = self._listener.accept()
        far = socket.create_connection(self._target)
        threading.Thread(target=self._pump, args=(near, far, "d2w"), daemon=True).start()
        self._pump(far, near, "w2d")

    def _pump(self, src, dst, direction):
        reader = src.makefile("rb")
        try:
            for size in HANDSHAKE[direction]:
                dst.sendall(reader.read(size))
            index = 0
            while header := reader.read(4):
                frame = header + reader.read(32 + struct.unpack(">I", header)[0])
                for out in self._mangle(index, frame) if direction == self._direction else [frame]:
                    dst.sendall(out)
                index += 1
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def flip_last_byte(index, frame):
    return [frame[:-1] + bytes([frame[-1] ^ 1])] if index == 0 else [frame]


def test_a_reply_altered_on_the_way_ends_the_lane_with_lane_lost_naming_it():
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double})
    lane = DirectLane(Proxy(server.address, "w2d", flip_last_byte).address, KEY, 0)
    with pytest.raises(LaneLost, match="worker 0's lane was ended: message 0 failed its authentication"):
        lane.run(1).result(timeout=5)
    with pytest.raises(LaneLost):
        lane.run(2).result(timeout=5)
    server._thread.join(timeout=5)
    assert not server._thread.is_alive()  # the driver shut the connection: the worker's end is gone too
    lane.close()


def test_a_reply_replayed_in_place_of_the_next_fails_on_its_sequence_number():
    frames = []

    def replay(index, frame):
        frames.append(frame)
        return [frames[0]]  # the first reply again: a valid MAC, for sequence number 0

    server = LaneServer("127.0.0.1", KEY, {"run_samples": double})
    lane = DirectLane(Proxy(server.address, "w2d", replay).address, KEY, 0)
    assert lane.run(1).result(timeout=5) == 2
    with pytest.raises(LaneLost, match="message 1 failed its authentication"):
        lane.run(5).result(timeout=5)
    lane.close()


def test_a_call_altered_on_the_way_is_refused_by_the_worker_which_closes(caplog):
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double})
    lane = DirectLane(Proxy(server.address, "d2w", flip_last_byte).address, KEY, 0)
    with pytest.raises(LaneLost, match="worker 0's connection broke: EOFError"):
        lane.run(1).result(timeout=5)
    server._thread.join(timeout=5)
    assert not server._thread.is_alive()
    assert any("message 0 failed its authentication" in r.getMessage() for r in caplog.records)
    lane.close()


def test_even_a_peer_with_the_key_cannot_have_a_pickle_unpickled():
    """A worker's end gone wrong (or another program with the key) sends a pickle as a reply: it
    is refused as not a lane message, and the lane ends; nothing runs."""
    import pickle

    listener = socket.create_server(("127.0.0.1", 0))

    def rogue():
        sock, _ = listener.accept()
        channel = accept(sock, KEY, None)
        channel.recv()
        channel.send(pickle.dumps(("ok", 2)))
        time.sleep(1)

    threading.Thread(target=rogue, daemon=True).start()
    lane = DirectLane(listener.getsockname(), KEY, 0)
    with pytest.raises(LaneLost, match="lane was ended: not a lane reply"):
        lane.run(1).result(timeout=5)
    lane.close()
    listener.close()


# ---- the handshake's deadline (workers/lane_wire.py HANDSHAKE_TIMEOUT_S) ----

def test_a_silent_stranger_is_dropped_and_the_drivers_connection_waiting_behind_it_succeeds():
    """A raw socket connects first and says nothing: the worker's end drops it after
    HANDSHAKE_TIMEOUT_S (2 s) while the driver's connection waits in the backlog, then serves the
    driver well inside its connect deadline."""
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double})
    stranger = socket.create_connection(server.address)
    time.sleep(0.2)  # the listener is in the stranger's handshake
    started = time.monotonic()
    lane = DirectLane(server.address, KEY, 0)
    waited = time.monotonic() - started
    assert lane.run(21).result(timeout=5) == 42
    assert 1.0 < waited < CONNECT_TIMEOUT_S - 2, waited
    stranger.settimeout(5)
    assert stranger.recv(100).startswith(HELLO) and stranger.recv(100) == b""  # dropped
    stranger.close()
    lane.close()


def test_a_stranger_that_drips_bytes_is_dropped_on_the_same_deadline():
    """The deadline is for the whole handshake, not per read: a byte every 0.3 s does not extend it."""
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double})
    stranger = socket.create_connection(server.address)
    started, dropped_after = time.monotonic(), None
    try:
        for _ in range(40):  # 12 s at most; the drop comes at about 2 s
            stranger.sendall(b"x")
            time.sleep(0.3)
    except OSError:  # reset: the worker's end closed it
        dropped_after = time.monotonic() - started
    stranger.close()
    assert dropped_after is not None and dropped_after < 2 * HANDSHAKE_TIMEOUT_S + 2, dropped_after
    lane = DirectLane(server.address, KEY, 0)
    assert lane.run(2).result(timeout=5) == 4
    lane.close()


# ---- TLS with Ray's certificates (RAY_USE_TLS) ----

def test_tls_settings_follow_rays_variables(tmp_path):
    assert tls_from_env({}) is None and tls_from_env({"RAY_USE_TLS": "0"}) is None
    with pytest.raises(ValueError, match="but RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT are not set"):
        tls_from_env({"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": "c"})
    files = tls_from_env({"RAY_USE_TLS": "true", "RAY_TLS_SERVER_CERT": "c", "RAY_TLS_SERVER_KEY": "k",
                          "RAY_TLS_CA_CERT": "a"})
    assert files == TLSFiles("c", "k", "a")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    from tests.workers.tls_certs import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


class Sniffer(Proxy):
    """A proxy that records every byte each way (and alters none)."""

    def __init__(self, target):
        self.seen = bytearray()
        super().__init__(target, "none", None)

    def _pump(self, src, dst, direction):
        try:
            while data := src.recv(65536):
                self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.mark.parametrize("tls", [False, True])
def test_with_rays_tls_on_the_lane_is_encrypted_and_still_streams_events(certs, tls):
    """Plain, the handshake's hello and a call's name are on the wire (which shows the sniffer
    sees it); with TLS neither is, and batches and events still cross in order."""
    files = certs["node"] if tls else None
    server = LaneServer("127.0.0.1", KEY, {"generate": generate, "run_samples": double},
                        streaming=frozenset({"generate"}), tls=files)
    sniffer = Sniffer(server.address)
    lane = DirectLane(sniffer.address, KEY, 0, files)
    events = []
    assert lane.call("generate", 3, on_event=events.append).result(timeout=5) == 3
    assert [e[1] for e in events] == [0, 1, 2]
    assert [lane.run(n).result(timeout=5) for n in range(50)] == [2 * n for n in range(50)]
    lane.close()
    in_clear = HELLO in sniffer.seen or b"generate" in sniffer.seen
    assert in_clear is not tls


def test_with_tls_a_driver_whose_certificate_another_ca_signed_is_refused_and_the_worker_waits(certs):
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double}, tls=certs["node"])
    with pytest.raises(ssl.SSLError, match="unknown ca"):  # the worker's end requires Ray's CA's (mutual TLS)
        connect(server.address, KEY, timeout_s=5, tls=certs["rogue"])
    lane = DirectLane(server.address, KEY, 0, certs["node"])
    assert lane.run(4).result(timeout=5) == 8
    lane.close()


def test_with_tls_the_driver_refuses_a_worker_whose_certificate_names_another_address(certs):
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double}, tls=certs["elsewhere"])
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        connect(server.address, KEY, timeout_s=5, tls=certs["node"])


def test_a_tls_driver_and_a_plain_worker_do_not_fall_back_to_plaintext(certs):
    server = LaneServer("127.0.0.1", KEY, {"run_samples": double})
    with pytest.raises(ssl.SSLError):
        connect(server.address, KEY, timeout_s=5, tls=certs["node"])
