"""What carries a direct lane's bytes under its frames (workers/lane_wire.py): the socket itself,
or TLS with Ray's certificates where Ray's TLS is on.

TLS, when Ray's is on (`RAY_USE_TLS`): both ends load Ray's own files (`RAY_TLS_SERVER_CERT`,
`RAY_TLS_SERVER_KEY`, `RAY_TLS_CA_CERT`) as Ray's gRPC does (ray._common.tls_utils), each
presenting that certificate and requiring the other's to chain to the CA; the driver also checks
that the worker's certificate names the address it dialled, as gRPC checks its target (Ray's TLS
guides put each node's IP in its certificate). TLS runs over memory BIOs, not an SSLSocket: the
driver sends on one thread while another waits for replies, and OpenSSL does not allow one SSL
object to be used from two threads at once, so each TLS step holds a lock and no thread blocks on
the socket while holding it.

Both transports bound each read by `deadline` (time.monotonic()) while it is set: the handshake's
(workers/lane_wire.py), for the whole handshake, not per read; None after it.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class TLSFiles:
    """Ray's TLS files (the paths Ray's gRPC reads): each end presents `cert` and trusts `ca`."""

    cert: str
    key: str
    ca: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        context.load_verify_locations(self.ca)
        context.verify_mode = ssl.CERT_REQUIRED  # mutual: the driver's certificate must chain to the CA too
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and the name checked
        context.load_cert_chain(self.cert, self.key)
        context.load_verify_locations(self.ca)
        return context


def tls_from_env(environ: Mapping[str, str]) -> TLSFiles | None:
    """Ray's TLS settings, as Ray reads them (ray._common.tls_utils); None where Ray's TLS is off.
    Read where a lane is opened (the actor's `open_lane`, the driver's RayWorkers): Ray's own switch."""
    if environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):
        return None
    names = ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
    missing = [n for n in names if not environ.get(n)]
    if missing:
        raise ValueError(f"RAY_USE_TLS is on but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set "
                         "(Ray needs all three)")
    return TLSFiles(*(environ[n] for n in names))


def recv_until(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    """One `recv`, bounded by the deadline when there is one (the handshake's)."""
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(left)
    return sock.recv(size)


class Plain:
    """The socket itself."""

    def __init__(self, sock: socket.socket, deadline: float | None) -> None:
        self.sock, self.deadline = sock, deadline

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        return recv_until(self.sock, size, self.deadline)


class TLSTransport:
    """TLS over memory BIOs (module docstring): `sendall` and `recv` of plaintext, safe to use from
    one sending and one receiving thread at once."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_side: bool,
                 server_hostname: str | None, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        self._state = threading.Lock()  # the SSL object
        self._sending = threading.Lock()  # taken before _state: what goes out leaves in the order it was made
        while True:
            failed: ssl.SSLError | None = None
            with self._state:
                try:
                    self._tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                except ssl.SSLError as exc:
                    failed = exc
            self._flush()  # on a failure, the alert that tells the other end why (an unknown CA, a name mismatch)
            if failed is not None:
                raise failed
            if done:
                return
            if not self._feed():
                raise ConnectionResetError("the connection closed during the TLS handshake")

    def _flush(self) -> None:
        with self._sending:
            with self._state:
                data = self._outgoing.read()
            if data:
                self.sock.sendall(data)

    def _feed(self) -> bool:
        data = recv_until(self.sock, 65536, self.deadline)
        if not data:
            return False
        with self._state:
            self._incoming.write(data)
        return True

    def sendall(self, data: bytes) -> None:
        with self._sending:
            with self._state:
                self._tls.write(data)
                out = self._outgoing.read()
            self.sock.sendall(out)

    def recv(self, size: int) -> bytes:
        while True:
            with self._state:
                try:
                    data: bytes | None = self._tls.read(size)
                except ssl.SSLWantReadError:
                    data = None
                except ssl.SSLZeroReturnError:  # the peer's close_notify
                    data = b""
                pending = self._outgoing.pending
            if pending:
                self._flush()  # what reading made the TLS engine say (a key update's answer)
            if data is not None:
                return data
            if not self._feed():
                return b""
