"""Where a run's time went, from `bench submit` to its stored row.

`e2e_time` is one number; a newcomer whose first `bench submit` takes 40 s wants to know whether
that was Ray starting, the data, loading the model or the passes. The driver marks each step as it
ends (seconds since the point started: the submit for the first point of a command, the end of the
previous point for the next ones), the passes' spans come from their shards, and the lot goes to
`runs/<id>/timeline.json` and one printed line. The row has the same figures where they are
metrics: `ray_start_time`, `data_time`, `load_time`, `build_time`, `p_*_whole` (items over a span),
`invariance_time`. Beside the marks: driver-side spans (the invariance check), and what the workers'
setup and first shards spent off the measured spans: the measured matmul peak (0 when the cache had
it) and the warm-up batches, so the gap between "workers ready" and the first measured batch is
accounted for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from workers.contract import ShardResult, WorkerInfo

TIMELINE_FILE = "timeline.json"


@dataclass
class Timeline:
    started: float  # perf_counter at the point's start
    started_at: float  # the same moment in epoch seconds (shard timestamps are epoch seconds)
    marks: dict[str, float] = field(default_factory=dict)  # step -> seconds since the start, when it ended
    spans: dict[str, list[float]] = field(default_factory=dict)  # driver-side steps: name -> [from, to]

    def now(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.started

    def mark(self, step: str, seconds: float | None = None) -> None:
        """`step` ended now (or `seconds` after the start), unless an earlier repeat marked it."""
        self.marks.setdefault(step, self.now() if seconds is None else seconds)

    def span(self, step: str, start: float, end: float) -> None:
        """`step` ran from `start` to `end` (seconds since the start)."""
        self.spans[step] = [start, end]

    def record(self, results: list[ShardResult], infos: list[WorkerInfo] = ()) -> dict:
        """The marks, each pass's span (first shard start to last shard end) of this session, the
        driver's spans, and the setup's costs outside them (`setup_costs`)."""
        spans: dict[str, list[float]] = {}
        for r in results:
            if r.error is None and r.end_ts >= self.started_at:  # shards an earlier driver ran are not this session's
                start, end = r.start_ts - self.started_at, r.end_ts - self.started_at
                key = r.pass_name + (f"-r{r.repeat}" if r.repeat else "")
                low, high = spans.get(key, (start, end))
                spans[key] = [min(low, start), max(high, end)]
        return {"started_at": self.started_at, "steps": dict(self.marks), "passes": spans, "spans": dict(self.spans),
                "setup": setup_costs(results, infos)}


def setup_costs(results: list[ShardResult], infos: list[WorkerInfo]) -> dict:
    """Seconds the slowest worker spent on the measured matmul peak at setup (0.0: read from the
    cache; None: not taken) and on warm-up batches before its first measured shard of each pass."""
    peaks = [i.peak_seconds for i in infos if i.peak_seconds is not None]
    warmups: dict[str, float] = {}
    for r in results:
        if r.error is None and r.warmup_batches:
            warmups[r.pass_name] = max(warmups.get(r.pass_name, 0.0), r.warmup_seconds)
    return {"peak_seconds": max(peaks) if peaks else None, "warmup_seconds": warmups}

