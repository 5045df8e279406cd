"""A direct connection from the driver to one worker, for LoadGen's batches: the worker's end.

Why not a Ray actor call per batch: on the project's 2-core VM a call costs about 2.5 ms more than
the work (its submission, its scheduling on the actor, the result through the object store), and
LoadGen bills every query for it. Ray Compiled Graphs' shared-memory channels cost about 0.9 ms,
but their readers spin: an idle actor and a driver waiting on a result each burn a whole core
(measured: 1.0 CPU-second per second), which starves a CPU engine's own threads, LoadGen's and
the other workers'. A socket costs about 0.5 ms here and sleeps while it waits (docs/BENCHMARKS.md).

How: the worker listens on its node's address (the one Ray knows the node by; the driver reaches
Ray's nodes there already) at a free port, with a key the driver sent through Ray (itself behind
Ray's token), and serves the first connection that proves the key (workers/lane_wire.py: the
handshake, TLS where Ray's is on, an HMAC on every message after it). A connection that fails, or
says nothing for HANDSHAKE_TIMEOUT_S (2 s, workers/lane_wire.py), is closed and the next awaited;
the listener keeps a backlog of LISTEN_BACKLOG, so the driver's connection waits in it while a
stranger is being dropped, and it stops listening once the driver is in. What travels is msgpack
of the types the lane carries (workers/lane_codec.py), never pickle. One thread serves the
connection: receive a call (a name the worker offers and its arguments: `warm_up`, then
`run_samples`, which return errors as values), make it, send the reply back. A call may tell
events before its reply (a first token, then the rest): a call named in `streaming` is given an
`emit` keyword, and each event it emits goes to the driver at once, ahead of the reply, so the
driver can act on it before the call ends.
The connection ending (closed by the driver, broken, or a message that fails its MAC or is not one
the lane sends) ends the thread: the driver never dials a listener twice, it asks the worker for a
new lane (`BenchWorker.open_lane`). A lane the driver never reached (it fell back to actor calls)
waits until the actor's process ends.

The warm-up goes over the lane too, so the engine is warmed on the thread that then runs the
batches: some engine state is per thread (torch.compile's CUDA graph trees record their graphs per
thread; warmed on Ray's thread, the first queries would record them again). The engine itself is
built on Ray's thread; a torch without the upstream thread fix (pytorch#123177) cannot run such
graphs on this thread at all, and the runtime then refuses the warm-up in one line
(`WorkerRuntime._require_build_thread`; how the fix is detected: `torch_compile.graphs_serve_any_thread`).
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable

from workers.errors import first_line
from workers.lane_codec import EVENT, FAILED, OK, LaneDecodingError, decode_call, encode_reply
from workers.lane_transport import TLSFiles
from workers.lane_wire import Channel, LaneTampered, accept

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 4  # connections the kernel holds while one is in its handshake (a stranger, up to 2 s)


# A peer that stops answering (its node lost power or its network) leaves no FIN behind: without
# keepalive a lane would wait on it for hours (Linux's default idle time before probing is 2 h).
# Probing after 5 s of silence, every 2 s, gives it up after 5 unanswered probes: about 15 s, as
# long as Ray's own health check takes to call a node dead (5 checks 3 s apart). Probes are
# answered by the peer's kernel, so a batch that is merely slow keeps its lane.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 5, 2, 5


def tune(sock: socket.socket) -> None:
    """Send each message at once (a reply must not wait on Nagle's algorithm for an ACK), and give
    the connection up once the peer's machine stops answering (above)."""
    give_up_ms = 1000 * (KEEPALIVE_IDLE_S + KEEPALIVE_INTERVAL_S * KEEPALIVE_PROBES)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                          ("TCP_KEEPCNT", KEEPALIVE_PROBES),
                          ("TCP_USER_TIMEOUT", give_up_ms)):  # also bounds a send left unacknowledged
        if hasattr(socket, option):  # Linux has all four; elsewhere the system's defaults stand
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class LaneServer:
    """Listens on (host, a free port) and serves the first connection that proves the key, until it ends."""

    def __init__(self, host: str, authkey: bytes, calls: dict[str, Callable[..., Any]],
                 streaming: frozenset[str] = frozenset(), tls: TLSFiles | None = None) -> None:
        self._tls = tls.server_context() if tls is not None else None  # bad files fail here, in open_lane
        self._key = authkey
        self._listener = socket.create_server((host, 0), backlog=LISTEN_BACKLOG)
        self._calls = calls
        self._streaming = streaming  # calls given `emit=`: they tell events before their reply
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._run, name="raybench-lane", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._listener:
            channel = self._accept()
        try:
            self._answer(channel)
        finally:
            channel.close()

    def _accept(self) -> Channel:
        """The first connection that proves the key within HANDSHAKE_TIMEOUT_S."""
        while True:
            sock, peer = self._listener.accept()
            try:
                tune(sock)
                return accept(sock, self._key, self._tls)
            except (OSError, EOFError) as exc:  # a stranger (silent, or not a lane), a wrong key, a TLS failure
                sock.close()
                why = "said nothing in time" if isinstance(exc, TimeoutError) else first_line(exc)
                log.warning("lane %s: refused a connection from %s:%s: %s", self.address, *peer[:2], why)

    def _answer(self, channel: Channel) -> None:
        """Serve calls until the driver closes the connection, it breaks, or a message is not the driver's."""
        def emit(event: Any) -> None:
            channel.send(encode_reply(EVENT, event))

        while True:
            try:
                name, args = decode_call(channel.recv())
            except (LaneTampered, LaneDecodingError) as exc:  # before OSError, which LaneTampered is
                log.warning("lane %s: closed: %s", self.address, exc)
                return
            except (EOFError, OSError):
                return
            try:
                call = self._calls[name]
                reply = encode_reply(OK, call(*args, emit=emit) if name in self._streaming else call(*args))
            except OSError:
                return  # an event could not be sent: the connection is gone
            except Exception as exc:  # noqa: BLE001 - told to the driver, which fails the run in one line
                reply = encode_reply(FAILED, first_line(exc))
            try:
                channel.send(reply)
            except OSError:
                return
