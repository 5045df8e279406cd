"""A direct lane's wire (workers/lane_server.py says why there are lanes): TLS where Ray's is on, a
key handshake with a deadline, then length-prefixed frames that each carry an HMAC-SHA256.

The handshake proves the lane's key both ways (a random 32-byte key per lane, sent to the worker
through Ray, itself behind Ray's token) without sending it:

    worker -> driver   HELLO, nonce_w                         (32 random bytes)
    driver -> worker   nonce_d, HMAC(key, "driver" nonce_w nonce_d)
    worker -> driver   HMAC(key, "worker" nonce_w nonce_d)     (only once the driver's proof held)

Both sides then MAC every frame with a session key, HMAC(key, "session" nonce_w nonce_d): fresh
nonces from both ends make each connection's key its own, so nothing recorded from another
connection verifies on this one. A frame is

    length (4 bytes, big-endian) | HMAC(session key, direction | sequence number | payload) | payload

where the direction is "d2w" or "w2d" and the sequence number counts that direction's frames from 0
(8 bytes, not sent: each end counts). A frame altered, replayed, reordered, dropped or reflected back
fails its MAC, and the lane ends (`LaneTampered`). Payloads are msgpack (workers/lane_codec.py).

The worker's end gives a connection HANDSHAKE_TIMEOUT_S in all (TLS and key) to prove itself, so a
stranger that connects and stays silent, or drips bytes, holds the listener at most that long.

TLS, when Ray's is on (`RAY_USE_TLS`), wraps the connection before the handshake
(workers/lane_transport.py).
"""

from __future__ import annotations

import hmac
import os
import socket
import ssl
import struct
import threading
import time

from workers.lane_transport import Plain, TLSTransport

HANDSHAKE_TIMEOUT_S = 2.0  # a worker's end waits this long for a connection to prove the key, then drops it
HELLO = b"raybench-lane/1\n"
NONCE_BYTES = MAC_BYTES = 32
MAX_PAYLOAD_BYTES = 64 << 20  # far above a batch's result; a bigger length is refused before it is read
_LENGTH = struct.Struct(">I")
DRIVER_TO_WORKER, WORKER_TO_DRIVER = b"d2w", b"w2d"


class HandshakeFailed(ConnectionError):
    """The other end did not prove the lane's key, or is not a lane."""


class LaneTampered(ConnectionError):
    """A frame failed its authentication: the lane cannot be trusted any more and ends."""


