"""The device a worker owns: which one, what it is called, how much memory it uses.

Memory comes from NVML per process on NVIDIA GPUs (what `nvidia-smi` shows for our pid: the CUDA
context, torch's cached blocks and TensorRT's own allocations alike). On a CPU there is no device
memory: we report the process's peak resident set size and say so in `mem_source`.
Peak FLOP/s by device name live in workers/peaks.py.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
from dataclasses import dataclass

import torch

from workers.errors import UserError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    name: str


def choose_device(index: int = 0) -> DeviceChoice:
    """The device this process owns: cuda:0 of whatever Ray (CUDA_VISIBLE_DEVICES) gave us, else CPU.
    A tensor-parallel rank sees its whole group's GPUs and owns `cuda:<its rank>` (workers/rank.py)."""
    if torch.cuda.is_available():
        return DeviceChoice(torch.device(f"cuda:{index}"), torch.cuda.get_device_name(index))
    return DeviceChoice(torch.device("cpu"), cpu_name())


def cpu_name() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"CPU {model or platform.processor() or platform.machine()} x{os.cpu_count()}"


def check_precision(device: torch.device, precision: str, fallback: bool) -> str:
    """The precision to actually run at; fp16 on a CPU is refused unless the spec allows fp32."""
    if device.type == "cpu" and precision == "fp16":
        if fallback:
            return "fp32"
        raise UserError(
            "precision: fp16 is not supported on a CPU worker (no GPU visible); use fp32 or bf16, "
            "or set precision_fallback: true to run fp16 jobs as fp32 on CPUs"
        )
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError(f"precision: bf16 is not supported on {torch.cuda.get_device_name(device)}")
    return precision


class MemoryProbe:
    """Peak memory of this worker process on its device, with the source of the figure."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self._nvml_handle = None
        if device.type == "cuda":
            self._nvml_handle = nvml_handle(device)

    @property
    def source(self) -> str:
        if self.device.type == "cpu":
            return "cpu-rss-peak"
        return "nvml-process" if self._nvml_handle is not None else "torch-cuda-reserved-peak"

    def _cuda_now(self) -> int:
        if self._nvml_handle is not None:
            used = _nvml_process_bytes(self._nvml_handle)
            if used:
                return used
            # Inside a container NVML may list host pids only: our pid is not found. Say so.
            self._nvml_handle = None
        return torch.cuda.max_memory_reserved(self.device)

    def total_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.get_device_properties(self.device).total_memory
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None

    def sample(self) -> int:
        """Read the current figure, keep the largest seen, and return the peak so far."""
        if self.device.type == "cpu":
            now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        else:
            now = self._cuda_now()
        self.peak_bytes = max(self.peak_bytes, now)
        return self.peak_bytes


def nvml_handle(device: torch.device):
    """NVML handle of the GPU torch calls `device`, matched by PCI bus id; None without a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        bus_id = torch.cuda.get_device_properties(device).pci_bus_id  # type: ignore[attr-defined]
        return pynvml.nvmlDeviceGetHandleByPciBusId(bus_id)
    except Exception:  # noqa: BLE001 - no NVML (no driver, MIG, old torch): fall back to torch figures
        return None


def _nvml_process_bytes(handle) -> int:
    import pynvml

    pid = os.getpid()
    used = 0
    for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
        if proc.pid == pid and proc.usedGpuMemory is not None:
            used += proc.usedGpuMemory
    return used


def assigned_gpus() -> str:
    """' (GPU 3)': the physical GPU ids Ray gave this worker, '' when none were assigned."""
    try:
        import ray

        ids = ray.get_gpu_ids() if ray.is_initialized() else []
    except ImportError:
        ids = []
    if not ids:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [v for v in visible.split(",") if v.strip()]
    return f" (GPU {','.join(str(i) for i in ids)})" if ids else ""


def node_identity() -> tuple[str, str]:
    """(node id, hostname): Ray's node id when running under Ray, the hostname otherwise."""
    hostname = socket.gethostname()
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id(), hostname
    except ImportError:
        pass
    return f"local:{hostname}", hostname
