"""Ways to drive load, side by side: one folder each, the same shape (a `run_point(point) -> RunResult`).

    offline/   raybench's sharded Offline: every example as fast as the workers go
    loadgen/   MLPerf LoadGen's scenarios: LoadGen decides when queries arrive and what is VALID
    endpoint/  a running server: a schedule of requests made in advance, sent by client actors

The driver hands each grid point to the mode its `load.kind` names, through `MODES`; it names no
mode itself. A mode is imported only when a job uses it ("module:function", resolved lazily), so
an Offline run never loads LoadGen. Every mode brings its workers up with
orchestrator/cluster/bring_up.py and ends with orchestrator/point.py's `finish` (the endpoint mode,
which has client actors instead of workers, starts them itself and ends with `store_row`).
"""

from __future__ import annotations

import importlib
from typing import Callable

from orchestrator.point import Point
from orchestrator.session import RunResult

MODES: dict[str, str] = {
    "offline": "orchestrator.modes.offline.point:run_point",
    "loadgen": "orchestrator.modes.loadgen.point:run_point",
    "endpoint": "orchestrator.modes.endpoint.point:run_point",
}


def mode_for(kind: str) -> Callable[[Point], RunResult]:
    """The `run_point` of the mode a job's `load.kind` names."""
    module, _, name = MODES[kind].partition(":")
    return getattr(importlib.import_module(module), name)
