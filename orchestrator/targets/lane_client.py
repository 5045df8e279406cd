"""The driver's end of a direct connection to one worker (workers/lane_server.py has the why and the worker's end).

`run` (a `call` of the worker's `run_samples`) sends the batch on the bridge's own thread (a small
message into the socket's buffer; a worker holds one batch at a time) and returns a future; a
thread per lane sleeps in `recv` and completes the futures in order. A connection that breaks
(the worker's process died; its node went silent, which keepalive finds: workers/lane_server.py's
`tune`) fails the batch in flight, and every later one,
with `LaneLost`, which the bridge treats as a dead worker: its samples are re-issued and Ray is
asked whether it restarted it.
"""

from __future__ import annotations

import queue
import socket
import threading
from concurrent.futures import Future
from multiprocessing.connection import Client, Connection
from typing import Any, Callable

from workers.contract import SampleBatch
from workers.lane_server import EVENT, FAILED, tune

CONNECT_TIMEOUT_S = 10.0


class LaneLost(ConnectionError):
    """The connection to a worker broke: as a dead worker for the bridge."""


class LaneFailed(RuntimeError):
    """The worker's end raised outside `run_samples`' own error handling (a bug): fails the run."""


def connect(address: tuple[str, int], authkey: bytes, timeout_s: float = CONNECT_TIMEOUT_S) -> Connection:
    """`Client` with a deadline: its connect has none, and a firewalled port would hang for minutes."""
    box: dict[str, object] = {}

    def dial() -> None:
        try:
            box["conn"] = Client(address, authkey=authkey)
        except BaseException as exc:  # noqa: BLE001 - raised below, on the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=dial, name="raybench-lane-connect", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "conn" in box:
        return box["conn"]  # type: ignore[return-value]
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    raise TimeoutError(f"no answer from {address[0]}:{address[1]} within {timeout_s:g} s")


class DirectLane:
    def __init__(self, address: tuple[str, int], authkey: bytes, worker: int) -> None:
        self.worker = worker
        self._conn = connect(address, authkey)
        tune(self._conn)
        self._sent: queue.SimpleQueue = queue.SimpleQueue()  # futures of batches sent, in order
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
            self._conn.send((name, args))
        except (OSError, ValueError) as exc:  # ValueError: the connection was closed here
            future.set_exception(LaneLost(f"worker {self.worker}'s connection broke: {exc}"))
            return future
        self._sent.put((future, on_event))  # after the send: the reply waits in the socket until the thread reads it
        return future

    def _receive(self) -> None:
        while (sent := self._sent.get()) is not None:
            future, on_event = sent
            if self._broken is not None:
                future.set_exception(self._broken)
                continue
            try:
                kind, value, hook_error = self._reply(on_event)
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
            kind, value = self._conn.recv()
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
        """Wait for a batch still in flight, then close: the worker's end sees EOF and stops."""
        self._sent.put(None)
        self._thread.join()
        self._conn.close()
