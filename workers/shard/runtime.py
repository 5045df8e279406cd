"""What a worker builds on its device: model, its view of the prepared data, engines; one shard run.

Heavy on purpose (torch, transformers, engine libraries): only worker processes import this module.
`workers.actor.BenchWorker` owns one `WorkerRuntime` and is the error boundary around it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

from workers.contract import (
    DataHandle,
    SampleBatch,
    ShardResult,
    ShardTask,
    WorkerInfo,
    physical_device,
)
from workers.data.package_files import on_this_machine
from workers.engines import BuildContext, Engine, engine_class
from workers.engines.generation import Generated, generator_class
from workers.engines.torch_eager import TorchEager
from workers.errors import UserError
from workers.measure import versions
from workers.measure.bandwidth import bandwidth_lookup, measured_bandwidth
from workers.measure.device import DTYPES, MemoryProbe, check_precision, set_matmul_precision
from workers.measure.device_watch import DeviceWatch
from workers.measure.energy import EnergyCounter
from workers.measure.flops import FlopsModel, flops_model, flops_model_from_config
from workers.measure.matmul_peak import measured_peak
from workers.measure.peaks import peak_lookup
from workers.measure.timing import CoreTimer
from workers.models import load_config, load_model, max_positions
from workers.shard.live_metrics import WorkerMeter
from workers.shard.decode import Emit, decode_cost, reference_records, run_generation, warm_generation
from workers.shard.passes import SpanStart, begin_span, call, end_span, run_batches, run_examples, run_pass, warm_up
from workers.specs import WorkerConfig
from workers.tasks import Task, task_class

DEFAULT_ENGINE_CACHE = Path("~/.cache/raybench/engines")


class WorkerRuntime:
    def __init__(self, config: WorkerConfig, device: torch.device, info: WorkerInfo, meter: WorkerMeter,
                 data: DataHandle) -> None:
        """Build everything, filling `info` (load, data and build times) as it goes."""
        self.config = on_this_machine(config)
        self.device = device
        self.meter = meter
        self.timer = CoreTimer(device)
        self.memory = MemoryProbe(device)
        self.energy = EnergyCounter.for_device(device, physical_device(info.node_id, info.device_uuid, info.device))
        self.engines: dict[str, Engine] = {}
        self.worker_id = info.worker_id
        self._model: torch.nn.Module | None = None
        self._load_seconds = 0.0
        self._warm: set[str] = set()
        self._warm_lock = threading.Lock()
        self._unreported_warmups = 0  # generate: warm-up calls run at setup, not yet in a result
        self._span: tuple[float, SpanStart] | None = None  # a LoadGen test's watched span, while it runs
        self._build_thread = threading.get_ident()  # the engines are built in this constructor, on this thread
        info.mem_total_bytes = self.memory.total_bytes()
        precision = check_precision(device, config.precision, config.precision_fallback)
        self.val_precision = check_precision(device, config.val_dtype_name, config.precision_fallback)
        info.precision_effective = precision
        self.precisions = {"val": self.val_precision, "infer": precision}
        peak = peak_lookup(info.device_name, precision)
        info.peak_flops, info.peak_flops_label, info.peak_flops_reason = peak.flops, peak.label, peak.reason
        self._load_config(info)
        if self._engines_load_the_model():
            self._load_model()  # before waiting for the data: under Ray its preparation runs meanwhile
        self._load_task(info, data)
        self._build_engines(info, precision)
        self._measure_peak(info, precision)
        self.memory.sample()
        self.device_watch = DeviceWatch.for_device(device)  # None on a CPU or without NVML

    def _load_config(self, info: WorkerInfo) -> None:
        """The model's config: what the model, the engines and the FLOPs are made from."""
        cfg = self.config
        t0 = time.perf_counter()
        self.model_config = load_config(cfg.model)
        limit = max_positions(self.model_config)
        if limit is not None and cfg.seq_len > limit:
            raise UserError(f"seq_len: {cfg.seq_len} is above the model's maximum of {limit} positions")
        info.load_seconds = time.perf_counter() - t0

    def _engines_load_the_model(self) -> bool:
        """Whether an engine of this worker will load the torch model whatever happens: the val pass
        (eager), or an infer engine that runs it (eager, torch.compile); not one that may come from
        its cache without it (ONNX Runtime, TensorRT) or runs none (synthetic). A generator loads
        what it needs when it is built (vLLM loads its own weights): never ahead here."""
        if getattr(task_class(self.config.task), "generates", False):
            return False
        return "val" in self.config.passes or (
            "infer" in self.config.passes and engine_class(self.config.engine).always_loads_model)

    def _load_task(self, info: WorkerInfo, data: DataHandle) -> None:
        """The task as a view of the prepared table (no tokenizer needed: the data was prepared once
        for the whole run; `data_seconds` is the time to map it, or to wait for it to be ready)."""
        cfg = self.config
        t0 = time.perf_counter()
        self.task: Task = task_class(cfg.task)(data.table())
        info.item_unit = self.task.item_unit
        info.num_examples = self.task.num_examples()
        info.dataset_fingerprint = self.task.fingerprint()
        info.data_seconds = time.perf_counter() - t0

    def _build_engines(self, info: WorkerInfo, precision: str) -> None:
        cfg = self.config
        if self.generates:  # the generate task: one pass, infer, through a decode engine (a Generator)
            set_matmul_precision(precision)
            generator = generator_class(cfg.engine)(cfg.engine)
            self.engines["infer"] = generator
            ctx = self.build_context(precision)
            ctx.seq_len = self.task.max_context()  # what a KV cache must hold for any request
            info.build = generator.build(ctx)
            info.load_seconds += self._load_seconds
            self.flops = self._flops_model()
            self.decode_cost = decode_cost(self._model, self.model_config, precision, generator.runs_model, self.flops)
            # warmed here, in setup: an Offline request arrives at its pass's start, and a warm-up inside
            # the pass would be waited for by the first shard's requests (their TTFT)
            self._unreported_warmups = warm_generation(generator, self.task, cfg.bs, cfg.warmup)
            self._warm.add("infer")
            return
        if "val" in cfg.passes:
            set_matmul_precision(self.val_precision)
            self.engines["val"] = TorchEager()
            self.engines["val"].build(self.build_context(self.val_precision))
        if "infer" in cfg.passes:
            set_matmul_precision(precision)  # torch.compile picks its kernels by these switches
            engine = engine_class(cfg.engine)(cfg.engine)
            self.engines["infer"] = engine
            info.build = engine.build(self.build_context(precision))
        info.load_seconds += self._load_seconds
        self.flops = self._flops_model()

    def _measure_peak(self, info: WorkerInfo, precision: str) -> None:
        """The device's measured matmul peak at the infer precision (cached per device and software),
        for MFU_measured; not measured where there is no MFU to compute (no infer pass, or an engine
        that runs no model) or the job says so (`measure_peak: false`)."""
        infer = self.engines.get("infer")
        if self.generates:
            sheet = bandwidth_lookup(info.device_name, info.mem_total_bytes)
            info.mem_bandwidth, info.mem_bandwidth_label, info.mem_bandwidth_reason = (sheet.bytes_per_s, sheet.label,
                                                                                       sheet.reason)
        if infer is None or not infer.runs_model:
            info.peak_flops_measured_reason = ("no infer pass" if infer is None
                                               else f"engine {infer.name} runs no model: no FLOPs to compare")
            info.mem_bandwidth_measured_reason = info.peak_flops_measured_reason.replace("FLOPs", "bytes")
            return
        if not self.config.measure_peak:
            info.peak_flops_measured_reason = "not measured (measure_peak: false)"
            info.mem_bandwidth_measured_reason = info.peak_flops_measured_reason
            return
        t0 = time.perf_counter()
        peak = measured_peak(self.device, precision, self.cache_dir, info.versions)
        info.peak_flops_measured, info.peak_flops_measured_label = peak.flops, peak.label
        info.peak_flops_measured_reason = peak.reason
        info.peak_seconds = 0.0 if peak.cache_hit else time.perf_counter() - t0
        if self.generates:  # MBU_measured's denominator, beside MFU_measured's
            bandwidth = measured_bandwidth(self.device, self.cache_dir, info.versions)
            info.mem_bandwidth_measured, info.mem_bandwidth_measured_label = bandwidth.bytes_per_s, bandwidth.label

    @property
    def cache_dir(self) -> Path:
        return Path(self.config.engine_cache or DEFAULT_ENGINE_CACHE).expanduser()

    def _flops_model(self) -> FlopsModel:
        """FLOPs from the loaded model; from the config alone when an engine came from the cache
        without it; none at all for engines that do not run the model (the synthetic one)."""
        if not all(engine.runs_model for engine in self.engines.values()):
            return FlopsModel(0, 0, 0, self.causal)
        if self._model is not None:
            return flops_model(self._model, self.model_config, self.causal)
        return flops_model_from_config(self.model_config, self.causal)

    @property
    def causal(self) -> bool:
        return self.task.model_kind == "causal_lm"

    @property
    def generates(self) -> bool:
        return getattr(self.task, "generates", False)

    def _load_model(self) -> torch.nn.Module:
        """The torch model at the val precision, loaded on first use (the synthetic engine never asks)."""
        if self._model is None:
            t0 = time.perf_counter()
            cfg = self.config
            dtype = DTYPES[self.val_precision]
            loader = load_model
            if cfg.parallel.tp > 1:  # one rank of a tensor-parallel group: this rank's slice only
                from workers.parallel.process_group import load_sharded_model as loader
            kind = task_class(cfg.task).model_kind  # known before the data is mapped
            self._model = loader(cfg.model, self.model_config, kind, dtype, self.device, cfg.seed)
            self._load_seconds += time.perf_counter() - t0
        return self._model

    def _model_files_hash(self) -> str:
        """Identity of the weights for engine cache keys: file digests, or the random config + seed."""
        spec = self.config.model
        if spec.random is not None:
            digest = hashlib.sha256(repr((spec.random, self.config.seed)).encode()).hexdigest()[:16]
        else:  # the revision's own files (a hub id's snapshot for that commit), and the commit itself
            digest = versions.files_digest(spec.source, spec.gguf_file, revision=spec.revision)
        if self.config.parallel.tp > 1:  # a rank's artifacts are built from its slice of the weights
            from workers.parallel.process_group import rank_identity

            digest += "-" + rank_identity()
        return digest

    def build_context(self, precision: str) -> BuildContext:
        """What an engine at `precision` is built from (public: tests build engines from it too)."""
        cfg = self.config
        return BuildContext(
            model=self._load_model, model_files_hash=self._model_files_hash, config=self.model_config,
            signature=self.task.signature, sample_inputs=self.task.sample_inputs, bs=cfg.bs,
            seq_len=cfg.seq_len, precision=precision, device=self.device,
            cache_dir=Path(cfg.engine_cache or DEFAULT_ENGINE_CACHE).expanduser(), causal=self.causal,
            opt_seq_len=min(cfg.seq_len, self.task.median_length()),
            worker_id=self.worker_id, variable_length=type(cfg.task).variable_length, model_spec=cfg.model,
        )

    def run(self, shard: ShardTask, result: ShardResult) -> ShardResult:
        """Warm up once per pass, then measure the shard into `result`."""
        engine = self.engines[shard.pass_name]
        set_matmul_precision(self.precisions[shard.pass_name])  # the switches are process-wide: each pass sets its own
        if shard.check:  # an invariance check: records only, nothing measured or counted
            run = reference_records if self.generates else run_examples
            result.examples, result.records = len(shard.examples), run(engine, self.task, shard.examples)
            return result
        if self.generates:
            return self._generate(shard, result)
        engine.before_shard(shard)
        if shard.pass_name not in self._warm:
            t0 = time.perf_counter()
            result.warmup_batches = warm_up(engine, self.task, shard, self.config.bs, self.config.warmup, self.timer)
            result.warmup_seconds = time.perf_counter() - t0
            self._warm.add(shard.pass_name)
        run_pass(engine, self.task, shard, self.config.bs, self.timer, self.memory, self.flops.sequence_flops, result,
                 self.energy, self.device_watch)
        self.meter.shard(result)
        return result

    def _generate(self, shard: ShardTask, result: ShardResult) -> ShardResult:
        """A shard of the generate task (its engine warmed at setup): its requests through the decode loop."""
        generator = self.engines[shard.pass_name]
        getattr(generator, "before_shard", lambda _: None)(shard)
        result.warmup_batches, self._unreported_warmups = self._unreported_warmups, 0  # run at setup, told once
        waves = self.task.waves(shard.start, shard.stop, self.config.bs, generator.continuous)
        self.meter.watch_generation(generator)
        run_generation(generator, waves, self.decode_cost, self.task.record, self.device, self.memory, result,
                       shard.arrival_ts, energy=self.energy, device_watch=self.device_watch, meter=self.meter)
        self.meter.shard(result)
        return result

    def warm(self, pass_name: str) -> int:
        """Warm the pass's engine once (the first `warmup` batches of the data, then one batch of
        every smaller size), before LoadGen's first query, so no query pays for it. Returns the
        batches run (0 when already warm)."""
        self._require_build_thread(pass_name)
        with self._warm_lock:  # a worker with several places (slots) is warmed over each at once
            return self._warm_once(pass_name)

    def _warm_once(self, pass_name: str) -> int:
        if pass_name in self._warm:
            told, self._unreported_warmups = self._unreported_warmups, 0  # generate: warmed at setup
            return told
        size = min(self.task.num_examples(), max(1, self.config.warmup) * self.config.bs)
        done = warm_up(self.engines[pass_name], self.task, ShardTask(0, 0, size, pass_name), self.config.bs,
                       self.config.warmup, self.timer)
        if done and self.engines[pass_name].runs_model:  # the synthetic engine only waits: nothing per size
            done += self._warm_every_size(pass_name)
        self._warm.add(pass_name)
        return done

    def _warm_every_size(self, pass_name: str) -> int:
        """One untimed batch of each size 1..bs-1 (the full size is warm already where it matters: an
        engine that builds per shape warms up on full batches, `Engine.warmup_rows`). LoadGen's bridge
        hands a worker whatever is waiting, 1 to bs rows, and an engine that builds something per
        batch size would build it inside a timed query: torch.compile's CUDA graphs
        (reduce-overhead, max-autotune) record one per size, a static-shape compile (`dynamic:
        false`) compiles one, ONNX Runtime grows its arena."""
        engine, rows = self.engines[pass_name], min(self.config.bs, self.task.num_examples())
        for size in range(1, rows):
            batch = self.task.batch_of(list(range(size)))
            call(engine, engine.to_device(batch.inputs), batch)
        self.timer.sync()
        return max(0, rows - 1)

    def _require_build_thread(self, pass_name: str) -> None:
        """An engine bound to its build thread (torch.compile's CUDA graphs on a torch without the
        thread fix) must not run on another one: LoadGen's direct lane and the in-process workers'
        executors serve batches on threads of their own, where it would fail with a bare
        AssertionError. One line naming the ways out instead."""
        engine = self.engines[pass_name]
        if engine.thread_bound and threading.get_ident() != self._build_thread:
            options = self.config.engine
            raise UserError(f"engine: torch.compile mode {getattr(options, 'mode', '?')} keeps its CUDA graphs per "
                            f"thread and torch {torch.__version__} cannot run them on another thread "
                            "(pytorch#123177), as LoadGen's direct lane does: set load.hand_over: actor_call, or "
                            "mode max-autotune-no-cudagraphs, or use a torch with the fix")

    def run_samples(self, batch: SampleBatch, result: ShardResult, emit: Emit | None = None) -> ShardResult:
        """The batch of LoadGen samples through the same loop as a shard (a restarted worker warms up
        first). The device watch and the energy counter span the whole test (`begin_watch`), not each
        batch: no NVML call on a query's path. Generate: the samples' requests through the decode
        loop, each first token and each end told through `emit` as they happen."""
        self._require_build_thread(batch.pass_name)
        result.warmup_batches = self.warm(batch.pass_name)
        engine = self.engines[batch.pass_name]
        getattr(engine, "before_shard", lambda _: None)(batch.as_shard())
        if self.generates:  # request ids are rows of the batch (LoadGen may send one sample twice)
            requests = [replace(self.task.request(i), request_id=row) for row, i in enumerate(batch.indices)]

            def record(made: Generated) -> dict:
                return self.task.record(replace(made, request_id=batch.indices[made.request_id]))

            self.meter.watch_generation(engine)
            run_generation(engine, [requests], self.decode_cost, record, self.device, self.memory, result, emit=emit,
                           meter=self.meter)
            result.energy_note = "read over the LoadGen test (the run's watched spans), not per batch"
            self.meter.shard_later(result)
            return result
        run_batches(self.engines[batch.pass_name], self.task, [self.task.batch_of(batch.indices)], self.timer,
                    self.memory, self.flops.sequence_flops, result, responses=True)
        result.energy_note = "read over the LoadGen test (the run's watched spans), not per batch"
        self.meter.shard_later(result)
        return result

    def begin_watch(self) -> None:
        """A LoadGen test starts: read the energy counter and start the device watch (the span its
        batches run in; Offline reads both around each pass instead)."""
        self._span = (time.time(), begin_span(self.energy, self.device_watch))

    def end_watch(self, result: ShardResult) -> ShardResult:
        """The test's span into `result`: its energy and what the watch saw. A worker restarted during
        the test never began one: blank, with the reason."""
        if self._span is None:
            result.energy_note = "this worker was restarted during the test: its span was not watched"
            return result
        (result.start_ts, start), self._span = self._span, None
        result.end_ts = time.time()
        return end_span(start, self.energy, self.device_watch, result)

    def close(self) -> None:
        self._span = None
        for engine in self.engines.values():
            engine.close()
        if self.device_watch is not None:
            self.device_watch.close()
            self.device_watch = None
        self.engines = {}
        self._model = None
