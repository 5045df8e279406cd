"""The device's achievable dense matmul FLOP/s at the job's precision: the denominator of MFU_measured.

Why a measured peak beside the datasheet's (workers/measure/peaks.py): MFU against a datasheet says how far
a run is from the part's paper figure; where clocks are capped (a power limit, a cloud SKU, poor
cooling) that mixes the model's efficiency with the device's state, and a CPU has no datasheet
figure at all. Square matmuls of the job's dtype are the best case for any model's kernels, so
MFU_measured is the share of what this device, with this software, actually delivers.

How: C = A @ B on n x n matrices, 2 n^3 FLOPs each; at each size `warmup` untimed calls, then
timed calls of `per_call` matmuls for `seconds` (at least `min_rounds` calls), timed by the
CoreTimer (CUDA events on a GPU, as every core time is). The size's figure is the median of the
later half of its calls: a steady figure. A GPU starts a burst at its boost clock, and within a
second under a dense GEMM its power limit pulls the clock down to what it sustains through a pass
of minutes; the fastest of a few calls in the first ~40 ms (the method before) was that burst, and
MFU_measured read low by the boost/sustained ratio. The fastest call is kept beside it
(`burst_flops`) for benchmarks/gpu_check.py to show the difference. A GPU measures 8192 only
(large enough for any Tensor Core to run at its peak), for about a second. On a CPU, n doubles
from 256 until one matmul takes `target_call_s` (or n reaches 2048), so a slow dtype (bf16 on a
CPU without bf16 units) still finishes in about a second, and the peak is the best size's (a
CPU's caches favour middle sizes). fp32 is measured as plain fp32 (float32 matmul precision
"highest": no TF32), which is what the fp32 datasheet figure assumes.

Measured once and cached beside the engines (entries `peak-<key>` in the engine cache root, a
folder cache of workers/storage/folder_cache.py: atomic publish, one measurer per key on a node),
keyed by everything the figure depends on: the device model (a CPU's model and cores, and torch's
thread count), the GPU itself (its UUID: the figure describes this device, and two of the same
model differ in cooling and binning) and its settings NVML reports (enforced power limit, max and
applications SM clocks: `nvidia-smi -pl/-ac` change the answer), the precision, the NVIDIA driver,
torch and CUDA versions, and the method. A second run on the same GPU reads the figure back and
pays nothing; a job that wants no measurement at all sets `measure_peak: false`.
"""

from __future__ import annotations

import json
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from workers.measure.device import device_name
from workers.measure.nvml import gpu_uuid, nvml_lookup
from workers.measure.timing import CoreTimer
from workers.storage.folder_cache import FolderCache

KIND = "peak"
RESULT = "peak.json"
# part of the key: a change in how the figure is measured re-measures it (@2: a steady median over
# ~1 s per size, where @1 kept the fastest call)
METHOD = "square-matmul@2"


@dataclass(frozen=True)
class MatmulPlan:
    """Sizes and counts of one measurement (see the module docstring)."""

    min_n: int
    max_n: int
    target_call_s: float  # n doubles until one matmul takes this long (or n reaches max_n)
    per_call: int  # matmuls per timed call (a GPU's launches and events amortised over several)
    warmup: int  # untimed calls at each size (allocation, kernel choice)
    seconds: float  # timed calls at each size go on this long: long enough for a GPU's clock to settle
    min_rounds: int  # and at least this many; the size's figure is the median of the later half


GPU_PLAN = MatmulPlan(min_n=8192, max_n=8192, target_call_s=0.0, per_call=4, warmup=2, seconds=1.0, min_rounds=8)
CPU_PLAN = MatmulPlan(min_n=256, max_n=2048, target_call_s=0.05, per_call=1, warmup=1, seconds=0.1, min_rounds=3)

# precision -> (dtype, float32 matmul precision while measuring); tf32 is fp32 storage on Tensor Cores
MATMUL_DTYPES = {"fp32": (torch.float32, "highest"), "tf32": (torch.float32, "high"),
                 "fp16": (torch.float16, "highest"), "bf16": (torch.bfloat16, "highest")}


@dataclass(frozen=True)
class Measurement:
    flops: float  # steady FLOP/s: the median of the later half of the timed calls at the best size
    n: int  # the square size measured
    seconds: float  # wall time of the whole measurement
    burst_flops: float = 0.0  # FLOP/s of the fastest single call at that size (what the old method kept)
    rounds: int = 0  # timed calls at that size


@dataclass(frozen=True)
class MeasuredPeak:
    flops: float | None  # achievable dense FLOP/s, None when not measured
    label: str  # what was measured and where the figure came from ("" when none)
    reason: str  # why flops is None ("" when there is a figure)
    cache_hit: bool = False


