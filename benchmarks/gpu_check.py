"""gpu_check: raybench's figures held against plain code on one GPU, in one command, without Ray.

    python benchmarks/gpu_check.py [--out DIR] [--tiny] [--cases bert,llama] [--mmlu DIR]

Cases on a GPU: a BERT-large-shaped masked LM (random weights from the config, fp16, bs 32,
seq 512) with engines torch and torch_compile, and a 7B-shaped Llama (Llama-2-7B's config, random
weights, fp16) on 5-shot MMLU prompts (52 questions of 4 subjects, bs 1) with engine torch. Each
runs through the in-process path of `bench submit --no-ray` (`run_all(..., in_process=True)`),
then, in this process, a plain loop over the same batches (model call, argmax, compare: _plain.py)
gives the reference: the table has bench/plain for core and whole throughput.

Checks, each PASS, FAIL or SKIPPED with the reason:
- timer: CUDA-event core time against the wall clock of the same calls (within 2 %);
- nvml: NVML initialises and finds the GPU torch uses by its UUID (workers/measure/nvml.py);
- memory: NVML's per-process figure against torch's reserved memory sampled at the same instants
  (each MemoryProbe sample; not torch's whole-run peak, which holds build and autotune transients
  released before NVML looked): NVML must be the larger by no more than the CUDA context and
  libraries' handles, 0 to 2 GiB;
- accuracy: infer/val gap within the job's acc_tolerance, and the plain loop's accuracy too;
- MFU: between 0 and 100 %, printed with the peak the table chose;
- measured peak: MFU_measured (against the device's measured matmul peak, workers/measure/matmul_peak.py)
  between 0 and 100 %, on the CPU too; where the datasheet knows the device, the measured peak is
  between 30 % and 105 % of its figure (above it, the timer or the FLOP count is wrong);
- device watch: NVML watched the GPU during the measured pass (lowest busy SM clock, throttle
  reasons, temperature, power, XIDs, ECC, other processes: workers/measure/device_watch.py); the figures
  are printed, and an incident among them is the row's verdict's business, not this check's;
- invariance: MMLU's examples rerun at bs 1 on one worker (`invariance_check`); on the CPU (fp32)
  no prediction may change; on a GPU the count is reported (fp16 kernels may differ by batch size);
- KV cache: no transformers Cache object built during the run (causal models);
- energy: the NVML counter gave a plausible figure (10 W < mean power < 2 kW).
Checks of the device itself, once per run (the "device" table):
- assigned GPU: cuda:i is the GPU the process was given (CUDA_VISIBLE_DEVICES, as Ray sets it):
  the device count and each UUID against NVML's (workers/measure/device.py `require_assigned_gpu`);
- ORT providers: a session asked for CUDA runs on it (`session.get_providers()`), where
  onnxruntime-gpu is installed (workers/engines/onnx_export.py `ort_session`); SKIPPED without it;
- steady vs burst peak: the measured fp16 matmul peak, the median of the later half of ~1 s of
  calls, against the fastest call (the old method's burst); the steady figure may not exceed the
  burst, and the ratio is printed (workers/measure/matmul_peak.py);
- watch on/off: the BERT torch case's infer pass run six times, alternately with the NVML device
  watch sampling beside it and without; core throughput and p99 batch latency must agree within
  2 % (workers/measure/device_watch.py says why its NVML calls run during the timed calls).
On a GPU a missing NVML handle, process memory figure or energy counter is a FAIL. SKIPPED only
for a cause detected and named: a container whose NVML process list holds other pids but not ours
(memory), a GPU older than Volta (no energy counter).
Without a GPU (or with --tiny) the same cases run on tiny shapes on the CPU (torch_compile with
the `eager` backend there, to stay fast); the GPU-only checks say SKIPPED and why. CI runs it so.

Writes results.json and results.md into $OUT when set, else --out (default
gpu_check_results/<UTC time>). Needs torch, transformers, pydantic, pyarrow, typer, rich and, on
GPUs, pynvml; never Ray. Last line: `gpu_check_failed: N`; the exit status is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from benchmarks._plain import plain_loop, plain_model, train_tokenizer  # noqa: E402

GIB = float(1 << 30)
ROOT = Path(__file__).resolve().parents[1]
TIMER_TOLERANCE = 0.02
CONTEXT_BYTES = 2 * GIB  # the most NVML may exceed torch's reserved peak by (CUDA context, library handles)
MEASURED_SHARE = (0.3, 1.05)  # measured matmul peak / datasheet peak: a fair share, never above the datasheet
BERT_LARGE = dict(model_type="bert", vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, max_position_embeddings=512)
LLAMA_7B = dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
TINY_BERT = dict(model_type="bert", vocab_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64)  # 4 ordinary tokens: accuracy is not ~0
TINY_LLAMA = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048, initializer_range=0.2)
SUBJECTS = ["abstract_algebra", "anatomy", "astronomy", "business_ethics"]


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | SKIPPED
    detail: str


@dataclass
class Recorded:
    """What the instruments saw while bench ran: (core s, wall s) per timer call, KV caches built."""

    timer_pairs: list[tuple[float, float]] = field(default_factory=list)
    caches_built: int = 0
    reserved_at_samples: list[int] = field(default_factory=list)  # torch's reserved bytes at each NVML sample


@contextlib.contextmanager
def instruments() -> Iterator[Recorded]:
    """Wraps CoreTimer.time (a wall clock around each call), transformers' Cache.__init__ (a count) and
    MemoryProbe.sample (torch's reserved memory at the instant NVML is read)."""
    from transformers import cache_utils

    from workers.measure import device, timing

    seen = Recorded()
    timer_time, cache_init, probe_sample = timing.CoreTimer.time, cache_utils.Cache.__init__, device.MemoryProbe.sample

    def timed(self, fn):
        t0 = time.perf_counter()
        out, seconds = timer_time(self, fn)
        seen.timer_pairs.append((seconds, time.perf_counter() - t0))
        return out, seconds

    def counted(self, *args, **kwargs):
        seen.caches_built += 1
        cache_init(self, *args, **kwargs)

    def sampled(self):
        peak = probe_sample(self)
        if self.device.type == "cuda":
            seen.reserved_at_samples.append(torch.cuda.memory_reserved(self.device))
        return peak

    timing.CoreTimer.time, cache_utils.Cache.__init__, device.MemoryProbe.sample = timed, counted, sampled
    try:
        yield seen
    finally:
        timing.CoreTimer.time, cache_utils.Cache.__init__, device.MemoryProbe.sample = timer_time, cache_init, \
            probe_sample


def cases(gpu: bool, names: list[str], mmlu: Path, work: Path) -> list[tuple[str, dict[str, Any]]]:
    """(name, raw job mapping) of every case asked for, at full size on a GPU, tiny on a CPU."""
    common = {"workers": 1, "passes": ["val", "infer"], "seed": 0, "engine_cache": str(work / "engines")}
    out = []
    if "bert" in names:
        shape = dict(bs=32, seq_len=512, precision="fp16", warmup=3) if gpu else dict(bs=4, seq_len=64, precision="fp32",
                                                                                     warmup=1)
        bert = dict(common, name="gpu-check-bert", task="masked_lm", model={"random": BERT_LARGE if gpu else TINY_BERT},
                    data={"synthetic": {"seed": 0, "size": 2048 if gpu else 32}}, **shape)
        compiled = {"name": "torch_compile"} if gpu else {"name": "torch_compile", "backend": "eager"}
        out += [("bert-large/torch" if gpu else "tiny-bert/torch", dict(bert, engine="torch")),
                ("bert-large/torch_compile" if gpu else "tiny-bert/torch_compile", dict(bert, engine=compiled))]
    if "llama" in names:
        subjects, limit = (SUBJECTS, 13) if gpu else (SUBJECTS[:2], 4)
        tokenizer = train_tokenizer(work / "tokenizer", mmlu, subjects, 32000 if gpu else 1024)
        from transformers import AutoTokenizer

        vocab = len(AutoTokenizer.from_pretrained(tokenizer))
        config = dict(LLAMA_7B, vocab_size=32000) if gpu else dict(TINY_LLAMA, vocab_size=vocab)
        llama = dict(common, name="gpu-check-llama", task={"name": "mmlu", "subjects": subjects, "limit": limit},
                     model={"random": config, "tokenizer": str(tokenizer)}, data=str(mmlu), engine="torch",
                     precision="fp16" if gpu else "fp32", bs=1 if gpu else 2, seq_len=4096 if gpu else 2048, warmup=2)
        out.append(("llama-7b/torch" if gpu else "tiny-llama/torch", llama))
    return out


def run_case(name: str, raw: dict[str, Any], work: Path, gpu: bool) -> tuple[dict[str, Any], list[Check]]:
    from orchestrator.driver import run_all
    from orchestrator.spec import validate
    from workers.measure.device import DTYPES
    from workers.models import load_config, load_tokenizer
    from workers.tasks import task_class

    spec = validate(raw, name)
    device = torch.device("cuda:0" if gpu else "cpu")
    release(device)
    with instruments() as seen:
        (run,) = run_all(spec, results_dir=work / "results", in_process=True)
    reserved_peak = torch.cuda.max_memory_reserved(device) if gpu else None
    release(device)
    row, info = run.row, run.infos[0]
    config = load_config(spec.model)
    cls = task_class(spec.task)
    task = cls(cls.prepare(spec.task, spec.data, load_tokenizer(spec.model), config, spec.seq_len, spec.seed))
    causal = task.model_kind == "causal_lm"
    model = plain_model(config, causal, DTYPES[row.precision_effective], device, spec.seed)
    if spec.engine.name == "torch_compile":
        model = torch.compile(model, backend=spec.engine.backend)
    plain = plain_loop(model, task, spec.bs, spec.warmup, device, causal)
    del model
    release(device)
    figures = {
        "case": name, "engine": spec.engine.name, "device": info.device_name, "precision": row.precision_effective,
        "bs": spec.bs, "seq_len": spec.seq_len, "item_unit": row.item_unit, "items": row.items_infer,
        "p_val_core": row.p_val_core, "p_infer_core": row.p_infer_core, "p_infer_whole": row.p_infer_whole,
        "plain_core": plain.core_items_per_s, "plain_whole": plain.whole_items_per_s,
        "core_ratio": row.p_infer_core / plain.core_items_per_s, "whole_ratio": row.p_infer_whole / plain.whole_items_per_s,
        "MFU": row.MFU, "peak": info.peak_flops_label or row.mfu_note, "mem_gib": row.mem, "mem_source": row.mem_source,
        "torch_reserved_peak_gib": reserved_peak / GIB if reserved_peak is not None else None,
        "energy_per_item_j": row.energy_per_item, "mean_power_w": row.mean_power, "acc": row.acc,
        "acc_infer": row.acc_infer, "acc_plain": plain.accuracy, "build_time": row.build_time, "e2e_time": row.e2e_time,
        "MFU_measured": row.MFU_measured, "peak_flops_measured": row.peak_flops_measured,
        "peak_measured": info.peak_flops_measured_label or row.mfu_measured_note,
        "sm_clock_mhz_min": row.sm_clock_mhz_min, "throttle_reasons": row.throttle_reasons,
        "temperature_c_max": row.temperature_c_max, "power_w_max": row.power_w_max, "xid_errors": row.xid_errors,
        "ecc_errors": row.ecc_errors, "foreign_processes": row.foreign_processes,
        "invariance_checked": row.invariance_checked, "invariance_flips": row.invariance_flips,
        "verdict": row.verdict, "verdict_reasons": row.verdict_reasons,
    }
    return figures, checks(row, info, spec, seen, plain, reserved_peak, gpu, causal)


def release(device: torch.device) -> None:
    """Free what earlier cases cached, so each case's memory figures are its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def checks(row, info, spec, seen: Recorded, plain, reserved_peak, gpu: bool, causal: bool) -> list[Check]:
    cpu_reason = "no GPU: runs on the CPU"
    at_samples = max(seen.reserved_at_samples) if seen.reserved_at_samples else reserved_peak
    return [timer_check(seen, gpu, cpu_reason), nvml_check(gpu, cpu_reason),
            memory_check(row, at_samples, gpu, cpu_reason), accuracy_check(row, spec, plain), mfu_check(row, info),
            cache_check(seen, causal), energy_check(row, gpu, cpu_reason), measured_peak_check(row, info),
            watch_check(row, gpu, cpu_reason), invariance_check(row, spec, gpu)]


CUDA0 = torch.device("cuda:0")


def nvml_check(gpu: bool, cpu_reason: str) -> Check:
    """NVML must find the GPU torch uses (by UUID, else full bus id): memory and energy depend on it."""
    if not gpu:
        return Check("nvml", "SKIPPED", f"{cpu_reason}: no NVML")
    from workers.measure.nvml import gpu_identity, nvml_lookup

    found = nvml_lookup(CUDA0)
    if found.handle is None:
        return Check("nvml", "FAIL", found.note)
    named = gpu_identity(CUDA0)
    return Check("nvml", "PASS", f"found {named.name} by UUID {named.uuid} (bus {named.bus_id})")


def timer_check(seen: Recorded, gpu: bool, cpu_reason: str) -> Check:
    if not gpu:
        return Check("timer", "SKIPPED", f"{cpu_reason}: core time is perf_counter around the call, the wall clock itself")
    model_calls = [(core, wall) for core, wall in seen.timer_pairs if wall > 1e-3]  # leaves out the ids' h2d copies
    core, wall = sum(c for c, _ in model_calls), sum(w for _, w in model_calls)
    if not model_calls:
        return Check("timer", "FAIL", "no timed call longer than 1 ms")
    off = abs(1 - core / wall)
    status = "PASS" if off <= TIMER_TOLERANCE else "FAIL"
    return Check("timer", status, f"CUDA events {core:.4f} s vs wall clock {wall:.4f} s over {len(model_calls)} calls: "
                                  f"{off:.2%} apart (limit {TIMER_TOLERANCE:.0%})")


def memory_check(row, reserved_peak, gpu: bool, cpu_reason: str) -> Check:
    if not gpu:
        return Check("memory", "SKIPPED", f"{cpu_reason}: mem is the process's peak RSS ({row.mem_source}), no NVML")
    if row.mem_source != "nvml-process":
        from workers.measure.nvml import nvml_lookup, process_memory

        found = nvml_lookup(CUDA0)
        why = process_memory(found.handle) if found.handle is not None else None
        if why is not None and why.container:  # the one cause that is not NVML failing us
            return Check("memory", "SKIPPED", f"{why.note}: mem came from {row.mem_source}")
        return Check("memory", "FAIL", f"no NVML process memory ({why.note if why else found.note}): mem came from "
                                       f"{row.mem_source}")
    extra = row.mem * GIB - reserved_peak
    status = "PASS" if 0 <= extra <= CONTEXT_BYTES else "FAIL"
    return Check("memory", status, f"NVML {row.mem:.2f} GiB = torch reserved {reserved_peak / GIB:.2f} GiB (the most "
                                   f"at NVML's sampling instants) + {extra / GIB:.2f} GiB (CUDA context and libraries' "
                                   f"own handles; limit 0 to {CONTEXT_BYTES / GIB:.0f} GiB)")


def accuracy_check(row, spec, plain) -> Check:
    tolerance = spec.acc_tolerance
    plain_gap = abs(plain.accuracy - row.acc_infer) if plain.accuracy is not None and row.acc_infer is not None else None
    ok = row.acc_gap is not None and row.acc_gap <= tolerance and plain_gap is not None and plain_gap <= tolerance
    return Check("accuracy", "PASS" if ok else "FAIL",
                 f"infer/val {row.acc} (gap {row.acc_gap}), plain loop {plain.accuracy:.4f} (gap to infer {plain_gap}); "
                 f"tolerance {tolerance} (random weights: these compare the paths, not a model)")


def mfu_check(row, info) -> Check:
    if row.MFU is None:
        return Check("MFU", "SKIPPED", f"no MFU: {row.mfu_note}")
    status = "PASS" if 0 < row.MFU < 1 else "FAIL"
    return Check("MFU", status, f"{row.MFU:.1%} with peak {info.peak_flops_label}")


def measured_peak_check(row, info) -> Check:
    if row.MFU_measured is None:
        return Check("measured peak", "FAIL", f"no MFU_measured: {row.mfu_measured_note}")
    ok = 0 < row.MFU_measured < 1
    detail = f"MFU_measured {row.MFU_measured:.2%} of {info.peak_flops_measured_label}"
    if info.peak_flops:
        share = row.peak_flops_measured / info.peak_flops
        ok = ok and MEASURED_SHARE[0] <= share <= MEASURED_SHARE[1]
        detail += (f"; the measured peak is {share:.0%} of the datasheet's {info.peak_flops / 1e12:g} TFLOP/s "
                   f"(limits {MEASURED_SHARE[0]:.0%} to {MEASURED_SHARE[1]:.0%})")
    return Check("measured peak", "PASS" if ok else "FAIL", detail)


def watch_check(row, gpu: bool, cpu_reason: str) -> Check:
    if not gpu:
        return Check("device watch", "SKIPPED", f"{cpu_reason}: no NVML to watch ({row.gpu_health_note})")
    if row.sm_clock_mhz_min is None and row.throttle_reasons is None:
        return Check("device watch", "FAIL", f"the GPU was not watched: {row.gpu_health_note}")
    seen = (f"lowest busy SM clock {row.sm_clock_mhz_min} MHz, reasons [{row.throttle_reasons}], up to "
            f"{row.temperature_c_max} C and {row.power_w_max} W, XIDs [{row.xid_errors}], ECC {row.ecc_errors}, "
            f"other processes {row.foreign_processes}")
    incidents = [r for r in row.verdict_reasons.split("; ") if "GPU" in r]
    return Check("device watch", "PASS", seen + (f"; row INVALID: {'; '.join(incidents)}" if incidents else "")
                 + (f" ({row.gpu_health_note})" if row.gpu_health_note else ""))


def invariance_check(row, spec, gpu: bool) -> Check:
    if not spec.invariance_examples(row.examples):
        return Check("invariance", "SKIPPED", f"{spec.task.name}: no invariance check (it is mmlu's)")
    if row.invariance_flips is None:
        return Check("invariance", "FAIL", f"not checked: {row.invariance_note}")
    detail = (f"{row.invariance_flips} of {row.invariance_checked} predictions changed at bs 1 "
              f"(measured at bs {spec.bs})")
    if gpu:  # fp16 kernels may differ by batch size: a count to report (the row's verdict judges it)
        return Check("invariance", "PASS", detail)
    return Check("invariance", "PASS" if row.invariance_flips == 0 else "FAIL", detail + "; fp32 on a CPU: none may")


def cache_check(seen: Recorded, causal: bool) -> Check:
    if not causal:
        return Check("kv cache", "SKIPPED", "masked LM: an encoder has no KV cache")
    status = "PASS" if seen.caches_built == 0 else "FAIL"
    return Check("kv cache", status, f"{seen.caches_built} transformers Cache objects built during the run")


def energy_check(row, gpu: bool, cpu_reason: str) -> Check:
    if row.energy_per_item is None and not gpu:
        return Check("energy", "SKIPPED", f"{cpu_reason}: {row.energy_note}")
    if row.energy_per_item is None:
        major, minor = torch.cuda.get_device_properties(CUDA0).major, torch.cuda.get_device_properties(CUDA0).minor
        if major < 7:  # NVML's total-energy counter exists from Volta (compute capability 7.0) on
            return Check("energy", "SKIPPED", f"a GPU older than Volta (sm_{major}{minor}) has no energy counter: "
                                              f"{row.energy_note}")
        return Check("energy", "FAIL", f"no energy figure on sm_{major}{minor}: {row.energy_note}")
    ok = row.energy_per_item > 0 and 10 < row.mean_power < 2000
    return Check("energy", "PASS" if ok else "FAIL",
                 f"{row.energy_per_item:.4g} J per {row.item_unit}, mean power {row.mean_power:.0f} W")


# ------------------------------------------------------------------ the device itself, once per run
WATCH_TOLERANCE = 0.02  # the watch's NVML sampling may move core throughput and p99 by at most this
WATCH_PASSES = 6  # alternately on and off


def assigned_gpu_check(gpu: bool) -> Check:
    """cuda:i must be the GPU this process was given: what `require_assigned_gpu` checks on a Ray
    worker, here with CUDA_VISIBLE_DEVICES's ids (every GPU when unset) standing for Ray's."""
    if not gpu:
        return Check("assigned GPU", "SKIPPED", "no GPU: nothing assigned")
    from workers.errors import UserError
    from workers.measure.device import require_assigned_gpu
    from workers.measure.nvml import assigned_uuids, gpu_identity

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [
        str(i) for i in range(torch.cuda.device_count())]
    try:
        require_assigned_gpu(CUDA0, ids)
    except UserError as exc:
        return Check("assigned GPU", "FAIL", str(exc))
    expected = assigned_uuids(ids)
    if expected is None:
        return Check("assigned GPU", "FAIL", f"NVML could not name the GPUs {ids} (by index or UUID): not compared")
    seen = [gpu_identity(torch.device(f"cuda:{i}")).uuid for i in range(len(ids))]
    return Check("assigned GPU", "PASS", f"{len(ids)} device(s) for ids {ids}; cuda:i is NVML's id i: {seen}")


def ort_providers_check(gpu: bool, work: Path) -> Check:
    """A session asked for CUDA runs on CUDA (onnxruntime-gpu's CUDA/cuDNN libraries loaded)."""
    if not gpu:
        return Check("ORT providers", "SKIPPED", "no GPU")
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        return Check("ORT providers", "SKIPPED", f"no {exc.name}: pip install 'raybench[onnx-gpu]'")
    from workers.engines.onnx_export import CPU, CUDA, ort_session
    from workers.errors import UserError

    if CUDA not in ort.get_available_providers():
        return Check("ORT providers", "SKIPPED", f"{getattr(ort, 'package_name', 'onnxruntime')} {ort.__version__} "
                                                 "has no CUDA provider (the CPU package)")
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "x"], ["y"])], "g", [x], [y])
    path = work / "matmul.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), path)
    try:
        session = ort_session(path, [(CUDA, {"device_id": 0, "use_tf32": "0"}), CPU])
    except UserError as exc:
        return Check("ORT providers", "FAIL", str(exc))
    return Check("ORT providers", "PASS", f"{ort.__version__}: session providers {session.get_providers()}")


