"""Joining Ray: a cluster at an address, or a local instance started for this job."""

from __future__ import annotations

import os

from workers.errors import UserError


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
        ray.init(include_dashboard=False, **kwargs)
        return True
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        auth = "" if os.environ.get("RAY_AUTH_MODE") == "token" else " (token auth: set RAY_AUTH_MODE=token and the token)"
        raise UserError(f"--address {address}: cannot reach the Ray cluster: {first}{auth}") from exc
    return True


def cluster_resources() -> tuple[float, float]:
    """(GPUs, CPUs) the cluster has in total."""
    import ray

    resources = ray.cluster_resources()
    return float(resources.get("GPU", 0.0)), float(resources.get("CPU", 0.0))


def disconnect() -> None:
    import ray

    ray.shutdown()
