"""A GPU at the libraries' lowest layer, for machines without one: NVML's C functions and torch's
CUDA device properties. The suite's one fake of either; a test stages what the GPU reports by
changing its `FakeGpu` (clocks, throttle reasons, processes, energy, XIDs, ...), even mid-pass.

`FakeNvmlLib` stands for `libnvidia-ml.so`, not for pynvml: pynvml's own ctypes wrappers
(`nvmlDeviceGetHandleByPciBusId`, `nvmlDeviceGetComputeRunningProcesses`, `nvmlEventSetWait`, ...)
run unchanged, build their C arguments and call the functions here, which check that each argument
has the exact C type the real function takes (a `c_uint` by value, a pointer made with `byref` to a
`c_ulonglong`, a `c_nvmlDevice_t` this library handed out, ...) and write their results through
the pointers, as the driver does. A wrong type fails the test at once (an `AssertionError`), because
the real library would read garbage. A `char *` must point at a string: a `c_char_p` made from an
integer (pynvml turns `nvmlDeviceGetHandleByPciBusId(7)` into a pointer to address 7) is recorded
in `faults` as the segmentation fault it would be on a real machine, and answered with
NVML_ERROR_INVALID_ARGUMENT, so the test can show what the code under test then does.

`FakeProperties` has the fields torch 2.13's `torch.cuda.get_device_properties` returns
(`torch._C._CudaDeviceProperties`), `uuid` included as torch prints it (`_CUuuid`: CUDA's format,
without NVML's "GPU-" prefix).

`install` puts both in place for one test (monkeypatch undoes it); `handle_of` gives the handle
pynvml returns for a `FakeGpu`, for code that takes a handle.
"""

from __future__ import annotations

import ctypes
import threading
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml

SUCCESS, INVALID_ARGUMENT, NOT_SUPPORTED, NOT_FOUND, INSUFFICIENT_SIZE, TIMEOUT = (
    pynvml.NVML_SUCCESS, pynvml.NVML_ERROR_INVALID_ARGUMENT, pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_NOT_FOUND, pynvml.NVML_ERROR_INSUFFICIENT_SIZE, pynvml.NVML_ERROR_TIMEOUT)
LOWEST_VALID_ADDRESS = 4096  # the first page is never mapped: reading below it is SIGSEGV


# -- C argument checks: what the real function would take, exactly (subclasses and look-alikes fail)
def out(arg: Any, ctype: type) -> Any:
    """The object behind a `byref(...)` argument, which must point at a `ctype`."""
    assert type(arg).__name__ == "CArgObject", f"expected a pointer made with byref, got {type(arg).__name__}"
    assert type(arg._obj) is ctype, f"expected a pointer to {ctype.__name__}, got one to {type(arg._obj).__name__}"
    return arg._obj


def by_value(arg: Any, ctype: type) -> int:
    """The value of an argument passed by value, which must be a `ctype` (ctypes would otherwise pass
    a Python int as a C int, whatever width the function takes)."""
    assert type(arg) is ctype, f"expected a {ctype.__name__} by value, got {type(arg).__name__}"
    return arg.value


# -- torch's side
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
    """torch's `_CudaDeviceProperties`, field for field (the fields raybench reads and their neighbours)."""

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


def older_torch(props: FakeProperties, *missing: str) -> Any:
    """`props` as an older torch returns them: without the fields named in `missing` (torch added
    `uuid` and the PCI ids over several releases; pyproject allows torch>=2.4)."""
    import types

    return types.SimpleNamespace(**{k: v for k, v in vars(props).items() if k not in missing})


# -- the GPU
@dataclass
class FakeGpu:
    """One GPU: what torch says of it and what NVML reports of it now. Tests change the NVML
    figures while a pass runs; `processes`, `energy_mj` and the sensors are read at each call."""

    uuid: str = "5d6b0a1e-0000-0000-0000-000000000007"  # CUDA's form, no prefix (NVML's: `nvml_uuid`)
    bus: int = 0x07  # PCI bus; DGX/HGX boards put GPUs on 0x07, 0x0f, 0x47, ...
    domain: int = 0
    device: int = 0
    name: str = "NVIDIA H100 80GB HBM3"
    major: int = 9  # compute capability: 9 Hopper, 7 Volta (the first with an energy counter), 6 Pascal
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes; None: N/A)
    energy_mj: list[int] = field(default_factory=lambda: [1_000_000])  # read in turn, the last one repeats
    sm_clock_mhz: int = 1980
    clock_events: int = 0  # nvmlClocksEventReason* bits
    temperature_c: int = 45
    power_mw: int = 350_000
    ecc_uncorrected: int = 0
    power_limit_mw: int = 700_000  # the enforced power limit
    max_sm_clock_mhz: int = 1980
    app_sm_clock_mhz: int = 1755  # the applications clock (what `nvidia-smi -ac` sets)
    unsupported: set[str] = field(default_factory=set)  # C functions that answer NOT_SUPPORTED for it
    struct: Any = field(default_factory=pynvml.struct_c_nvmlDevice_t)  # what its handle points at

    @property
    def nvml_uuid(self) -> str:
        return f"GPU-{self.uuid}"

    @property
    def bus_id(self) -> str:
        """NVML's bus id string, the form `nvmlDeviceGetHandleByPciBusId` takes."""
        return f"{self.domain:08x}:{self.bus:02x}:{self.device:02x}.0"

    def properties(self) -> FakeProperties:
        return FakeProperties(self.name, CUuuid(self.uuid), self.bus, self.domain, self.device, self.major)


