"""Memory bandwidth of a device: the denominator of MBU (decode's bytes read per second / bandwidth).

A decode step of a small batch reads every weight and the KV cache once and does little
arithmetic on them: it is bound by memory bandwidth, not FLOPs, so MFU says little about it and
MBU (model bandwidth utilisation) says how close it runs to the memory's limit.

Datasheet: peak bandwidth looked up by the device's whole model name and form factor as peak
FLOP/s are (workers/measure/peaks.py's `parse_device_name`), and by its memory size where one
model comes in two (A100 40 GB HBM2, 80 GB HBM2e). Decimal units (1 GB/s = 1e9 B/s), as NVIDIA
prints them. A device the table does not know (a CPU, any GPU not listed) gets none, and a reason.

Measured: what this device sustains with this software, so `MBU_measured` exists on CPUs too: a
copy of a buffer larger than the last-level cache (1 GiB on a GPU, whose L2 is at most 50 MB;
512 MiB on a CPU), timed by the CoreTimer for about a second after a warm-up, bytes = read + write
(a CPU's write-allocate traffic is not counted, so a CPU's figure is a lower bound by up to a
third), the figure the median of the later half of the calls. Cached beside the measured matmul
peak (entries `bandwidth-<key>` in the engine cache), keyed like it; `measure_peak: false` skips it.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from workers.measure.device import device_name
from workers.measure.matmul_peak import gpu_settings
from workers.measure.peaks import parse_device_name
from workers.measure.timing import CoreTimer
from workers.storage.folder_cache import FolderCache

G = 1e9
KIND = "bandwidth"
RESULT = "bandwidth.json"
METHOD = "copy@1"
A100_SHEET = ("NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): "
              "GPU memory bandwidth")
H100_SHEET = "NVIDIA H100 Tensor Core GPU datasheet: GPU memory bandwidth"
H200_SHEET = "NVIDIA H200 Tensor Core GPU product page (nvidia.com/en-us/data-center/h200): GPU memory bandwidth"


@dataclass(frozen=True)
class Bandwidth:
    model: str
    form: str | None  # as peaks.Peak: None when every form factor has the same figure
    memory_gb: int | None  # the memory size that tells two parts apart (A100 40 GB / 80 GB); None: any
    bytes_per_s: float
    source: str


BANDWIDTHS: tuple[Bandwidth, ...] = (
    Bandwidth("A100", "SXM", 40, 1555 * G, f"{A100_SHEET}, A100 40GB SXM: 1,555 GB/s (HBM2)"),
    Bandwidth("A100", "PCIe", 40, 1555 * G, f"{A100_SHEET}, A100 40GB PCIe: 1,555 GB/s (HBM2)"),
    Bandwidth("A100", "SXM", 80, 2039 * G, f"{A100_SHEET}, A100 80GB SXM: 2,039 GB/s (HBM2e)"),
    Bandwidth("A100", "PCIe", 80, 1935 * G, f"{A100_SHEET}, A100 80GB PCIe: 1,935 GB/s (HBM2e)"),
    Bandwidth("H100", "SXM", None, 3350 * G, f"{H100_SHEET}, H100 SXM: 3.35 TB/s (HBM3)"),
    Bandwidth("H100", "PCIe", None, 2000 * G, f"{H100_SHEET}, H100 PCIe: 2 TB/s (HBM2e)"),
    Bandwidth("H100", "NVL", None, 3900 * G, f"{H100_SHEET}, H100 NVL: 3.9 TB/s (HBM3)"),
    Bandwidth("H200", None, None, 4800 * G, f"{H200_SHEET}, H200 SXM and NVL: 4.8 TB/s (HBM3e)"),
    Bandwidth("L40S", None, None, 864 * G, "NVIDIA L40S datasheet: GPU memory bandwidth 864 GB/s (GDDR6)"),
    Bandwidth("L4", None, None, 300 * G, "NVIDIA L4 Tensor Core GPU datasheet: GPU memory bandwidth 300 GB/s"),
    Bandwidth("V100", None, None, 900 * G, "NVIDIA V100 Tensor Core GPU datasheet: memory bandwidth 900 GB/s "
              "(SXM2 and PCIe, 16 and 32 GB)"),
)


@dataclass(frozen=True)
class BandwidthLookup:
    bytes_per_s: float | None
    label: str
    reason: str


def _memory_gb(name: str, total_bytes: int | None) -> int | None:
    """The memory size the name says ("A100-SXM4-80GB"), else the device's own, rounded to 40/80."""
    found = re.search(r"(\d+)\s*GB", name.upper())
    if found:
        return int(found.group(1))
    return None if not total_bytes else (80 if total_bytes > 60 * 2**30 else 40)


