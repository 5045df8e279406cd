"""libnvidia-ml as pynvml's ctypes wrappers call it, for tests on machines without an NVIDIA GPU.

`FakeNvmlLib` stands for the C library, not for pynvml: pynvml's own wrappers (`nvmlDeviceGetClockInfo`,
`nvmlDeviceGetComputeRunningProcesses`, `nvmlEventSetWait`, ...) run unchanged, build their ctypes
arguments and call the functions here, which check that each argument has the C type the real
function takes (a `c_uint` by value, a pointer made with `byref` to a `c_ulonglong`, a
`c_nvmlDevice_t` handle this library handed out, ...) and write their results through the pointers,
as the driver does. `install` puts it behind `pynvml._nvmlGetFunctionPointer` and `pynvml.nvmlLib`.
A test changes a `FakeGpu`'s state (clocks, reasons, processes, XIDs) to stage what NVML reports.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import pynvml

SUCCESS, NOT_SUPPORTED, NOT_FOUND, INSUFFICIENT_SIZE, TIMEOUT = (
    pynvml.NVML_SUCCESS, pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NOT_FOUND,
    pynvml.NVML_ERROR_INSUFFICIENT_SIZE, pynvml.NVML_ERROR_TIMEOUT)


def out(arg: Any, ctype: type) -> Any:
    """The object behind a `byref(...)` argument, which must point at a `ctype`."""
    assert type(arg).__name__ == "CArgObject", f"expected a pointer made with byref, got {type(arg).__name__}"
    assert type(arg._obj) is ctype, f"expected a pointer to {ctype.__name__}, got one to {type(arg._obj).__name__}"
    return arg._obj


def by_value(arg: Any, ctype: type) -> int:
    assert type(arg) is ctype, f"expected a {ctype.__name__} by value, got {type(arg).__name__}"
    return arg.value


@dataclass
class FakeGpu:
    """One GPU's state as NVML would report it now; tests change it while a pass runs."""

    uuid: bytes = b"GPU-5d6b0a1e-0000-0000-0000-000000000007"
    sm_clock_mhz: int = 1980
    clock_events: int = 0  # nvmlClocksEventReason* bits
    temperature_c: int = 45
    power_mw: int = 350_000
    ecc_uncorrected: int = 0
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, used bytes)
    unsupported: set[str] = field(default_factory=set)  # C functions that answer NOT_SUPPORTED here
    struct: Any = field(default_factory=pynvml.struct_c_nvmlDevice_t)  # what its handle points at


class FakeNvmlLib:
    def __init__(self, gpus: list[FakeGpu], missing: set[str] | None = None) -> None:
        self.gpus = gpus
        self.missing = set(missing or ())  # C functions this "driver" does not have (an older one)
        self.calls: list[str] = []
        self._xids: list[tuple[FakeGpu, int]] = []
        self._arrived = threading.Condition()
        self._sets: list[Any] = []
        self._registered: dict[int, set[int]] = {}  # event set address -> device addresses

    def function(self, name: str) -> Callable[..., int]:
        """What `pynvml._nvmlGetFunctionPointer` returns: the C function `name`."""
        if name in self.missing or not hasattr(self, name):
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

    def _gpu(self, handle: Any) -> FakeGpu:
        assert isinstance(handle, pynvml.c_nvmlDevice_t) and handle, f"not a device handle: {handle!r}"
        address = ctypes.addressof(handle.contents)
        found = [g for g in self.gpus if ctypes.addressof(g.struct) == address]
        assert found, "a handle this library never handed out"
        return found[0]

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
        buffer.value = b"580.65.06"
        return SUCCESS

    def nvmlDeviceGetHandleByUUID(self, uuid: Any, device: Any) -> int:
        assert type(uuid) is ctypes.c_char_p and isinstance(uuid.value, bytes), f"uuid must be a C string: {uuid!r}"
        target = out(device, pynvml.c_nvmlDevice_t)
        for gpu in self.gpus:
            if gpu.uuid == uuid.value:
                target.contents = gpu.struct
                return SUCCESS
        return NOT_FOUND

    def nvmlDeviceGetClockInfo(self, handle: Any, clock: Any, mhz: Any) -> int:
        assert by_value(clock, ctypes.c_uint) == pynvml.NVML_CLOCK_SM
        out(mhz, ctypes.c_uint).value = self._gpu(handle).sm_clock_mhz
        return SUCCESS

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any, reasons: Any) -> int:
        out(reasons, ctypes.c_ulonglong).value = self._gpu(handle).clock_events
        return SUCCESS

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any, reasons: Any) -> int:
        return self.nvmlDeviceGetCurrentClocksEventReasons(handle, reasons)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: Any, celsius: Any) -> int:
        assert by_value(sensor, ctypes.c_uint) == pynvml.NVML_TEMPERATURE_GPU
        out(celsius, ctypes.c_uint).value = self._gpu(handle).temperature_c
        return SUCCESS

    def nvmlDeviceGetPowerUsage(self, handle: Any, milliwatts: Any) -> int:
        out(milliwatts, ctypes.c_uint).value = self._gpu(handle).power_mw
        return SUCCESS

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: Any, counter: Any, count: Any) -> int:
        assert by_value(error_type, ctypes.c_uint) == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        assert by_value(counter, ctypes.c_uint) == pynvml.NVML_VOLATILE_ECC
        out(count, ctypes.c_ulonglong).value = self._gpu(handle).ecc_uncorrected
        return SUCCESS

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: Any, count: Any, infos: Any) -> int:
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
            slot.pid, slot.usedGpuMemory = pid, used
        room.value = len(processes)
        return SUCCESS

    def nvmlEventSetCreate(self, event_set: Any) -> int:
        target = out(event_set, pynvml.c_nvmlEventSet_t)
        self._sets.append(pynvml.struct_c_nvmlEventSet_t())
        target.contents = self._sets[-1]
        self._registered[ctypes.addressof(self._sets[-1])] = set()
        return SUCCESS

    def _set_address(self, event_set: Any) -> int:
        assert isinstance(event_set, pynvml.c_nvmlEventSet_t) and event_set, f"not an event set: {event_set!r}"
        address = ctypes.addressof(event_set.contents)
        assert address in self._registered, "an event set this library never made (or freed)"
        return address

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


def install(monkeypatch, lib: FakeNvmlLib) -> FakeNvmlLib:
    """Route pynvml's function lookups to `lib`; monkeypatch undoes it after the test."""
    monkeypatch.setattr(pynvml, "nvmlLib", lib)
    monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer", lib.function)
    return lib


def handle_of(gpu: FakeGpu) -> Any:
    """The handle pynvml returns for `gpu`, looked up by UUID through its real wrapper."""
    pynvml.nvmlInit()
    return pynvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
