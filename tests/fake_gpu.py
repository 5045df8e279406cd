"""A GPU at the libraries' lowest layer, for machines without one: NVML's C functions and torch's
CUDA device properties.

`FakeNvml` stands for `libnvidia-ml.so`: pynvml's own ctypes wrappers run unchanged and call these
functions with the C arguments they build, and each function checks those the way the C library
would use them. A `char *` must point at a string: a `c_char_p` made from an integer (pynvml turns
`nvmlDeviceGetHandleByPciBusId(7)` into a pointer to address 7) is recorded in `faults` as the
segmentation fault it would be on a real machine, and answered with NVML_ERROR_INVALID_ARGUMENT.

`FakeProperties` has the fields torch 2.13's `torch.cuda.get_device_properties` returns
(`torch._C._CudaDeviceProperties`), `uuid` included as torch prints it (`_CUuuid`: CUDA's format,
without NVML's "GPU-" prefix).
"""

from __future__ import annotations

import ctypes
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

import pynvml

SUCCESS, INVALID_ARGUMENT, NOT_SUPPORTED, NOT_FOUND, INSUFFICIENT_SIZE = 0, 2, 3, 6, 7
LOWEST_VALID_ADDRESS = 4096  # the first page is never mapped: reading below it is SIGSEGV


class CUuuid:
    """torch's `_CUuuid`: 16 bytes, printed in CUDA's 8-4-4-4-12 form."""

    def __init__(self, value: str) -> None:
        self._uuid = uuidlib.UUID(value)

    @property
    def bytes(self) -> list[int]:
        return list(self._uuid.bytes)

    def __str__(self) -> str:
        return str(self._uuid)


@dataclass
class FakeProperties:
    name: str
    uuid: CUuuid
    pci_bus_id: int
    pci_domain_id: int = 0
    pci_device_id: int = 0
    major: int = 9
    minor: int = 0
    total_memory: int = 80 << 30
    multi_processor_count: int = 132
    is_integrated: int = 0
    is_multi_gpu_board: int = 0
    max_threads_per_multi_processor: int = 2048
    warp_size: int = 32
    L2_cache_size: int = 50 << 20
    gcnArchName: str = "NVIDIA H100 80GB HBM3"


@dataclass
class FakeGpu:
    """One GPU: what torch says of it and what NVML knows of it."""

    uuid: str  # CUDA's form, no prefix
    bus: int
    domain: int = 0
    device: int = 0
    name: str = "NVIDIA H100 80GB HBM3"
    major: int = 9
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes)
    energy_mj: list[int] | None = field(default_factory=lambda: [1_000_000])  # None: NotSupported

    @property
    def nvml_uuid(self) -> str:
        return f"GPU-{self.uuid}"

    @property
    def bus_id(self) -> str:
        return f"{self.domain:08x}:{self.bus:02x}:{self.device:02x}.0"

    def properties(self) -> FakeProperties:
        return FakeProperties(self.name, CUuuid(self.uuid), self.bus, self.domain, self.device, self.major)


