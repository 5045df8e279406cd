"""The device's achievable dense matmul FLOP/s at the job's precision: the denominator of MFU_measured.

Why a measured peak beside the datasheet's (workers/peaks.py): MFU against a datasheet says how far
a run is from the part's paper figure; where clocks are capped (a power limit, a cloud SKU, poor
cooling) that mixes the model's efficiency with the device's state, and a CPU has no datasheet
figure at all. Square matmuls of the job's dtype are the best case for any model's kernels, so
MFU_measured is the share of what this device, with this software, actually delivers.

How: C = A @ B on n x n matrices, 2 n^3 FLOPs each; at each size `warmup` untimed calls, then
`rounds` timed calls of `per_call` matmuls, timed by the CoreTimer (CUDA events on a GPU, as every
core time is). On a CPU, n doubles from 256 until one matmul takes `target_call_s` (or n reaches
2048), so a slow dtype (bf16 on a CPU without bf16 units) still finishes in about a second, and the
peak is the fastest call of any size (a CPU's caches favour middle sizes); a GPU measures 8192 only,
large enough for any Tensor Core to run at its peak. fp32 is measured as plain fp32 (float32
matmul precision "highest": no TF32), which is what the fp32 datasheet figure assumes.

Measured once and cached beside the engines (entries `peak-<key>` in the engine cache root,
workers/engines/cache.py: atomic publish, one measurer per key on a node), keyed by everything the
figure depends on: the device model (a CPU's model and cores, and torch's thread count), the
precision, the NVIDIA driver, torch and CUDA versions, and the method.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from workers.engines.cache import EngineCache, device_name
from workers.timing import CoreTimer

KIND = "peak"
RESULT = "peak.json"
METHOD = "square-matmul@1"  # part of the key: a change in how the figure is measured re-measures it


@dataclass(frozen=True)
class MatmulPlan:
    """Sizes and counts of one measurement (see the module docstring)."""

    min_n: int
    max_n: int
    target_call_s: float  # n doubles until one matmul takes this long (or n reaches max_n)
    per_call: int  # matmuls per timed call (a GPU's launches and events amortised over several)
    warmup: int  # untimed calls at each size (allocation, kernel choice; a GPU's clocks ramp up)
    rounds: int  # timed calls at each size; the fastest call of any size is the peak


GPU_PLAN = MatmulPlan(min_n=8192, max_n=8192, target_call_s=0.0, per_call=4, warmup=2, rounds=5)
CPU_PLAN = MatmulPlan(min_n=256, max_n=2048, target_call_s=0.05, per_call=1, warmup=1, rounds=3)

# precision -> (dtype, float32 matmul precision while measuring); tf32 is fp32 storage on Tensor Cores
MATMUL_DTYPES = {"fp32": (torch.float32, "highest"), "tf32": (torch.float32, "high"),
                 "fp16": (torch.float16, "highest"), "bf16": (torch.bfloat16, "highest")}


@dataclass(frozen=True)
class Measurement:
    flops: float  # FLOP/s of the best timed call
    n: int  # the square size measured
    seconds: float  # wall time of the whole measurement


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


def measure_matmul_flops(device: torch.device, precision: str, plan: MatmulPlan | None = None) -> Measurement:
    """The best FLOP/s of timed square matmuls at `precision` on `device` (not cached: see `measured_peak`)."""
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
            fastest = min(timer.time(matmuls)[1] for _ in range(plan.rounds))
            flops = plan.per_call * 2.0 * n**3 / fastest
            best = best if best.flops >= flops else Measurement(flops, n, 0.0)
            del a, b, c
            if n >= plan.max_n or fastest / plan.per_call >= plan.target_call_s:
                break
            n *= 2
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Measurement(best.flops, best.n, time.perf_counter() - t0)


def key_fields(device: torch.device, precision: str, versions: dict[str, str], plan: MatmulPlan) -> dict[str, Any]:
    """Everything the measured figure depends on (the cache key)."""
    return {
        "method": METHOD,
        "plan": asdict(plan),
        "device": device_name(device),
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

    entry = EngineCache(cache_root).get_or_build(KIND, key_fields(device, precision, versions, plan), build)
    found = Measurement(**json.loads((entry.path / RESULT).read_text()))
    how = "cached" if entry.hit else "measured"
    label = (f"{found.flops / 1e12:.4g} TFLOP/s {precision}, fastest of {plan.rounds} calls x {plan.per_call} "
             f"{found.n}x{found.n} matmuls on {device_name(device)} ({how}: {entry.path})")
    return MeasuredPeak(found.flops, label, "", entry.hit)