# -- NVML's side
class FakeNvmlLib:
    """libnvidia-ml's functions that raybench reaches through pynvml, checking their C arguments.

    `calls` lists every C function called, by name, in order; `lookups` the strings the handle
    lookups read ("ByUUID(GPU-...)", "ByPciBusId(0000...)"); `faults` the reads a real NVML would
    have crashed on. `missing` names C functions this "driver" does not have (an older one): pynvml
    gets NVML_ERROR_FUNCTION_NOT_FOUND for them, as for any function not written here.
    """

    def __init__(self, gpus: list[FakeGpu], missing: set[str] | None = None,
                 driver_version: str = "580.65.06", cuda_driver_version: int = 13000) -> None:
        self.gpus = gpus  # in NVML's index order (PCI bus order)
        self.missing = set(missing or ())
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version  # 1000 * major + 10 * minor: r535 12020, r580 13000
        self.calls: list[str] = []
        self.lookups: list[str] = []
        self.faults: list[str] = []
        self._xids: list[tuple[FakeGpu, int]] = []
        self._arrived = threading.Condition()
        self._sets: list[Any] = []
        self._registered: dict[int, set[int]] = {}  # event set address -> device addresses

    def function(self, name: str) -> Callable[..., int]:
        """What `pynvml._nvmlGetFunctionPointer` returns: the C function `name`."""
        if name in self.missing or not hasattr(self, name) or not name.startswith("nvml"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        method = getattr(self, name)

        def call(*args: Any) -> int:
            self.calls.append(name)
            gpu = self._gpu(args[0]) if args and isinstance(args[0], pynvml.c_nvmlDevice_t) else None
            if gpu is not None and name in gpu.unsupported:
                return NOT_SUPPORTED
            return method(*args)

        return call

    def raise_xid(self, gpu: FakeGpu, xid: int) -> None:
        """The driver reports an XID critical error on `gpu` (delivered to event sets registered for it)."""
        with self._arrived:
            self._xids.append((gpu, xid))
            self._arrived.notify_all()

    # -- checks of the pointers NVML itself hands out and reads
    def _gpu(self, handle: Any) -> FakeGpu:
        assert isinstance(handle, pynvml.c_nvmlDevice_t) and handle, f"not a device handle: {handle!r}"
        address = ctypes.addressof(handle.contents)
        found = [g for g in self.gpus if ctypes.addressof(g.struct) == address]
        assert found, "a handle this library never handed out"
        return found[0]

    def _string(self, arg: Any, what: str) -> str | None:
        """A `const char *` argument's text; None (and a fault) where NVML would read unmapped memory."""
        assert type(arg) is ctypes.c_char_p, f"{what}: expected char *, got {type(arg).__name__}"
        address = ctypes.cast(arg, ctypes.c_void_p).value
        if address is None or address < LOWEST_VALID_ADDRESS:
            self.faults.append(f"{what}: NVML would read a string at address {address!r} (SIGSEGV)")
            return None
        return arg.value.decode()

    def _set_address(self, event_set: Any) -> int:
        assert isinstance(event_set, pynvml.c_nvmlEventSet_t) and event_set, f"not an event set: {event_set!r}"
        address = ctypes.addressof(event_set.contents)
        assert address in self._registered, "an event set this library never made (or freed)"
        return address

    def _hand_out(self, device: Any, gpu: FakeGpu | None) -> int:
        target = out(device, pynvml.c_nvmlDevice_t)
        if gpu is None:
            return NOT_FOUND
        target.contents = gpu.struct
        return SUCCESS

    # -- the C functions (names and argument types as in nvml.h)
    def nvmlInitWithFlags(self, flags: Any) -> int:
        assert isinstance(flags, int), type(flags)
        return SUCCESS

    def nvmlShutdown(self) -> int:
        return SUCCESS

    def nvmlErrorString(self, result: Any) -> bytes:
        return f"fake NVML error {result}".encode()

    def nvmlSystemGetDriverVersion(self, buffer: Any, size: Any) -> int:
        assert isinstance(buffer, ctypes.Array) and buffer._type_ is ctypes.c_char, type(buffer)
        assert by_value(size, ctypes.c_uint) <= len(buffer)
        buffer.value = self.driver_version.encode()
        return SUCCESS

    def nvmlSystemGetCudaDriverVersion(self, version: Any) -> int:
        out(version, ctypes.c_int).value = self.cuda_driver_version
        return SUCCESS

    def nvmlDeviceGetCount_v2(self, count: Any) -> int:
        out(count, ctypes.c_uint).value = len(self.gpus)
        return SUCCESS

    def nvmlDeviceGetHandleByIndex_v2(self, index: Any, device: Any) -> int:
        i = by_value(index, ctypes.c_uint)
        self.lookups.append(f"ByIndex({i})")
        if i >= len(self.gpus):
            return INVALID_ARGUMENT
        return self._hand_out(device, self.gpus[i])

    def _text(self, buffer: Any, size: Any, text: str) -> int:
        assert isinstance(buffer, ctypes.Array) and buffer._type_ is ctypes.c_char, type(buffer)
        if by_value(size, ctypes.c_uint) <= len(text):
            return INSUFFICIENT_SIZE
        buffer.value = text.encode()
        return SUCCESS

    def nvmlDeviceGetUUID(self, handle: Any, buffer: Any, size: Any) -> int:
        return self._text(buffer, size, self._gpu(handle).nvml_uuid)

    def nvmlDeviceGetName(self, handle: Any, buffer: Any, size: Any) -> int:
        return self._text(buffer, size, self._gpu(handle).name)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any, milliwatts: Any) -> int:
        out(milliwatts, ctypes.c_uint).value = self._gpu(handle).power_limit_mw
        return SUCCESS

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, clock: Any, mhz: Any) -> int:
        assert by_value(clock, ctypes.c_uint) == pynvml.NVML_CLOCK_SM
        out(mhz, ctypes.c_uint).value = self._gpu(handle).max_sm_clock_mhz
        return SUCCESS

    def nvmlDeviceGetApplicationsClock(self, handle: Any, clock: Any, mhz: Any) -> int:
        assert by_value(clock, ctypes.c_uint) == pynvml.NVML_CLOCK_SM
        out(mhz, ctypes.c_uint).value = self._gpu(handle).app_sm_clock_mhz
        return SUCCESS

    def nvmlDeviceGetHandleByUUID(self, uuid: Any, device: Any) -> int:
        text = self._string(uuid, "nvmlDeviceGetHandleByUUID")
        self.lookups.append(f"ByUUID({text})")
        if text is None:
            return INVALID_ARGUMENT
        return self._hand_out(device, next((g for g in self.gpus if g.nvml_uuid == text), None))

    def nvmlDeviceGetHandleByPciBusId_v2(self, bus_id: Any, device: Any) -> int:
        text = self._string(bus_id, "nvmlDeviceGetHandleByPciBusId_v2")
        self.lookups.append(f"ByPciBusId({text})")
        if text is None:
            return INVALID_ARGUMENT
        return self._hand_out(device, next((g for g in self.gpus if g.bus_id == text.lower()), None))

    def nvmlDeviceGetClockInfo(self, handle: Any, clock: Any, mhz: Any) -> int:
        assert by_value(clock, ctypes.c_uint) == pynvml.NVML_CLOCK_SM
        out(mhz, ctypes.c_uint).value = self._gpu(handle).sm_clock_mhz
        return SUCCESS

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any, reasons: Any) -> int:
        out(reasons, ctypes.c_ulonglong).value = self._gpu(handle).clock_events
        return SUCCESS

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any, reasons: Any) -> int:
        """The older driver's name for the same bits."""
        return self.nvmlDeviceGetCurrentClocksEventReasons(handle, reasons)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: Any, celsius: Any) -> int:
        assert by_value(sensor, ctypes.c_uint) == pynvml.NVML_TEMPERATURE_GPU
        out(celsius, ctypes.c_uint).value = self._gpu(handle).temperature_c
        return SUCCESS

    def nvmlDeviceGetPowerUsage(self, handle: Any, milliwatts: Any) -> int:
        out(milliwatts, ctypes.c_uint).value = self._gpu(handle).power_mw
        return SUCCESS

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any, millijoules: Any) -> int:
        """Millijoules since the driver loaded; each call reads the next of `energy_mj`."""
        target, gpu = out(millijoules, ctypes.c_ulonglong), self._gpu(handle)
        target.value = gpu.energy_mj.pop(0) if len(gpu.energy_mj) > 1 else gpu.energy_mj[0]
        return SUCCESS

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: Any, counter: Any, count: Any) -> int:
        assert by_value(error_type, ctypes.c_uint) == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        assert by_value(counter, ctypes.c_uint) == pynvml.NVML_VOLATILE_ECC
        out(count, ctypes.c_ulonglong).value = self._gpu(handle).ecc_uncorrected
        return SUCCESS

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: Any, count: Any, infos: Any) -> int:
        """The two-call protocol: a size query (no array), then an array of at least `count` slots."""
        processes = list(self._gpu(handle).processes)
        room = out(count, ctypes.c_uint)
        if infos is None:  # the size query
            room.value = len(processes)
            return INSUFFICIENT_SIZE if processes else SUCCESS
        assert isinstance(infos, ctypes.Array) and infos._type_ is pynvml.c_nvmlProcessInfo_v3_t, type(infos)
        assert room.value <= len(infos)
        if len(processes) > room.value:
            room.value = len(processes)
            return INSUFFICIENT_SIZE
        for slot, (pid, used) in zip(infos, processes):
            slot.pid = pid
            slot.usedGpuMemory = used if used is not None else pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
        room.value = len(processes)
        return SUCCESS

    def nvmlEventSetCreate(self, event_set: Any) -> int:
        target = out(event_set, pynvml.c_nvmlEventSet_t)
        self._sets.append(pynvml.struct_c_nvmlEventSet_t())
        target.contents = self._sets[-1]
        self._registered[ctypes.addressof(self._sets[-1])] = set()
        return SUCCESS

    def nvmlDeviceRegisterEvents(self, handle: Any, types: Any, event_set: Any) -> int:
        assert by_value(types, ctypes.c_ulonglong) == pynvml.nvmlEventTypeXidCriticalError
        self._registered[self._set_address(event_set)].add(ctypes.addressof(self._gpu(handle).struct))
        return SUCCESS

    def nvmlEventSetWait_v2(self, event_set: Any, data: Any, timeout_ms: Any) -> int:
        devices = self._registered[self._set_address(event_set)]
        event = out(data, pynvml.c_nvmlEventData_t)
        wait_s = by_value(timeout_ms, ctypes.c_uint) / 1e3
        with self._arrived:
            self._arrived.wait_for(lambda: any(ctypes.addressof(g.struct) in devices for g, _ in self._xids), wait_s)
            for i, (gpu, xid) in enumerate(self._xids):
                if ctypes.addressof(gpu.struct) in devices:
                    del self._xids[i]
                    event.device = ctypes.pointer(gpu.struct)
                    event.eventType, event.eventData = pynvml.nvmlEventTypeXidCriticalError, xid
                    return SUCCESS
        return TIMEOUT

    def nvmlEventSetFree(self, event_set: Any) -> int:
        del self._registered[self._set_address(event_set)]
        return SUCCESS


