"""What the GPU did while a pass ran: SM clock, clock event (throttle) reasons, temperature, power,
XID and ECC errors, and the other processes on it, read from NVML.

Why: a GPU that slowed down for heat or a power brake, logged an XID or an uncorrected ECC error, or
was shared with another process while it was measured gives figures that describe the incident, not
the system under test, and nothing in the timings says so. The merge puts what was seen in the row
(`sm_clock_mhz_min`, `throttle_reasons`, `foreign_processes`, ...) and the verdict makes the row
INVALID with the reason (orchestrator/metrics/verdict.py).

How: `start` takes one sample and starts a sampler thread; `stop` (after the pass's stopwatch) stops
it and takes a last one, so even a pass shorter than the interval has two samples. The thread
samples every SAMPLE_S and in between waits on an NVML event set registered for XID critical errors
(the wait is its sleep, in slices of EVENT_WAIT_S so `stop` returns promptly); ctypes releases the
GIL while NVML runs. So NVML calls do run *during* timed model calls, on this thread, never on the
pass's own: on purpose. Between batches the GPU is idle, and NVML's SM clock and clock-event reasons
would describe an idle GPU, not the one under load; a throttle that recovers within a long batch
would go unseen. What the concurrent calls cost the timed figures (five driver queries per 100 ms)
is measured on a GPU by benchmarks/gpu_check.py, which runs a pass with the watch on and off. A
LoadGen test runs one watch over the whole test (`WorkerRuntime.begin_watch`), not one per batch.
Uncorrected ECC errors come from the volatile counter, read at both ends. The lowest SM clock leaves
out samples whose reasons include "GPU idle" (the clock drops whenever nothing runs, between shards
too). Processes: the compute processes NVML lists on the device, ours left out here (a
tensor-parallel group's other ranks by its rank 0, co-located workers of the run by the merge); when
NVML never lists our own pid (a container with its own PID namespace) other processes cannot be told
from ours, and the figure says so.

A figure NVML cannot read on this GPU (NotSupported, an old driver) is left blank with the reason in
`note`; on a CPU, or without NVML, there is no watch at all (blank columns, not failures).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

from workers.contract import DeviceHealth

SAMPLE_S = 0.1
EVENT_WAIT_S = 0.02
# NVML's clock event reason bits (nvmlClocksEventReason*), by the names the row uses
CLOCK_EVENTS = {
    0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x10: "sync_boost",
    0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clocks",
}
IDLE = 0x1


def reason_names(mask: int) -> list[str]:
    """The named reasons in an NVML clock-event mask, GPU idle left out (it is not a slowdown)."""
    return [name for bit, name in CLOCK_EVENTS.items() if mask & bit and bit != IDLE]


class DeviceWatch:
    """NVML's view of one GPU over each pass; `handle` from `workers.measure.device.nvml_handle`."""

    def __init__(self, handle: Any, pid: int | None = None) -> None:
        import pynvml

        self._nvml = pynvml
        self.handle = handle
        self.pid = os.getpid() if pid is None else pid
        self._off: dict[str, str] = {}  # figure -> why it cannot be read on this GPU
        self._events = self._register_events()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._health = DeviceHealth()
        self._mask = 0
        self._seen_self = False
        self._pids: set[int] = set()
        self._ecc_before: int | None = None

    @classmethod
    def for_device(cls, device) -> DeviceWatch | None:
        """A watch of `device`'s GPU, or None on a CPU or where NVML gives no handle."""
        if device.type != "cuda":
            return None
        from workers.measure.device import nvml_handle

        handle = nvml_handle(device)
        return cls(handle) if handle is not None else None

    # -- one pass
    def start(self) -> None:
        """Begin a pass (a pass that raised before `stop` has its sampler stopped here)."""
        if self._thread is not None:
            self.stop()
        self._health, self._mask, self._seen_self, self._pids = DeviceHealth(), 0, False, set()
        self._ecc_before = self._ecc()
        self._sample()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="raybench-device-watch", daemon=True)
        self._thread.start()

    def stop(self) -> DeviceHealth:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._drain_events()
        self._sample()
        after = self._ecc()
        health = self._health
        health.ecc_errors = after - self._ecc_before if after is not None and self._ecc_before is not None else None
        health.clock_events = reason_names(self._mask)
        health.other_pids = sorted(self._pids) if self._seen_self else None
        if not self._seen_self and "processes" not in self._off:
            self._off["processes"] = ("NVML never listed this worker's pid (a container's PID namespace?): other "
                                      "processes cannot be told from ours")
        health.note = "; ".join(f"{what}: {why}" for what, why in self._off.items())
        return health

    def close(self) -> None:
        if self._thread is not None:
            self.stop()
        if self._events is not None:
            try:
                self._nvml.nvmlEventSetFree(self._events)
            except self._nvml.NVMLError:
                pass  # the driver dropped it already
            self._events = None

    # -- the sampler
    def _run(self) -> None:
        while not self._stopping.is_set():
            waited = 0.0
            while waited < SAMPLE_S and not self._stopping.is_set():
                self._wait_events(EVENT_WAIT_S)
                waited += EVENT_WAIT_S
            self._sample()

    def _sample(self) -> None:
        nvml, h, health = self._nvml, self.handle, self._health
        health.samples += 1
        mask = self._read("clock events", self._clock_events)
        self._mask |= mask or 0
        clock = self._read("sm clock", lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))
        if clock is not None and not (mask or 0) & IDLE:
            health.sm_clock_mhz_min = clock if health.sm_clock_mhz_min is None else min(health.sm_clock_mhz_min, clock)
        temperature = self._read("temperature", lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
        if temperature is not None:
            health.temperature_c_max = max(temperature, health.temperature_c_max or temperature)
        milliwatts = self._read("power", lambda: nvml.nvmlDeviceGetPowerUsage(h))
        if milliwatts is not None:
            health.power_w_max = max(milliwatts / 1e3, health.power_w_max or 0.0)
        processes = self._read("processes", lambda: nvml.nvmlDeviceGetComputeRunningProcesses(h))
        for process in processes or []:
            if process.pid == self.pid:
                self._seen_self = True
            else:
                self._pids.add(process.pid)

    def _clock_events(self) -> int:
        """The clock event reasons by their current name, else by the older "throttle reasons" name
        (the same bits): a driver before 535 lacks the C function (FunctionNotFound), and a legacy
        `pynvml` package (<= 11.5, in many GPU images, shadowing nvidia-ml-py's module) lacks the
        Python wrapper (AttributeError). Which one answered goes into the note."""
        nvml = self._nvml
        current = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if current is not None:
            try:
                return current(self.handle)
            except nvml.NVMLError_FunctionNotFound:
                self._off.setdefault("clock events name", "the driver predates nvmlDeviceGetCurrentClocksEventReasons: "
                                                          "read as throttle reasons")
        else:
            self._off.setdefault("clock events name", f"pynvml {getattr(nvml, '__file__', '?')} has no "
                                 "nvmlDeviceGetCurrentClocksEventReasons (a legacy pynvml package shadows "
                                 "nvidia-ml-py; pip uninstall pynvml): read as throttle reasons")
        return nvml.nvmlDeviceGetCurrentClocksThrottleReasons(self.handle)

    def _ecc(self) -> int | None:
        nvml = self._nvml
        return self._read("ecc", lambda: nvml.nvmlDeviceGetTotalEccErrors(
            self.handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC))

    def _read(self, what: str, read: Callable[[], Any]) -> Any:
        """`read()`, or None once NVML has said it cannot (the reason is kept for the note)."""
        if what in self._off:
            return None
        try:
            return read()
        except (self._nvml.NVMLError, AttributeError) as exc:  # AttributeError: a pynvml without that wrapper
            self._off[what] = str(exc) or type(exc).__name__
            return None

    # -- XID events
    def _register_events(self) -> Any:
        nvml = self._nvml
        try:
            events = nvml.nvmlEventSetCreate()
            nvml.nvmlDeviceRegisterEvents(self.handle, nvml.nvmlEventTypeXidCriticalError, events)
            return events
        except (nvml.NVMLError, AttributeError) as exc:
            self._off["xid events"] = str(exc) or type(exc).__name__
            return None

    def _wait_events(self, seconds: float) -> bool:
        """Wait up to `seconds` for an XID event and record it; False when none came."""
        if self._events is None:
            self._stopping.wait(seconds)
            return False
        nvml = self._nvml
        try:
            data = nvml.nvmlEventSetWait(self._events, int(seconds * 1000))
        except nvml.NVMLError_Timeout:
            return False
        except nvml.NVMLError as exc:
            self._off["xid events"] = str(exc)
            self._events = None
            return False
        if data.eventType & nvml.nvmlEventTypeXidCriticalError:
            self._health.xid_errors.append(int(data.eventData))
        return True

    def _drain_events(self) -> None:
        while self._events is not None and self._wait_events(0.0):
            pass
