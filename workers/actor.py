"""BenchWorker: one per device; builds its model and engine once, then runs the shards it is given.

A plain class: `orchestrator.driver` wraps it with `ray.remote(...)`, and tests (or a GPU box
without Ray) call it in-process. Setup is lazy and idempotent because Ray re-runs `__init__` when it
restarts a dead actor: the next `run_shard` rebuilds what the restart lost. Errors come back as
values (`error` fields), so the driver alone decides to retry or fail.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch

from workers import versions
from workers.contract import BuildInfo, ShardResult, ShardTask, WorkerError, WorkerInfo
from workers.device import (
    DTYPES, MemoryProbe, assigned_gpus, check_precision, choose_device, node_identity, peak_flops,
)
from workers.engines import BuildContext, Engine, engine_class
from workers.engines.torch_eager import TorchEager
from workers.errors import UserError, one_line
from workers.flops import FlopsModel, flops_model, flops_model_from_config
from workers.live_metrics import WorkerMeter
from workers.models import load_config, load_model, load_tokenizer, max_positions
from workers.passes import run_pass, warm_up
from workers.specs import WorkerConfig
from workers.tasks import Task, task_class
from workers.timing import CoreTimer

DEFAULT_ENGINE_CACHE = Path("~/.cache/raybench/engines")


def classify(exc: BaseException, bs: int) -> WorkerError:
    """Turn an exception into the value the driver's retry policy reads."""
    if isinstance(exc, UserError):
        return WorkerError("user", one_line(exc), getattr(exc, "detail", ""))
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return WorkerError(
            "oom", f"out of device memory at bs={bs} ({one_line(exc)[:160]}); try a smaller bs or seq_len"
        )
    return WorkerError("crash", one_line(exc))


