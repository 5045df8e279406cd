"""The driver's live metrics for the whole run: shard progress and pooled accuracy so far.

Exported through `ray.util.metrics` beside the workers' own series (workers/shard/live_metrics.py holds
the names, the contract with `grafana/raybench.json`); a no-op outside Ray.
"""

from __future__ import annotations

from workers.shard.live_metrics import METRICS, ray_metrics


class RunMeter:
    """What the driver reports for the whole run: progress and pooled accuracy so far."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        m = ray_metrics()
        self.enabled = m is not None
        if self.enabled:
            keys = ("run_id", "pass")
            self.progress = m.Gauge("raybench_run_progress", METRICS["raybench_run_progress"], tag_keys=keys)
            self.accuracy = m.Gauge("raybench_run_accuracy", METRICS["raybench_run_accuracy"], tag_keys=keys)

    def update(self, pass_name: str, shards_done: int, shards_total: int, scored: int, correct: int) -> None:
        if not self.enabled:
            return
        tags = {"run_id": self.run_id, "pass": pass_name}
        self.progress.set(shards_done / shards_total if shards_total else 0.0, tags=tags)
        if scored:
            self.accuracy.set(correct / scored, tags=tags)