def install(monkeypatch, gpus: list[FakeGpu], visible: list[int] | None = None,
            missing: set[str] | None = None, cuda_runtime: bool = False,
            cuda_driver_version: int = 13000) -> FakeNvmlLib:
    """Fake NVML (pynvml's library and its function lookup) and torch's CUDA device properties:
    torch's `cuda:i` is `gpus[visible[i]]` (CUDA_VISIBLE_DEVICES renumbers torch's devices, NVML
    sees them all). torch's own helpers that read the properties (`get_device_capability`,
    `get_device_name`) then answer for the fake GPUs unchanged.

    `cuda_runtime` also fakes the CUDA runtime's answers torch asks it directly: CUDA is available,
    `device_count()` is the number of visible GPUs, the current device is 0, and a bf16 tensor can
    be made on any of them (as on every NVIDIA GPU, emulated before Ampere: what
    `torch.cuda.is_bf16_supported()` tries). Off by default: code that picks its device by
    `torch.cuda.is_available()` would otherwise put tensors on a GPU this machine lacks.
    monkeypatch undoes all of it after the test."""
    import torch

    nvml = FakeNvmlLib(gpus, missing, cuda_driver_version=cuda_driver_version)
    monkeypatch.setattr(pynvml, "nvmlLib", nvml)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer", nvml.function)
    order = [gpus[i] for i in (visible if visible is not None else range(len(gpus)))]

    def properties(device: Any = None) -> FakeProperties:
        index = torch.device(device).index if isinstance(device, (str, torch.device)) else (device or 0)
        return order[index or 0].properties()

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    if cuda_runtime:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(order))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)
    return nvml


def handle_of(gpu: FakeGpu) -> Any:
    """The handle pynvml returns for `gpu`, looked up by UUID through its real wrapper."""
    pynvml.nvmlInit()
    return pynvml.nvmlDeviceGetHandleByUUID(gpu.nvml_uuid)
