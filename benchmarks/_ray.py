"""A local Ray instance owned by one benchmark script: started here, always shut down here."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def local_ray(**init) -> Iterator[None]:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="error", **init)
    try:
        yield
    finally:
        ray.shutdown()