class BenchWorker:
    def __init__(self, config: WorkerConfig, worker_id: int = 0, run_id: str = "") -> None:
        self.config = config
        self.worker_id = worker_id
        self.run_id = run_id
        self._info: WorkerInfo | None = None
        self._warm: set[str] = set()

    # ------------------------------------------------------------------ setup
    def setup(self) -> WorkerInfo:
        """Load tokenizer, data, model and engines (once). Returns where this worker runs."""
        if self._info is not None:
            return self._info
        node_id, hostname = node_identity()
        choice = choose_device()
        self.meter = WorkerMeter(self.run_id, self.worker_id)
        info = WorkerInfo(
            worker_id=self.worker_id, node_id=node_id, hostname=hostname, pid=os.getpid(),
            device=f"{choice.device}{assigned_gpus()}", device_name=choice.name, device_count_visible=choice.visible_count,
            num_examples=0, dataset_fingerprint="", load_seconds=0.0, data_seconds=0.0, build=None,
            precision_effective=self.config.precision, peak_flops=None, mem_total_bytes=None,
            versions=versions.collect(),
        )
        try:
            self._build(choice.device, info)
        except Exception as exc:  # noqa: BLE001 - reported to the driver as a value
            info.error = classify(exc, self.config.bs)
            self.close()
            return info
        self._info = info
        return info

    def _build(self, device: torch.device, info: WorkerInfo) -> None:
        cfg = self.config
        self.device = device
        self.timer = CoreTimer(device)
        self.memory = MemoryProbe(device)
        info.mem_total_bytes = self.memory.total_bytes()
        precision = check_precision(device, cfg.precision, cfg.precision_fallback)
        val_precision = check_precision(device, cfg.val_dtype_name, cfg.precision_fallback)
        info.precision_effective = precision
        info.peak_flops = peak_flops(info.device_name, precision)

        t0 = time.perf_counter()
        self.model_config = load_config(cfg.model)
        tokenizer = load_tokenizer(cfg.model)
        limit = max_positions(self.model_config)
        if limit is not None and cfg.seq_len > limit:
            raise UserError(f"seq_len: {cfg.seq_len} is above the model's maximum of {limit} positions")
        info.load_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        self.task: Task = task_class(cfg.task.name)(cfg.task, cfg.data, tokenizer, self.model_config, cfg.seq_len, cfg.seed)
        info.item_unit = self.task.item_unit
        info.num_examples = self.task.num_examples()
        info.dataset_fingerprint = self.task.fingerprint()
        info.data_seconds = time.perf_counter() - t0

        self._model: torch.nn.Module | None = None
        self._load_seconds = 0.0
        self.engines: dict[str, Engine] = {}
        if "val" in cfg.passes:
            self.engines["val"] = TorchEager()
            self.engines["val"].build(self._context(val_precision))
        if "infer" in cfg.passes:
            engine = engine_class(cfg.engine.name)(cfg.engine)
            self.engines["infer"] = engine
            info.build = engine.build(self._context(precision))
        info.load_seconds += self._load_seconds
        self.flops: FlopsModel = (
            flops_model(self._model, self.model_config, self._causal)
            if self._model is not None
            else flops_model_from_config(self.model_config, self._causal)
        )
        self.memory.sample()

    @property
    def _causal(self) -> bool:
        return self.task.model_kind == "causal_lm"

    def _load_model(self) -> torch.nn.Module:
        if self._model is None:
            t0 = time.perf_counter()
            cfg = self.config
            dtype = DTYPES[check_precision(self.device, cfg.val_dtype_name, cfg.precision_fallback)]
            self._model = load_model(cfg.model, self.model_config, self.task.model_kind, dtype, self.device, cfg.seed)
            self._load_seconds += time.perf_counter() - t0
        return self._model

    def _model_files_hash(self) -> str:
        """Identity of the weights for engine cache keys: file digests, or the random config + seed."""
        spec = self.config.model
        if spec.random is not None:
            return hashlib.sha256(repr((spec.random, self.config.seed)).encode()).hexdigest()[:16]
        return versions.files_digest(spec.source, spec.gguf_file)

    def _context(self, precision: str) -> BuildContext:
        cfg = self.config
        return BuildContext(
            model=self._load_model, model_files_hash=self._model_files_hash, config=self.model_config,
            signature=self.task.signature, sample_inputs=self.task.sample_inputs, bs=cfg.bs,
            seq_len=cfg.seq_len, precision=precision, device=self.device,
            cache_dir=Path(cfg.engine_cache or DEFAULT_ENGINE_CACHE).expanduser(), causal=self._causal,
        )

    # ------------------------------------------------------------------ shards
    def run_shard(self, shard: ShardTask) -> ShardResult:
        """One pass of one shard. Safe to repeat: it reads the dataset and writes nothing."""
        info = self.setup()
        result = ShardResult(
            shard_id=shard.shard_id, pass_name=shard.pass_name, attempt=shard.attempt, worker_id=self.worker_id,
            node_id=info.node_id, device_name=info.device_name, pid=info.pid, repeat=shard.repeat,
        )
        if info.error is not None:
            result.error = info.error
            return result
        engine = self.engines[shard.pass_name]
        try:
            engine.before_shard(shard)
            if shard.pass_name not in self._warm:
                result.warmup_batches = warm_up(engine, self.task, shard, self.config.bs, self.config.warmup, self.timer)
                self._warm.add(shard.pass_name)
            on_batch = lambda core_s, items: self.meter.batch(shard.pass_name, core_s, items)  # noqa: E731
            run_pass(engine, self.task, shard, self.config.bs, self.timer, self.memory,
                     self.flops.sequence_flops, result, on_batch)
            self.meter.shard(result)
            return result
        except Exception as exc:  # noqa: BLE001 - reported to the driver as a value
            # Partial counts of a failed attempt must never be merged: return identity and error only.
            return ShardResult(
                shard_id=shard.shard_id, pass_name=shard.pass_name, attempt=shard.attempt,
                worker_id=self.worker_id, node_id=info.node_id, device_name=info.device_name,
                pid=info.pid, error=classify(exc, self.config.bs), repeat=shard.repeat,
            )

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        for engine in getattr(self, "engines", {}).values():
            engine.close()
        self.engines = {}
        self._model = None
        self._info = None

    def __repr__(self) -> str:  # Ray shows this in the dashboard's actor view
        return f"BenchWorker(worker={self.worker_id})"


def run_in_process(config: WorkerConfig, shards: list[ShardTask]) -> tuple[WorkerInfo, list[ShardResult]]:
    """Run shards on this process's device without Ray (how GPU figures are taken on a lone box)."""
    worker = BenchWorker(config)
    try:
        info = worker.setup()
        results = [worker.run_shard(s) for s in shards] if info.error is None else []
        return info, results
    finally:
        worker.close()
