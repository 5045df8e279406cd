"""BenchWorker: one per device; builds its model and engine once, then runs the shards it is given.

A plain class: `orchestrator.cluster.pool` wraps it with `ray.remote(...)`, and tests (or a GPU box
without Ray) call it in-process. Setup is lazy and idempotent because Ray re-runs `__init__` when it
restarts a dead actor: the next `run_shard` rebuilds what the restart lost. Errors come back as
values (`error` fields), so the driver alone decides to retry or fail.

This module stays light (no torch at import): the driver imports it to hand the class to Ray, and
torch would add a second to every `bench submit`. The heavy part is `workers.shard.runtime`, imported in
the worker process when it sets up.
"""

from __future__ import annotations

import os
from typing import Any

from workers.contract import (
    DataHandle,
    DataInfo,
    SampleBatch,
    ShardResult,
    ShardTask,
    WorkerError,
    WorkerInfo,
)
from workers.errors import UserError, first_line
from workers.measure import versions
from workers.specs import WorkerConfig


def classify(exc: BaseException, bs: int) -> WorkerError:
    """Turn an exception into the value the driver's retry policy reads."""
    if isinstance(exc, UserError):
        return WorkerError("user", first_line(exc), getattr(exc, "detail", ""))
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return WorkerError(
            "oom", f"out of device memory at bs={bs} ({first_line(exc)[:160]}); try a smaller bs or seq_len"
        )
    return WorkerError("crash", first_line(exc))


