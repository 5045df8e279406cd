"""Where a run's time went, from `bench submit` to its stored row.

`e2e_time` is one number; a newcomer whose first `bench submit` takes 40 s wants to know whether
that was Ray starting, the data, loading the model or the passes. The driver marks each step as it
ends (seconds since the point started: the submit for the first point of a command, the end of the
previous point for the next ones), the passes' spans come from their shards, and the lot goes to
`runs/<id>/timeline.json` and one printed line. The row has the same figures where they are
metrics: `ray_start_time`, `data_time`, `load_time`, `build_time`, `p_*_whole` (items over a span).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from workers.contract import ShardResult

TIMELINE_FILE = "timeline.json"


@dataclass
class Timeline:
    started: float  # perf_counter at the point's start
    started_at: float  # the same moment in epoch seconds (shard timestamps are epoch seconds)
    marks: dict[str, float] = field(default_factory=dict)  # step -> seconds since the start, when it ended

    def mark(self, step: str, seconds: float | None = None) -> None:
        """`step` ended now (or `seconds` after the start), unless an earlier repeat marked it."""
        self.marks.setdefault(step, time.perf_counter() - self.started if seconds is None else seconds)

    def record(self, results: list[ShardResult]) -> dict:
        """The marks and each pass's span (first shard start to last shard end) of this session."""
        spans: dict[str, list[float]] = {}
        for r in results:
            if r.error is None and r.end_ts >= self.started_at:  # shards an earlier driver ran are not this session's
                start, end = r.start_ts - self.started_at, r.end_ts - self.started_at
                key = r.pass_name + (f"-r{r.repeat}" if r.repeat else "")
                low, high = spans.get(key, (start, end))
                spans[key] = [min(low, start), max(high, end)]
        return {"started_at": self.started_at, "steps": dict(self.marks), "passes": spans}