class FakeNvml:
    """libnvidia-ml's functions that raybench reaches through pynvml, checking their C arguments."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        self.gpus = gpus
        self.handles = {0x10000 + 0x100 * i: gpu for i, gpu in enumerate(gpus)}  # fake device pointers
        self.faults: list[str] = []
        self.calls: list[str] = []

    # -- argument checks, as the C side would see them
    def _string(self, arg: Any, what: str) -> str | None:
        assert isinstance(arg, ctypes.c_char_p), f"{what}: expected char *, got {type(arg).__name__}"
        address = ctypes.cast(arg, ctypes.c_void_p).value
        if address is None or address < LOWEST_VALID_ADDRESS:
            self.faults.append(f"{what}: NVML would read a string at address {address!r} (SIGSEGV)")
            return None
        return arg.value.decode()

    @staticmethod
    def _out(arg: Any, ctype: type) -> Any:
        assert type(arg).__name__ == "CArgObject" and isinstance(arg._obj, ctype), f"expected {ctype.__name__} *"
        return arg._obj

    def _gpu(self, handle: Any) -> FakeGpu:
        assert isinstance(handle, pynvml.c_nvmlDevice_t), f"expected nvmlDevice_t, got {type(handle).__name__}"
        return self.handles[ctypes.cast(handle, ctypes.c_void_p).value]

    def _give_handle(self, out: Any, gpu: FakeGpu) -> int:
        device = self._out(out, pynvml.c_nvmlDevice_t)
        address = next(a for a, g in self.handles.items() if g is gpu)
        ctypes.memmove(ctypes.addressof(device), ctypes.byref(ctypes.c_void_p(address)), ctypes.sizeof(ctypes.c_void_p))
        return SUCCESS

    # -- the library's functions
    def nvmlInitWithFlags(self, flags: int) -> int:  # noqa: N802 - NVML's names
        assert isinstance(flags, int)
        self.calls.append("nvmlInitWithFlags")
        return SUCCESS

    def nvmlShutdown(self) -> int:  # noqa: N802
        return SUCCESS

    def nvmlDeviceGetHandleByUUID(self, uuid: Any, out: Any) -> int:  # noqa: N802
        text = self._string(uuid, "nvmlDeviceGetHandleByUUID")
        self.calls.append(f"ByUUID({text})")
        if text is None:
            return INVALID_ARGUMENT
        gpu = next((g for g in self.gpus if g.nvml_uuid == text), None)
        return self._give_handle(out, gpu) if gpu else NOT_FOUND

    def nvmlDeviceGetHandleByPciBusId_v2(self, bus_id: Any, out: Any) -> int:  # noqa: N802
        text = self._string(bus_id, "nvmlDeviceGetHandleByPciBusId_v2")
        self.calls.append(f"ByPciBusId({text})")
        if text is None:
            return INVALID_ARGUMENT
        gpu = next((g for g in self.gpus if g.bus_id == text.lower()), None)
        return self._give_handle(out, gpu) if gpu else NOT_FOUND

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: Any, count: Any, infos: Any) -> int:  # noqa: N802
        gpu = self._gpu(handle)
        capacity = self._out(count, ctypes.c_uint)
        if infos is None or capacity.value < len(gpu.processes):
            capacity.value = len(gpu.processes)
            return SUCCESS if not gpu.processes else INSUFFICIENT_SIZE
        for slot, (pid, used) in zip(infos, gpu.processes):
            slot.pid = pid
            slot.usedGpuMemory = used if used is not None else pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
        capacity.value = len(gpu.processes)
        return SUCCESS

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any, out: Any) -> int:  # noqa: N802
        gpu = self._gpu(handle)
        millijoules = self._out(out, ctypes.c_uint64)
        if gpu.energy_mj is None:
            return NOT_SUPPORTED
        millijoules.value = gpu.energy_mj.pop(0) if len(gpu.energy_mj) > 1 else gpu.energy_mj[0]
        return SUCCESS

    def nvmlSystemGetDriverVersion(self, buffer: Any, size: Any) -> int:  # noqa: N802
        buffer.value = b"570.86.15"
        return SUCCESS


def install(monkeypatch, gpus: list[FakeGpu], visible: list[int] | None = None) -> FakeNvml:
    """Fake NVML (pynvml's library and its function lookup) and torch's CUDA device properties:
    torch's `cuda:i` is `gpus[visible[i]]` (CUDA_VISIBLE_DEVICES renumbers torch's devices)."""
    import torch

    nvml = FakeNvml(gpus)
    monkeypatch.setattr(pynvml, "nvmlLib", nvml)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer", lambda name: getattr(nvml, name))
    order = [gpus[i] for i in (visible if visible is not None else range(len(gpus)))]

    def properties(device: Any = None) -> FakeProperties:
        index = torch.device(device).index if isinstance(device, (str, torch.device)) else (device or 0)
        return order[index or 0].properties()

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    return nvml