class BenchWorker:
    """`data`, passed with every call, is the run's prepared dataset (orchestrator/cluster/data.py).

    It travels with the calls, not in the constructor: Ray cannot always restart an actor whose
    constructor arguments live in the object store (ray-project/ray#53727), and a restarted worker
    gets it again with its next shard. Without it (a worker used on its own, in tests) the worker
    prepares the data itself at setup, through the same function and cache.
    """

    def __init__(self, config: WorkerConfig, worker_id: int = 0, run_id: str = "") -> None:
        self.config = config
        self.worker_id = worker_id
        self.run_id = run_id
        self._info: WorkerInfo | None = None
        self._runtime = None
        self._data: DataHandle | None = None  # the last handle a call brought (kept for a rebuild)
        self._lane = None  # the driver's direct connection for LoadGen batches (open_lane)

    def setup(self, data: DataHandle | None = None) -> WorkerInfo:
        """Map the prepared data, load the model, build the engines (once). Returns where this worker runs."""
        if self._info is not None:
            return self._info
        from workers.measure.device import assigned_gpus, node_identity, require_assigned_gpu
        from workers.measure.nvml import gpu_uuid

        node_id, hostname = node_identity()
        choice = self._choose_device()
        info = WorkerInfo(
            worker_id=self.worker_id, node_id=node_id, hostname=hostname, pid=os.getpid(),
            device=f"{choice.device}{assigned_gpus()}", device_name=choice.name,
            num_examples=0, dataset_fingerprint="", load_seconds=0.0,
            data_seconds=0.0, build=None, precision_effective=self.config.precision, peak_flops=None,
            mem_total_bytes=None, versions=versions.collect(), device_uuid=gpu_uuid(choice.device),
        )
        self._data = data if data is not None else self._data
        try:
            require_assigned_gpu(choice.device, self._assigned_gpus())  # exactly the GPUs Ray assigned, never the CPU
            self._runtime = self._build_runtime(choice.device, info)
        except Exception as exc:  # noqa: BLE001 - reported to the driver as a value
            info.error = classify(exc, self.config.bs)
            self._close_after_failure()
            return info
        self._info = info
        return info

    def _choose_device(self):
        from workers.measure.device import choose_device

        return choose_device()

    def _assigned_gpus(self) -> list[str] | None:
        """The GPU ids this process must see as cuda:0, cuda:1, ...; None: Ray's for this worker."""
        return None

    def _build_runtime(self, device, info: WorkerInfo):
        """The heavy half (model, data view, engines); a tensor-parallel rank joins its group first."""
        from workers.shard.live_metrics import WorkerMeter
        from workers.shard.runtime import WorkerRuntime

        if self._data is None:
            from workers.data.dataprep import prepare_dataset

            self._data = DataHandle(prepare_dataset(self.config)[1])
        return WorkerRuntime(self.config, device, info, WorkerMeter(self.run_id, self.worker_id), self._data)

    def prepare_data(self) -> tuple[DataInfo, Any]:
        """The run's data, prepared once in this process for every worker (orchestrator/cluster/data.py
        asks the first worker for it when the data needs no tokenising: synthetic, or a cache hit).
        This process imports what the preparation needs anyway, and on a cluster configured like
        cluster.yaml it already has, so no new process has to start for it. Under Ray the table is
        a return value: the driver owns it and it lives in the object store, not in this actor."""
        from workers.data.dataprep import prepare_dataset

        return prepare_dataset(self.config)

    def run_shard(self, shard: ShardTask, data: DataHandle | None = None) -> ShardResult:
        """One pass of one shard. Safe to repeat: it reads the dataset and writes nothing."""
        return self._run(shard, self.setup(data))

    def _run(self, shard: ShardTask, info: WorkerInfo) -> ShardResult:
        identity = dict(shard_id=shard.shard_id, pass_name=shard.pass_name, attempt=shard.attempt,
                        worker_id=self.worker_id, node_id=info.node_id, device_name=info.device_name,
                        pid=info.pid, repeat=shard.repeat, start=shard.start, stop=shard.stop)
        if info.error is not None:
            return ShardResult(**identity, error=info.error)
        try:
            return self._measure(shard, ShardResult(**identity))
        except Exception as exc:  # noqa: BLE001 - reported to the driver as a value
            # Partial counts of a failed attempt must never be merged: identity and error only.
            return ShardResult(**identity, error=classify(exc, self.config.bs))

    def _measure(self, shard: ShardTask, result: ShardResult) -> ShardResult:
        return self._runtime.run(shard, result)

    def warm_up(self, pass_name: str, data: DataHandle | None = None) -> int:
        """Set up and warm the pass's engine before a LoadGen test starts issuing queries."""
        info = self.setup(data)
        if info.error is not None:
            return 0
        return self._runtime.warm(pass_name)

    def run_samples(self, batch: SampleBatch, data: DataHandle | None = None, emit=None) -> ShardResult:
        """One batch of LoadGen samples (orchestrator/modes/loadgen/), as a result with the batch's id as shard id.
        Errors come back as values, as for shards; the driver re-issues the samples or fails the run.
        `emit` (the generate task): called with each request's first token and its end as they happen
        (over the lane: an event ahead of the reply; workers/shard/decode.py says what they hold)."""
        info = self.setup(data)
        identity = dict(shard_id=batch.batch_id, pass_name=batch.pass_name, attempt=batch.attempt,
                        worker_id=self.worker_id, node_id=info.node_id, device_name=info.device_name, pid=info.pid)
        if info.error is not None:
            return ShardResult(**identity, error=info.error)
        try:
            return self._runtime.run_samples(batch, ShardResult(**identity), emit)
        except Exception as exc:  # noqa: BLE001 - reported to the driver as a value
            return ShardResult(**identity, error=classify(exc, self.config.bs))

    def begin_watch(self, pass_name: str, data: DataHandle | None = None) -> None:
        """A LoadGen test starts: watch the device and read its energy counter until `end_watch`."""
        if self.setup(data).error is None:
            self._runtime.begin_watch()

    def end_watch(self, pass_name: str) -> ShardResult:
        """What the device watch and the energy counter saw since `begin_watch` (errors as values)."""
        info = self._info or self.setup()
        identity = dict(shard_id=-1, pass_name=pass_name, attempt=1, worker_id=self.worker_id, node_id=info.node_id,
                        device_name=info.device_name, pid=info.pid)
        if info.error is not None:
            return ShardResult(**identity, error=info.error)
        try:
            return self._runtime.end_watch(ShardResult(**identity))
        except Exception as exc:  # noqa: BLE001 - reported to the driver as a value
            return ShardResult(**identity, error=classify(exc, self.config.bs))

    def open_lane(self, authkey: bytes) -> tuple[str, int]:
        """Listen for the driver's direct connection (workers/lane_server.py), over which it then warms
        this worker and hands it LoadGen's batches without a Ray call each; the address to connect to."""
        import ray

        from workers.lane_server import LaneServer
        from workers.lane_transport import tls_from_env

        self._lane = LaneServer(ray.util.get_node_ip_address(), authkey,
                                {"warm_up": self.warm_up, "run_samples": self.run_samples},
                                streaming=frozenset({"run_samples"}),
                                tls=tls_from_env(os.environ))  # Ray's TLS, as this node's Ray reads it
        return self._lane.address

    def run_samples_streaming(self, batch: SampleBatch, data: DataHandle | None = None):
        """`run_samples` as a Ray streaming generator (`num_returns="streaming"`, the actor_call
        hand-over): each event it emits, then its result, as the generator's items. The batch runs on
        a thread of its own, so each event leaves the actor the moment it exists."""
        import queue
        import threading

        events: queue.SimpleQueue = queue.SimpleQueue()
        end = object()

        def run() -> None:
            try:
                events.put(("result", self.run_samples(batch, data, emit=lambda e: events.put(("event", e)))))
            finally:
                events.put(end)

        threading.Thread(target=run, name="raybench-streaming-batch", daemon=True).start()
        while (item := events.get()) is not end:
            yield item

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
        self._runtime = None
        self._info = None

    def _close_after_failure(self) -> None:
        """What a failed setup leaves behind, released (a tensor-parallel rank also aborts its group)."""
        self.close()

    def __repr__(self) -> str:  # Ray shows this in the dashboard's actor view
        return f"BenchWorker(worker={self.worker_id})"
