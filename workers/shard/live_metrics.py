"""What a worker reports to Ray's metrics while it runs (`ray.util.metrics`, the dashboard's Grafana
panels), tagged by run, worker and pass; names from workers/metric_names.py. Outside Ray (a worker
run in-process on a lone GPU box) every call is a no-op.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from workers.metric_names import LATENCY_BOUNDARIES, METRICS, TAGS, ray_metrics


class WorkerMeter:
    """What one worker actor reports while it runs shards."""

    def __init__(self, run_id: str, worker_id: int) -> None:
        self.tags = {"run_id": run_id, "worker": str(worker_id)}
        self._totals: dict[str, list[int]] = {}
        self._later: queue.SimpleQueue | None = None  # shard_later's results, for its thread
        self.tokens_made = 0  # generate: the decode loop counts here (a plain int: a live figure, not a result)
        self._watching = False
        m = ray_metrics()
        self.enabled = m is not None and bool(run_id)
        if not self.enabled:
            return
        d = METRICS
        self.items = m.Counter("raybench_items_total", d["raybench_items_total"], tag_keys=TAGS)
        self.shards = m.Counter("raybench_shards_done_total", d["raybench_shards_done_total"], tag_keys=TAGS)
        self.core_rate = m.Gauge("raybench_core_items_per_second", d["raybench_core_items_per_second"], tag_keys=TAGS)
        self.whole_rate = m.Gauge("raybench_whole_items_per_second", d["raybench_whole_items_per_second"], tag_keys=TAGS)
        self.latency = m.Histogram("raybench_batch_latency_seconds", d["raybench_batch_latency_seconds"],
                                   boundaries=LATENCY_BOUNDARIES, tag_keys=TAGS)
        self.accuracy = m.Gauge("raybench_accuracy", d["raybench_accuracy"], tag_keys=TAGS)
        self.memory = m.Gauge("raybench_device_memory_bytes", d["raybench_device_memory_bytes"], tag_keys=TAGS)
        worker = ("run_id", "worker")
        self.tokens = m.Counter("raybench_tokens_total", d["raybench_tokens_total"], tag_keys=worker)
        self.running = m.Gauge("raybench_requests_running", d["raybench_requests_running"], tag_keys=worker)
        self.waiting = m.Gauge("raybench_requests_waiting", d["raybench_requests_waiting"], tag_keys=worker)
        self.kv_blocks = m.Gauge("raybench_kv_blocks_used", d["raybench_kv_blocks_used"], tag_keys=worker)

    def watch_generation(self, generator: Any, every_s: float = 1.0) -> None:
        """Generate: a thread that, every `every_s`, reports the tokens made since its last look and
        what the generator says it holds (`live()`: running, waiting, KV pages), so a dashboard sees
        a shard of continuous batching progress while its one call runs."""
        if not self.enabled or self._watching:
            return
        self._watching = True

        def watch() -> None:
            told = 0
            while True:
                time.sleep(every_s)
                made = self.tokens_made
                if made > told:
                    self.tokens.inc(made - told, tags=self.tags)
                    told = made
                live = getattr(generator, "live", dict)()
                for key, gauge in (("running", self.running), ("waiting", self.waiting),
                                   ("kv_blocks_used", self.kv_blocks)):
                    if key in live:
                        gauge.set(live[key], tags=self.tags)

        threading.Thread(target=watch, name="raybench-generation-meter", daemon=True).start()

    def shard_later(self, result) -> None:
        """`shard`, on a thread of this meter's: for a LoadGen batch, whose result LoadGen is waiting
        for. Seven metric calls take 0.1 to 0.2 ms in a Ray actor; here they run while the result
        travels back, not before it leaves."""
        if not self.enabled:
            return
        if self._later is None:
            self._later = queue.SimpleQueue()
            threading.Thread(target=self._record_later, name="raybench-meter", daemon=True).start()
        self._later.put(result)

    def _record_later(self) -> None:
        while True:
            self.shard(self._later.get())

    def shard(self, result) -> None:
        """After a finished shard: its items and batch latencies, its rates, accuracy so far, memory.

        Recorded per shard, not per batch: the same histogram, a shard (seconds) later, and no metric
        calls inside the measured loop.
        """
        if not self.enabled or result.error is not None:
            return
        tags = {**self.tags, "pass": result.pass_name}
        for seconds in result.batch_core_seconds:
            self.latency.observe(seconds, tags=tags)
        self.items.inc(result.items, tags=tags)
        scored, correct = self._totals.setdefault(result.pass_name, [0, 0])
        scored, correct = scored + result.scored, correct + result.correct
        self._totals[result.pass_name] = [scored, correct]
        self.shards.inc(1, tags=tags)
        if result.core_seconds > 0:
            self.core_rate.set(result.items / result.core_seconds, tags=tags)
        if result.wall_seconds > 0:
            self.whole_rate.set(result.items / result.wall_seconds, tags=tags)
        if scored:
            self.accuracy.set(correct / scored, tags=tags)
        if result.peak_mem_bytes is not None:
            self.memory.set(result.peak_mem_bytes, tags=tags)
