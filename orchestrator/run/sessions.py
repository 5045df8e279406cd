"""Driver sessions of a run: when some driver was running it, so a resumed run counts that time only.

The first driver's start is `started_at` in `runs/<id>/run.json`; every `bench submit --resume`
adds its own start (epoch seconds) to `runs/<id>/sessions.json`, which then lists them all,
before it runs anything. A driver that dies writes no
end; its last sign of life is the end of the last shard it saved. So the pause before session k
runs from the later of (session k-1's start, the last shard end before session k started) to
session k's start. METRICS.md: `e2e_time` and the whole spans of a resumed run count the time a
driver was running, not the time no driver was there.
"""

from __future__ import annotations

import json
from itertools import pairwise

from orchestrator.metrics.merge import Pause
from orchestrator.metrics.store import RunFolder

SESSIONS = "sessions.json"


def pauses_between(session_starts: list[float], shard_ends: list[float]) -> tuple[Pause, ...]:
    """(from, to) of every stretch with no driver, from the sessions' starts and the shards' ends."""
    out = []
    starts = sorted(session_starts)
    for previous, start in pairwise(starts):
        alive = max([previous] + [end for end in shard_ends if previous <= end <= start])
        if start > alive:
            out.append((alive, start))
    return tuple(out)


def session_starts(run: RunFolder) -> list[float]:
    """The starts recorded so far: sessions.json once a run was resumed, else the first driver's start."""
    if run.has(SESSIONS):
        return list(json.loads(run.read_text(SESSIONS)))
    meta = json.loads(run.read_text("run.json")) if run.has("run.json") else {}
    return [meta["started_at"]] if meta.get("started_at") is not None else []


def record_session(run: RunFolder, started_at: float) -> list[float]:
    """Add this driver's start to the run's sessions; returns every start, this one last."""
    starts = session_starts(run) + [started_at]
    run.write_text(SESSIONS, json.dumps(starts))
    return starts