def bandwidth_lookup(name: str, total_bytes: int | None = None) -> BandwidthLookup:
    """The datasheet bandwidth of the device called `name` (module docstring), or why there is none."""
    if name.startswith("CPU"):
        return BandwidthLookup(None, "", "no datasheet bandwidth for CPUs (see MBU_measured)")
    model, form = parse_device_name(name)
    entries = [b for b in BANDWIDTHS if b.model == model]
    if not entries:
        return BandwidthLookup(None, "", f"'{name}' is not in the bandwidth table (workers/measure/bandwidth.py); "
                                         "MBU is left blank rather than use another device's")
    memory = _memory_gb(name, total_bytes)
    chosen = next((b for b in entries if (b.form is None or b.form == form)
                   and (b.memory_gb is None or b.memory_gb == memory)), None)
    if chosen is None:
        return BandwidthLookup(None, "", f"which {model} '{name}' is ({form or 'form factor unknown'}, "
                                         f"{memory or '?'} GB) cannot be told; MBU is left blank")
    return BandwidthLookup(chosen.bytes_per_s, f"{chosen.bytes_per_s / G:g} GB/s ({chosen.source})", "")


@dataclass(frozen=True)
class BandwidthMeasurement:
    bytes_per_s: float
    buffer_bytes: int
    rounds: int
    seconds: float


def measure_bandwidth(device: torch.device, seconds: float = 1.0) -> BandwidthMeasurement:
    """The steady copy bandwidth (read + write bytes per second) of a buffer beyond the caches."""
    size = (1 << 30) if device.type == "cuda" else (512 << 20)
    timer = CoreTimer(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        source = torch.ones(size // 4, dtype=torch.float32, device=device)
        target = torch.empty_like(source)
        target.copy_(source)  # warm-up: pages touched, kernels chosen
        timer.sync()
        times: list[float] = []
        while len(times) < 4 or sum(times) < seconds:
            times.append(timer.time(lambda: target.copy_(source))[1])
        del source, target
    if device.type == "cuda":
        torch.cuda.empty_cache()
    steady = statistics.median(times[len(times) // 2:])
    return BandwidthMeasurement(2 * size / steady, size, len(times), time.perf_counter() - t0)


@dataclass(frozen=True)
class MeasuredBandwidth:
    bytes_per_s: float | None
    label: str
    reason: str


def measured_bandwidth(device: torch.device, cache_root: Path, versions: dict[str, str]) -> MeasuredBandwidth:
    """The cached figure for this device and software, measured first if the cache lacks it."""
    fields = {"method": METHOD, "device": device_name(device), "gpu": gpu_settings(device),
              "threads": torch.get_num_threads() if device.type == "cpu" else None,
              "driver": versions.get("nvidia_driver", ""), "torch": torch.__version__}

    def build(folder: Path) -> None:
        (folder / RESULT).write_text(json.dumps(asdict(measure_bandwidth(device))))

    entry = FolderCache(cache_root).get_or_build(KIND, fields, build)
    found = BandwidthMeasurement(**json.loads((entry.path / RESULT).read_text()))
    how = "cached" if entry.hit else "measured"
    label = (f"{found.bytes_per_s / G:.4g} GB/s: copy of {found.buffer_bytes >> 20} MiB, median of the later half "
             f"of {found.rounds} calls on {device_name(device)} ({how}: {entry.path})")
    return MeasuredBandwidth(found.bytes_per_s, label, "")
