"""Every live metric's name, its description and its buckets: the contract with `grafana/raybench.json`.

One registry for both sides: the workers' series (workers/shard/live_metrics.py) and the driver's
(orchestrator/cluster/live.py) take their names from here, and a test checks that the dashboard
queries only these. Ray exports them on every node's metrics endpoint with a `ray_` prefix (so
`raybench_items_total` is scraped as `ray_raybench_items_total`). `ray_metrics` is Ray's metrics
module, or None outside Ray (a worker run in-process): then every meter is a no-op.
"""

from __future__ import annotations

from typing import Any

TAGS = ("run_id", "worker", "pass")
# Batch latency buckets from 0.5 ms to 60 s, roughly x2 apart.
LATENCY_BOUNDARIES = [0.0005 * 2**i for i in range(17)]

METRICS = {
    "raybench_items_total": "Items (sequences or tokens) finished, by run, worker and pass",
    "raybench_shards_done_total": "Shards finished, by run, worker and pass",
    "raybench_core_items_per_second": "Core throughput of the worker's last shard (items per second of model time)",
    "raybench_whole_items_per_second": "Whole throughput of the worker's last shard (items per wall second)",
    "raybench_batch_latency_seconds": "Core time of each measured batch",
    "raybench_accuracy": "Accuracy so far (correct / scored) of the worker in this pass",
    "raybench_device_memory_bytes": "Peak device memory of the worker (NVML per process on GPUs, RSS on CPUs)",
    "raybench_tokens_total": "Output tokens generated (task generate), by run and worker, counted as they are made",
    "raybench_requests_running": "Requests a worker's generator is decoding now (task generate)",
    "raybench_requests_waiting": "Requests queued inside a worker's continuous batching, not yet admitted (generate)",
    "raybench_kv_blocks_used": "KV-cache pages in use in a worker's continuous batching (generate)",
    "raybench_run_progress": "Fraction of the pass's shards finished in the run (driver)",
    "raybench_run_accuracy": "Accuracy so far of the whole run in this pass (driver)",
    "raybench_queries_issued_total": "LoadGen queries issued to the system under test, by run (driver)",
    "raybench_queries_completed_total": "LoadGen queries whose every sample completed, by run (driver)",
    "raybench_samples_waiting": "LoadGen samples waiting in the driver for an idle worker, by run (driver)",
    "raybench_worker_queue_depth": "LoadGen samples a worker holds, not yet completed, by run and worker (driver)",
    "raybench_query_latency_seconds": "LoadGen query latency from issue to its last sample's completion (driver clock)",
}


def ray_metrics() -> Any | None:
    try:
        import ray
        from ray.util import metrics
    except ImportError:
        return None
    return metrics if ray.is_initialized() else None
