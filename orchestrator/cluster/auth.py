"""Token auth, checked in milliseconds before Ray's own clients are asked.

Ray 2.60 clusters use token authentication. A process that joins sends `authorization: Bearer
<token>` when RAY_AUTH_MODE=token, taking the token from RAY_AUTH_TOKEN, else the file named by
RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token. Given no token or the wrong one, `ray.init` retries
for about 20 s and prints a screen of `gcs_client.cc` warnings before it gives up, and the Jobs
client says "Authentication failed". So we ask first, with the very header Ray would send: one
`CheckAlive` call to the GCS (the GCS checks the token on every RPC), or one GET to the dashboard
(401: no token, 403: wrong token). Either answers at once, and the error says what to set.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

from workers.errors import UserError

CHECK_TIMEOUT_S = 5.0


def sent_headers() -> dict[str, str]:
    """The header Ray's clients send from this process (empty when RAY_AUTH_MODE is not token).
    RAY_AUTH_MODE=token with no token anywhere is an error here already, as it is in ray.init."""
    from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled
    from ray.exceptions import AuthenticationError

    try:
        return get_auth_headers_if_auth_enabled({})
    except AuthenticationError as exc:
        raise UserError("RAY_AUTH_MODE=token but no token is set here: set RAY_AUTH_TOKEN to the head's token "
                        "or copy the head's ~/.ray/auth_token to this machine") from exc


def _token_source() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"


def _has_local_token() -> bool:
    from ray._raylet import AuthenticationTokenLoader

    return AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)


def rejected(where: str, sent: bool) -> UserError:
    """The one line for a cluster that refused us, saying what to set."""
    if sent:
        return UserError(f"{where}: the cluster rejected the token from {_token_source()}: "
                         "use the head's token (RAY_AUTH_TOKEN, or the head's ~/.ray/auth_token)")
    if _has_local_token():
        return UserError(f"{where}: the cluster uses token auth and this shell sends no token: "
                         f"export RAY_AUTH_MODE=token (the token is read from {_token_source()})")
    return UserError(f"{where}: the cluster uses token auth: export RAY_AUTH_MODE=token and "
                     "RAY_AUTH_TOKEN=<the head's token> (or copy the head's ~/.ray/auth_token here)")


def check_gcs(address: str, where: str, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """One gRPC call to the GCS at host:port with Ray's auth header; raises a one-line UserError
    when the token is missing or wrong, or when no GCS answers there."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    headers = sent_headers()
    with _channel(grpc, address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.CheckAlive(gcs_service_pb2.CheckAliveRequest(), timeout=timeout_s, metadata=list(headers.items()))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise rejected(where, bool(headers)) from None
            detail = (exc.details() or "").split("\n")[0][:200]
            raise UserError(f"{where}: no Ray GCS answers there ({exc.code().name}: {detail}); give the head's "
                            "GCS address (port 6379 by default)") from None


def _channel(grpc, address: str):
    """The channel Ray's own clients would open from this process: TLS with Ray's files where Ray's
    TLS is on (RAY_USE_TLS; ray._private.grpc_utils), else plain."""
    from workers.lane_transport import tls_from_env

    try:
        tls = tls_from_env(os.environ)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if tls is None:
        return grpc.insecure_channel(address)
    try:
        cert, key, ca = (open(path, "rb").read() for path in (tls.cert, tls.key, tls.ca))
    except OSError as exc:
        raise UserError(f"RAY_USE_TLS is on but {exc.filename} cannot be read ({exc.strerror})") from None
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(ca, key, cert))


def check_dashboard(url: str, where: str, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """One GET to the dashboard with Ray's auth header: 401 is no token, 403 the wrong one."""
    headers = sent_headers()
    request = urllib.request.Request(f"{url.rstrip('/')}/api/version", headers=headers)
    try:
        urllib.request.urlopen(request, timeout=timeout_s).close()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise rejected(where, bool(headers)) from None
        raise UserError(f"{where}: the dashboard answered HTTP {exc.code} {exc.reason}; is this the Ray dashboard?") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"{where}: cannot reach the Ray dashboard ({reason}); is the head up, and the dashboard "
                        "forwarded (`ray dashboard cluster.yaml`)?") from None