class Channel:
    """One end of an authenticated lane: `send` and `recv` whole payloads (bytes). `send` may be
    called from several threads; `recv` from one."""

    def __init__(self, transport: Plain | TLSTransport, session_key: bytes, sends: bytes, receives: bytes,
                 buffered: bytes = b"") -> None:
        self._transport, self._key = transport, session_key
        self._sends, self._receives = sends, receives
        self._sent = self._received = 0
        self._lock = threading.Lock()
        self._buffer = bytearray(buffered)
        self.sock = transport.sock

    def send(self, payload: bytes) -> None:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"a message of {len(payload)} bytes is over the lane's {MAX_PAYLOAD_BYTES >> 20} MiB")
        with self._lock:
            mac = _mac(self._key, self._sends, self._sent, payload)
            self._transport.sendall(_LENGTH.pack(len(payload)) + mac + payload)
            self._sent += 1

    def recv(self) -> bytes:
        """The next payload; EOFError when the peer closed, LaneTampered when a frame fails its MAC."""
        (size,) = _LENGTH.unpack(_read(self._transport, self._buffer, _LENGTH.size))
        if size > MAX_PAYLOAD_BYTES:
            raise LaneTampered(f"a frame claims {size} bytes, over the lane's {MAX_PAYLOAD_BYTES >> 20} MiB")
        frame = _read(self._transport, self._buffer, MAC_BYTES + size)
        mac, payload = frame[:MAC_BYTES], frame[MAC_BYTES:]
        if not hmac.compare_digest(mac, _mac(self._key, self._receives, self._received, payload)):
            raise LaneTampered(f"message {self._received} failed its authentication (its MAC or sequence number "
                               "is wrong: altered, replayed, reordered or dropped on the way)")
        self._received += 1
        return payload

    def shutdown(self) -> None:
        """Stop both directions now (a thread blocked in `recv` wakes with EOF)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone

    def close(self) -> None:
        self.shutdown()
        self.sock.close()


def _mac(key: bytes, direction: bytes, sequence: int, payload: bytes) -> bytes:
    return hmac.digest(key, direction + sequence.to_bytes(8, "big") + payload, "sha256")


def _read(transport: Plain | TLSTransport, buffer: bytearray, size: int) -> bytes:
    while len(buffer) < size:
        chunk = transport.recv(max(65536, size - len(buffer)))
        if not chunk:
            raise EOFError("the other end closed the connection")
        buffer += chunk
    out = bytes(buffer[:size])
    del buffer[:size]
    return out


def _proof(key: bytes, who: bytes, nonce_w: bytes, nonce_d: bytes) -> bytes:
    return hmac.digest(key, who + nonce_w + nonce_d, "sha256")


def _transport(sock: socket.socket, context: ssl.SSLContext | None, server_side: bool, hostname: str | None,
               deadline: float) -> Plain | TLSTransport:
    if context is None:
        return Plain(sock, deadline)
    return TLSTransport(sock, context, server_side, hostname, deadline)


def accept(sock: socket.socket, key: bytes, context: ssl.SSLContext | None,
           timeout_s: float = HANDSHAKE_TIMEOUT_S) -> Channel:
    """The worker's end of the handshake on an accepted connection (module docstring), within
    `timeout_s` in all; HandshakeFailed (a wrong key), TimeoutError or another OSError otherwise."""
    deadline = time.monotonic() + timeout_s
    sock.settimeout(timeout_s)
    transport = _transport(sock, context, True, None, deadline)
    nonce_w = os.urandom(NONCE_BYTES)
    transport.sendall(HELLO + nonce_w)
    buffer = bytearray()
    answer = _read(transport, buffer, NONCE_BYTES + MAC_BYTES)
    nonce_d, proof = answer[:NONCE_BYTES], answer[NONCE_BYTES:]
    if not hmac.compare_digest(proof, _proof(key, b"driver", nonce_w, nonce_d)):
        raise HandshakeFailed("it did not prove the lane's key")
    transport.sendall(_proof(key, b"worker", nonce_w, nonce_d))
    return _opened(transport, key, nonce_w, nonce_d, WORKER_TO_DRIVER, DRIVER_TO_WORKER, buffer)


def dial(sock: socket.socket, key: bytes, context: ssl.SSLContext | None, hostname: str,
         deadline: float) -> Channel:
    """The driver's end of the handshake on a connected socket, by `deadline` (time.monotonic())."""
    transport = _transport(sock, context, False, hostname, deadline)
    buffer = bytearray()
    try:
        hello = _read(transport, buffer, len(HELLO) + NONCE_BYTES)
    except EOFError:
        raise HandshakeFailed("the worker's end closed the connection before its hello") from None
    if not hello.startswith(HELLO):
        raise HandshakeFailed(f"not a raybench lane (or another version of one): it began {hello[:16]!r}")
    nonce_w, nonce_d = hello[len(HELLO):], os.urandom(NONCE_BYTES)
    transport.sendall(nonce_d + _proof(key, b"driver", nonce_w, nonce_d))
    try:
        proof = _read(transport, buffer, MAC_BYTES)
    except EOFError:
        raise HandshakeFailed("the worker closed the connection: it refused the key") from None
    if not hmac.compare_digest(proof, _proof(key, b"worker", nonce_w, nonce_d)):
        raise HandshakeFailed("the worker did not prove the lane's key")
    return _opened(transport, key, nonce_w, nonce_d, DRIVER_TO_WORKER, WORKER_TO_DRIVER, buffer)


def _opened(transport: Plain | TLSTransport, key: bytes, nonce_w: bytes, nonce_d: bytes, sends: bytes, receives: bytes,
            buffer: bytearray) -> Channel:
    """After the handshake: no deadline (keepalive watches the peer: workers/lane_server.py's `tune`)."""
    transport.deadline = None
    transport.sock.settimeout(None)
    return Channel(transport, _proof(key, b"session", nonce_w, nonce_d), sends, receives, bytes(buffer))
