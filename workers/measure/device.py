"""The device a worker owns: which one, what it is called, how much memory it uses.

Memory comes from NVML per process on NVIDIA GPUs (what `nvidia-smi` shows for our pid: the CUDA
context, torch's cached blocks and TensorRT's own allocations alike; workers/measure/nvml.py finds the GPU).
On a CPU there is no device memory: we report the process's peak resident set size and say so in
`mem_source`. Peak FLOP/s by device name live in workers/measure/peaks.py.

A worker that Ray gave a GPU runs on it or fails: a node that declares GPUs its torch cannot see
(a CPU build of torch, a broken driver) would otherwise run every "GPU" job on the CPU. Test
clusters that declare GPUs the machine does not have say so in the nodes' environment,
RAYBENCH_FAKE_GPUS=1, read here and nowhere else.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
from dataclasses import dataclass

import torch

from workers.errors import UserError
from workers.measure.nvml import (  # noqa: F401 - nvml_handle: the shared lookup
    assigned_uuids,
    gpu_identity,
    nvml_handle,
    nvml_lookup,
    process_memory,
    same_uuid,
)

# tf32 stores fp32 and lets matmuls and convolutions round their inputs to TF32 (Ampere and later)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32}
FAKE_GPUS_ENV = "RAYBENCH_FAKE_GPUS"

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


def ray_gpu_ids() -> list[str]:
    """The GPU ids Ray assigned this process ([] outside Ray or without GPUs)."""
    try:
        import ray
    except ImportError:
        return []
    return [str(i) for i in ray.get_gpu_ids()] if ray.is_initialized() else []


EARLY_CUDA = ("likely causes: CUDA started in this process before Ray set CUDA_VISIBLE_DEVICES (a CUDA call in "
              "a module imported early, e.g. through RAY_preload_python_modules), or "
              "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES is set on the node; unset it and keep CUDA calls out of "
              "preloaded imports")


def require_assigned_gpu(device: torch.device, assigned: list[str] | None = None) -> None:
    """A worker Ray gave GPUs runs on exactly those: one line naming the GPUs and the likely cause otherwise.

    `assigned`: the GPU ids this process must see as cuda:0, cuda:1, ... (default Ray's, for this
    worker; a tensor-parallel rank passes its group's, in rank order, as it shows them all). Checked:
    torch sees CUDA at all, sees as many devices as assigned (not the node's every GPU), and each
    cuda:i is the GPU NVML knows as assigned id i (its UUID). Otherwise a whole node's workers can
    run on GPU 0, silently: the row would say "1x" of a GPU it shared eight ways.
    """
    ids = ray_gpu_ids() if assigned is None else [str(i) for i in assigned]
    if not ids or os.environ.get(FAKE_GPUS_ENV) == "1":
        return
    where = f"Ray gave this worker GPU {','.join(ids)} on {socket.gethostname()}"
    visible_env = f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}"
    if device.type != "cuda":
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise UserError(
            f"gpus_per_worker: {where} but torch sees no CUDA device ({build}; {visible_env}); install a "
            "CUDA build of torch and the NVIDIA driver there, or start that node's Ray with --num-gpus=0"
        )
    count = torch.cuda.device_count()
    if count != len(ids):
        raise UserError(f"gpus_per_worker: {where} but torch sees {count} CUDA devices ({visible_env}); {EARLY_CUDA}")
    wanted = assigned_uuids(ids) or []
    for index, want in enumerate(wanted):
        got = gpu_identity(torch.device(f"cuda:{index}")).uuid
        if got and want and not same_uuid(got, want):
            raise UserError(f"gpus_per_worker: {where} but cuda:{index} is {got}, not GPU {ids[index]} ({want}); "
                            f"{EARLY_CUDA}")


def cpu_name() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"CPU {model or platform.processor() or platform.machine()} x{os.cpu_count()}"


def device_name(device: torch.device) -> str:
    """The name of the device an artifact is built for (GPU model, or CPU model and core count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def check_precision(device: torch.device, precision: str, fallback: bool) -> str:
    """The precision to actually run at; fp16 and tf32 on a CPU are refused unless the spec allows fp32."""
    if device.type == "cpu" and precision in ("fp16", "tf32"):
        if fallback:
            return "fp32"
        raise UserError(
            f"precision: {precision} is not supported on a CPU worker (no GPU visible); use fp32 or bf16, "
            f"or set precision_fallback: true to run {precision} jobs as fp32 on CPUs"
        )
    if device.type == "cuda" and precision == "tf32" and torch.cuda.get_device_capability(device) < (8, 0):
        raise UserError(f"precision: tf32 needs an Ampere or newer GPU; {torch.cuda.get_device_name(device)} has none")
    if device.type == "cuda" and precision == "bf16" and torch.cuda.get_device_capability(device) < (8, 0):
        # not is_bf16_supported(): it counts emulation, so a V100 or T4 would run bf16 slowly instead
        major, minor = torch.cuda.get_device_capability(device)
        raise UserError(f"precision: bf16 needs an Ampere or newer GPU (compute capability 8.0); "
                        f"{torch.cuda.get_device_name(device)} is {major}.{minor}: use fp16")
    return precision


def set_matmul_precision(precision: str) -> None:
    """fp32 means IEEE fp32: torch's TF32 switches, set explicitly before every pass and build
    (cuDNN convolutions default to TF32 in torch), on only for `tf32`. Process-wide, so each pass
    sets its own precision's. These setters keep torch 2.9+'s `fp32_precision` settings in step
    (matmul ieee/tf32, cuDNN conv and RNN none/tf32); setting those directly instead leaves the
    older flags behind, and torch then refuses to read them (torch.export does)."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


class MemoryProbe:
    """Peak memory of this worker process on its device, with the source of the figure.

    On a GPU the figure is NVML's for our pid (workers/measure/nvml.py finds the GPU by UUID). Where NVML
    cannot give it, torch's reserved peak stands in and `note` says why (`source` names the figure).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self._nvml_handle = None
        self.note = ""
        if device.type == "cuda":
            found = nvml_lookup(device)
            self._nvml_handle, self.note = found.handle, found.note

    @property
    def source(self) -> str:
        if self.device.type == "cpu":
            return "cpu-rss-peak"
        return "nvml-process" if self._nvml_handle is not None else "torch-cuda-reserved-peak"

    def _cuda_now(self) -> int:
        if self._nvml_handle is not None:
            mine = process_memory(self._nvml_handle)
            if mine.used_bytes:
                return mine.used_bytes
            # e.g. inside a container NVML lists host pids only, so ours is not found: say why
            self._nvml_handle, self.note = None, mine.note
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


def assigned_gpus() -> str:
    """' (GPU 3)': the physical GPU ids Ray gave this worker, '' when none were assigned."""
    ids = ray_gpu_ids()
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