def steady_peak_check(gpu: bool) -> Check:
    """The measured peak's steady figure against the burst the old method kept (fastest call)."""
    if not gpu:
        return Check("steady vs burst peak", "SKIPPED", "no GPU: a CPU has no boost/power-cap burst to compare")
    from workers.measure.matmul_peak import GPU_PLAN, measure_matmul_flops

    found = measure_matmul_flops(CUDA0, "fp16")
    ratio = found.flops / found.burst_flops
    ok = 0.5 <= ratio <= 1.0
    return Check("steady vs burst peak", "PASS" if ok else "FAIL",
                 f"fp16 {found.n}^3: steady {found.flops / 1e12:.4g} TFLOP/s (median of the later half of "
                 f"{found.rounds} calls over {GPU_PLAN.seconds:g} s), fastest call {found.burst_flops / 1e12:.4g}: "
                 f"steady/burst {ratio:.3f} (limits 0.5 to 1)")


def watch_on_off_check(gpu: bool, raw: dict[str, Any] | None) -> Check:
    """The same infer pass with the device watch sampling NVML beside it and without, alternately."""
    if not gpu or raw is None:
        return Check("watch on/off", "SKIPPED", "no GPU: no NVML to sample" if not gpu else "no bert case run")
    import dataclasses
    import statistics

    from orchestrator.spec import validate
    from workers.actor import BenchWorker
    from workers.contract import ShardTask

    worker = BenchWorker(validate(dict(raw, passes=["infer"]), "watch-on-off").worker_config())
    info = worker.setup()
    runtime = worker._runtime
    watch = runtime.device_watch if runtime is not None else None
    if info.error is not None or watch is None:
        worker.close()
        return Check("watch on/off", "FAIL", info.error.message if info.error else "no device watch (NVML)")
    shard = ShardTask(0, 0, min(info.num_examples, 32 * raw["bs"]), "infer")
    rates: dict[str, list[float]] = {"on": [], "off": []}
    p99: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for i in range(WATCH_PASSES):
            mode = "on" if i % 2 == 0 else "off"
            runtime.device_watch = watch if mode == "on" else None
            result = worker.run_shard(dataclasses.replace(shard, shard_id=i))
            rates[mode].append(result.items / result.core_seconds)
            p99[mode].append(statistics.quantiles(result.batch_core_seconds, n=100)[98])
    finally:
        runtime.device_watch = watch
        worker.close()
    rate = statistics.median(rates["on"]) / statistics.median(rates["off"]) - 1
    tail = statistics.median(p99["on"]) / statistics.median(p99["off"]) - 1
    ok = abs(rate) <= WATCH_TOLERANCE and abs(tail) <= WATCH_TOLERANCE
    return Check("watch on/off", "PASS" if ok else "FAIL",
                 f"{WATCH_PASSES} passes of {shard.stop} items alternately: core throughput {rate:+.2%}, p99 batch "
                 f"latency {tail:+.2%} with the watch on (limit {WATCH_TOLERANCE:.0%})")


