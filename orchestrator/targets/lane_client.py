"""The driver's end of a direct connection to one worker (workers/lane_server.py has the why and the worker's end).

`run` (a `call` of the worker's `run_samples`) sends the batch on the bridge's own thread (a small
message into the socket's buffer; a worker holds one batch at a time) and returns a future; a
thread per lane sleeps in `recv` and completes the futures in order. A connection that breaks
(the worker's process died; its node went silent, which keepalive finds: workers/lane_server.py's
`tune`) fails the batch in flight, and every later one, with `LaneLost`, which the bridge treats
as a dead worker: its samples are re-issued and Ray is asked whether it restarted it. So does a
reply that fails its MAC or is not one the lane sends (workers/lane_wire.py, workers/lane_codec.py):
the connection is shut at once, and the restart path opens a new lane. An argument the lane does
not carry fails its own call with `LaneEncodingError` and sends nothing.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from workers.contract import SampleBatch
from workers.lane_codec import EVENT, FAILED, LaneDecodingError, LaneEncodingError, decode_reply, encode_call
from workers.lane_server import tune
from workers.lane_transport import TLSFiles
from workers.lane_wire import Channel, LaneTampered, dial

CONNECT_TIMEOUT_S = 10.0  # the TCP connect, TLS and the key's handshake in all (a worker may be dropping a stranger)
create_connection = socket.create_connection  # the one way out to the worker (tests refuse it here)


class LaneLost(ConnectionError):
    """The connection to a worker broke: as a dead worker for the bridge."""


class LaneFailed(RuntimeError):
    """The worker's end raised outside `run_samples`' own error handling (a bug): fails the run."""


def connect(address: tuple[str, int], authkey: bytes, timeout_s: float = CONNECT_TIMEOUT_S,
            tls: TLSFiles | None = None) -> Channel:
    """Connect and prove the key, all within `timeout_s`: a firewalled port would otherwise hang for minutes."""
    deadline = time.monotonic() + timeout_s
    context = tls.client_context() if tls is not None else None
    host, port = address
    try:
        sock = create_connection((host, port), timeout=timeout_s)
    except TimeoutError:
        raise TimeoutError(f"no answer from {host}:{port} within {timeout_s:g} s") from None
    try:
        tune(sock)
        return dial(sock, authkey, context, host, deadline)
    except TimeoutError:
        sock.close()
        raise TimeoutError(f"no answer from {host}:{port} within {timeout_s:g} s") from None
    except BaseException:
        sock.close()
        raise


class DirectLane:
    def __init__(self, address: tuple[str, int], authkey: bytes, worker: int, tls: TLSFiles | None = None) -> None:
        self.worker = worker
        self._channel = connect(address, authkey, tls=tls)
        self._sent: queue.SimpleQueue = queue.SimpleQueue()  # futures of calls sent, in order
        self._sending = threading.Lock()  # a call's message and its future go in the same order
        self._broken: LaneLost | None = None
        self._thread = threading.Thread(target=self._receive, name=f"raybench-lane-w{worker}", daemon=True)
        self._thread.start()

    def run(self, batch: SampleBatch, on_event: Callable[[Any], None] | None = None) -> Future:
        return self.call("run_samples", batch, on_event=on_event)

    def call(self, name: str, *args: Any, on_event: Callable[[Any], None] | None = None) -> Future:
        """Call the worker's `name` (one it offers: workers/lane_server.py) on the lane's thread there.
        `on_event` gets each event the call tells before its reply, in order, on the lane's thread."""
        future: Future = Future()
        if self._broken is not None:
            future.set_exception(self._broken)
            return future
        try:
            message = encode_call(name, args)
        except LaneEncodingError as exc:  # the caller's bug: this call fails, the lane goes on
            future.set_exception(exc)
            return future
        with self._sending:
            try:
                self._channel.send(message)
            except (OSError, ValueError) as exc:  # ValueError: a message over the lane's limit
                future.set_exception(LaneLost(f"worker {self.worker}'s connection broke: {exc}"))
                return future
            self._sent.put((future, on_event))  # after the send: the reply waits in the socket until read
        return future

    def _receive(self) -> None:
        while (sent := self._sent.get()) is not None:
            future, on_event = sent
            if self._broken is not None:
                future.set_exception(self._broken)
                continue
            try:
                kind, value, hook_error = self._reply(on_event)
            except (LaneTampered, LaneDecodingError) as exc:  # before OSError, which LaneTampered is
                self._broken = LaneLost(f"worker {self.worker}'s lane was ended: {exc}")
                self._channel.shutdown()  # nothing more is read or sent on it; the worker's end sees EOF
                future.set_exception(self._broken)
                continue
            except (EOFError, OSError) as exc:
                self._broken = LaneLost(f"worker {self.worker}'s connection broke: {type(exc).__name__} {exc}")
                future.set_exception(self._broken)
                continue
            if hook_error is not None:
                future.set_exception(hook_error)  # the caller's own bug, on its future, not a lost lane
            elif kind == FAILED:
                future.set_exception(LaneFailed(value))
            else:
                future.set_result(value)

    def _reply(self, on_event: Callable[[Any], None] | None) -> tuple[str, Any, Exception | None]:
        """The call's reply, its events handed to `on_event` on the way (dropped without one), and
        what `on_event` raised, if it did (the reply is still read, so the lane stays in step)."""
        hook_error = None
        while True:
            kind, value = decode_reply(self._channel.recv())
            if kind != EVENT:
                return kind, value, hook_error
            if on_event is not None and hook_error is None:
                try:
                    on_event(value)
                except Exception as exc:  # noqa: BLE001 - raised on the call's future
                    hook_error = exc

    def abandon(self) -> None:
        """Close without waiting for what is in flight (a hung worker): its futures fail as lost."""
        self._broken = LaneLost(f"worker {self.worker}'s lane was abandoned")
        self._sent.put(None)
        try:  # shutdown wakes the receiving thread blocked in recv (a close alone would not)
            with socket.socket(fileno=self._conn.fileno()) as sock:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.detach()
        except OSError:
            pass

    def close(self) -> None:
        """Wait for a call still in flight, then close: the worker's end sees EOF and stops."""
        self._sent.put(None)
        self._thread.join()
        self._channel.close()