def plan_for(device: torch.device) -> MatmulPlan:
    return GPU_PLAN if device.type == "cuda" else CPU_PLAN


@contextmanager
def matmul_precision(mode: str) -> Iterator[None]:
    """float32 matmul precision `mode` while measuring, restored after (the job's own setting stays)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(mode)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def steady(seconds: list[float]) -> float:
    """The median of the later half of a size's call times: after the clock has settled."""
    return statistics.median(seconds[len(seconds) // 2:])


def time_calls(timer: CoreTimer, call: Callable[[], None], plan: MatmulPlan) -> list[float]:
    """Seconds of each timed call: for `plan.seconds` of timed work, and at least `plan.min_rounds` calls."""
    times: list[float] = []
    while len(times) < plan.min_rounds or sum(times) < plan.seconds:
        times.append(timer.time(call)[1])
    return times


def measure_matmul_flops(device: torch.device, precision: str, plan: MatmulPlan | None = None) -> Measurement:
    """The steady FLOP/s of timed square matmuls at `precision` on `device` (not cached: see `measured_peak`)."""
    plan = plan or plan_for(device)
    dtype, mode = MATMUL_DTYPES[precision]
    timer = CoreTimer(device)
    generator = torch.Generator(device=device).manual_seed(0)
    t0 = time.perf_counter()
    best = Measurement(0.0, 0, 0.0)
    with matmul_precision(mode), torch.inference_mode():
        n = plan.min_n
        while True:
            a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
            b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
            c = torch.empty(n, n, device=device, dtype=dtype)

            def matmuls() -> None:
                for _ in range(plan.per_call):
                    torch.mm(a, b, out=c)

            for _ in range(plan.warmup):
                matmuls()
            timer.sync()
            times = time_calls(timer, matmuls, plan)
            work = plan.per_call * 2.0 * n**3
            if work / steady(times) > best.flops:
                best = Measurement(work / steady(times), n, 0.0, work / min(times), len(times))
            del a, b, c
            if n >= plan.max_n or min(times) / plan.per_call >= plan.target_call_s:
                break
            n *= 2
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return replace(best, seconds=time.perf_counter() - t0)


def gpu_settings(device: torch.device) -> dict[str, Any] | None:
    """What of a GPU changes its matmul peak, for the cache key: which GPU (UUID) and the settings
    NVML reports (enforced power limit, max and applications SM clocks); None on a CPU. A figure
    NVML cannot read is None in the key (it still tells GPUs and settings apart by the others)."""
    if device.type != "cuda":
        return None
    import pynvml

    handle = nvml_lookup(device).handle

    def read(fn: Callable[..., int], *args: Any) -> int | None:
        if handle is None:
            return None
        try:
            return fn(handle, *args)
        except pynvml.NVMLError:
            return None

    return {
        "uuid": gpu_uuid(device),
        "power_limit_mw": read(pynvml.nvmlDeviceGetEnforcedPowerLimit),
        "max_sm_clock_mhz": read(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
        "applications_sm_clock_mhz": read(pynvml.nvmlDeviceGetApplicationsClock, pynvml.NVML_CLOCK_SM),
    }


def key_fields(device: torch.device, precision: str, versions: dict[str, str], plan: MatmulPlan) -> dict[str, Any]:
    """Everything the measured figure depends on (the cache key)."""
    return {
        "method": METHOD,
        "plan": asdict(plan),
        "device": device_name(device),
        "gpu": gpu_settings(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "precision": precision,
        "driver": versions.get("nvidia_driver", ""),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
    }


def measured_peak(device: torch.device, precision: str, cache_root: Path, versions: dict[str, str]) -> MeasuredPeak:
    """The cached figure for this device, precision and software, measured first if the cache lacks it."""
    if precision not in MATMUL_DTYPES:
        return MeasuredPeak(None, "", f"no matmul measurement for precision {precision}")
    plan = plan_for(device)

    def build(folder: Path) -> None:
        (folder / RESULT).write_text(json.dumps(asdict(measure_matmul_flops(device, precision, plan))))

    entry = FolderCache(cache_root).get_or_build(KIND, key_fields(device, precision, versions, plan), build)
    found = Measurement(**json.loads((entry.path / RESULT).read_text()))
    how = "cached" if entry.hit else "measured"
    label = (f"{found.flops / 1e12:.4g} TFLOP/s {precision}, median of the later half of {found.rounds} calls x "
             f"{plan.per_call} {found.n}x{found.n} matmuls over {plan.seconds:g} s (fastest call "
             f"{found.burst_flops / 1e12:.4g}) on {device_name(device)} ({how}: {entry.path})")
    return MeasuredPeak(found.flops, label, "", entry.hit)
