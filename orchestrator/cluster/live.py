"""The driver's live metrics (Ray metrics, names from workers/metric_names.py; a no-op outside Ray).

- `RunMeter`: the whole run's shard progress and pooled accuracy so far (Offline);
- `ScenarioMeter`: a LoadGen run's queries issued and completed, samples waiting, each worker's
  queue depth, and a query latency histogram. Its latency is the driver's clock, from LoadGen's
  issue callback to the last sample's completion: what a dashboard can see while the run goes.
  The row's latencies are LoadGen's own, from its logs, after the run.
"""

from __future__ import annotations

from workers.metric_names import LATENCY_BOUNDARIES, METRICS, ray_metrics


class ScenarioMeter:
    def __init__(self, run_id: str) -> None:
        self.tags = {"run_id": run_id}
        m = ray_metrics()
        self.enabled = m is not None and bool(run_id)
        if not self.enabled:
            return
        run, worker = ("run_id",), ("run_id", "worker")
        self.issued = m.Counter("raybench_queries_issued_total", METRICS["raybench_queries_issued_total"], tag_keys=run)
        self.completed = m.Counter("raybench_queries_completed_total", METRICS["raybench_queries_completed_total"],
                                   tag_keys=run)
        self.waiting = m.Gauge("raybench_samples_waiting", METRICS["raybench_samples_waiting"], tag_keys=run)
        self.depth = m.Gauge("raybench_worker_queue_depth", METRICS["raybench_worker_queue_depth"], tag_keys=worker)
        self.latency = m.Histogram("raybench_query_latency_seconds", METRICS["raybench_query_latency_seconds"],
                                   boundaries=LATENCY_BOUNDARIES, tag_keys=run)

    def query_issued(self, queries: int, samples_waiting: int) -> None:
        if self.enabled:
            self.issued.inc(queries, tags=self.tags)
            self.waiting.set(samples_waiting, tags=self.tags)

    def query_completed(self, seconds: float) -> None:
        if self.enabled:
            self.completed.inc(1, tags=self.tags)
            self.latency.observe(seconds, tags=self.tags)

    def queue_depth(self, worker: int, samples: int, samples_waiting: int) -> None:
        if self.enabled:
            self.depth.set(samples, tags={**self.tags, "worker": str(worker)})
            self.waiting.set(samples_waiting, tags=self.tags)


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
