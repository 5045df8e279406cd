"""Joining Ray: a cluster at an address, or a local instance started for this job.

Ray 2.60 clusters use token authentication: every process that joins needs RAY_AUTH_MODE=token and
the token (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token that `ray start` writes on the head). We
never turn it off. `ray.init(address=...)` waits minutes on an address where nothing listens and
~20 s on a token it does not like, so we first check that the GCS port answers at all, then that
it takes our token (`auth.py`), each within seconds, and fail in one line if not.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from typing import Iterator

from workers.errors import UserError, first_line

CONNECT_TIMEOUT_S = 5.0


class _DropDefaultAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


@contextmanager
def quiet_default_auth_notice() -> Iterator[None]:
    """Ray warns on every new local instance that it turned token auth on by default. For the
    instance a command starts for itself that is no news (auth stays on; the token is Ray's own
    ~/.ray/auth_token), so this one notice is dropped. Setting RAY_AUTH_MODE=token instead would
    not do: Ray reads it when imported, and the driver would then send no token to its own GCS."""
    auth_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notice = _DropDefaultAuthNotice()
    auth_logger.addFilter(notice)
    try:
        yield
    finally:
        auth_logger.removeFilter(notice)


def resolve_address(address: str, temp_dir: str | None = None) -> str:
    """`auto` -> RAY_ADDRESS when it holds a GCS address, else the cluster the last `ray start` on
    this machine recorded in `<temp_dir>/ray_current_cluster`: Ray's own file, read by Ray's own
    helper, under the `--temp-dir` that `ray start` was given (default: Ray's, /tmp/ray)."""
    if address != "auto":
        return address
    from ray._common.utils import get_ray_address_file
    from ray._private.utils import read_ray_address

    env = os.environ.get("RAY_ADDRESS", "")
    if env and env != "auto" and not env.startswith(("http://", "https://")):
        return env
    found = read_ray_address(temp_dir)
    if not found:
        raise UserError(f"--address auto: no running Ray cluster recorded in {get_ray_address_file(temp_dir)} "
                        "(start one with `ray up cluster.yaml` or `ray start --head`, pass the --temp-dir it "
                        "was started with, or give the head's address)")
    return found


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """One TCP connect to the head's port: the fast, bounded answer ray.init cannot give."""
    hostport = address.removeprefix("ray://").split("/")[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected auto, host:port (the head's GCS, e.g. 10.0.0.1:6379) or ray://host:10001")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); is the head up?") from exc


def connect(address: str | None, *, verbose: bool = False, node_ip: str | None = None) -> bool:
    """Initialise Ray in this process. Returns True when this call started (and must stop) it.

    `address` is `auto`, `ray://head:10001` or the head's GCS `host:6379`; None starts a local
    instance with the machine's CPUs (and GPUs, if any), bound to `node_ip` when given (Ray
    otherwise picks the outward address). An already initialised Ray is reused (tests and
    notebooks set it up themselves).
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs = dict(log_to_driver=verbose, configure_logging=True, logging_level="info" if verbose else "warning")
    if address is None:
        if node_ip:
            kwargs["_node_ip_address"] = node_ip
        with quiet_default_auth_notice():
            ray.init(include_dashboard=False, **kwargs)
        return True
    from orchestrator.cluster.auth import check_gcs, sent_headers

    target = resolve_address(address)
    check_reachable(target)
    if target.startswith("ray://"):
        sent_headers()  # RAY_AUTH_MODE=token without a token: one line here, not Ray's paragraph
    else:
        check_gcs(target, f"--address {address}")
    try:
        ray.init(address=target, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"--address {address}: cannot join the Ray cluster: {first_line(exc)}") from exc
    return True


def cluster_resources() -> tuple[float, float]:
    """(GPUs, CPUs) the cluster has in total."""
    import ray

    resources = ray.cluster_resources()
    return float(resources.get("GPU", 0.0)), float(resources.get("CPU", 0.0))


def disconnect() -> None:
    import ray

    ray.shutdown()