def device_checks(gpu: bool, jobs: dict[str, dict[str, Any]], work: Path) -> list[Check]:
    return [assigned_gpu_check(gpu), ort_providers_check(gpu, work), steady_peak_check(gpu),
            watch_on_off_check(gpu, jobs.get("bert-large/torch"))]


def markdown(meta: dict[str, Any], results: list[dict[str, Any]], device: list[dict[str, Any]] | None = None) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v)

    columns = ["case", "precision", "bs", "p_infer_core", "plain_core", "core_ratio", "p_infer_whole", "plain_whole",
               "whole_ratio", "MFU", "MFU_measured", "mem_gib", "energy_per_item_j", "mean_power_w", "acc", "acc_plain"]
    lines = [f"# gpu_check on {meta['device']}", "", f"`{meta['command']}` ({meta['when']}, torch {meta['torch']})", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r["figures"][c]) for c in columns) + " |" for r in results]
    lines += ["", "| case | check | status | detail |", "|---|---|---|---|"]
    lines += [f"| {r['figures']['case']} | {c['name']} | {c['status']} | {c['detail']} |" for r in results for c in r["checks"]]
    lines += ["", "Peaks: " + "; ".join(f"{r['figures']['case']}: {r['figures']['peak']}" for r in results)]
    lines += ["", "Measured peaks: " + "; ".join(f"{r['figures']['case']}: {r['figures']['peak_measured']}"
                                                 for r in results)]
    if device:
        lines += ["", "| device check | status | detail |", "|---|---|---|"]
        lines += [f"| {c['name']} | {c['status']} | {c['detail']} |" for c in device]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json/.md ($OUT wins when set)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes even on a GPU (what the CPU runs)")
    parser.add_argument("--cases", default="bert,llama", help="comma-separated: bert, llama")
    parser.add_argument("--mmlu", type=Path, default=ROOT.parent / "shared" / "data" / "mmlu", help="MMLU folder")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.tiny
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else (
        args.out or ROOT / "gpu_check_results" / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = dict(cases(gpu, args.cases.split(","), args.mmlu.resolve(), Path(tmp)))
        for name, raw in jobs.items():
            t0 = time.perf_counter()
            figures, found = run_case(name, raw, Path(tmp), gpu)
            print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
            results.append({"figures": figures, "checks": [vars(c) for c in found]})
        t0 = time.perf_counter()
        device = [vars(c) for c in device_checks(gpu, jobs, Path(tmp))]
        print(f"device checks: {time.perf_counter() - t0:.1f} s", flush=True)
    meta = {"device": torch.cuda.get_device_name(0) if gpu else results[0]["figures"]["device"] if results else "",
            "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__, "gpu": gpu}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results, "device": device}, indent=2))
    text = markdown(meta, results, device)
    (out / "results.md").write_text(text)
    failed = sum(c["status"] == "FAIL" for r in results for c in r["checks"]) + sum(
        c["status"] == "FAIL" for c in device)
    print(text + f"\nwritten: {out / 'results.json'}, {out / 'results.md'}")
    print(f"gpu_check_failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
