"""What NVML sees while a pass runs (workers/measure/device_watch.py), against a fake libnvidia-ml under
pynvml's real ctypes wrappers (tests/fakes/fake_gpu.py): clocks, throttle reasons, XID and ECC errors,
other processes; then the same figures through a real pass of a tiny model and into the row."""

from __future__ import annotations

import os

import pynvml
import pytest

from orchestrator.spec import validate
from tests.builders import job, run_on, worker_runtime
from tests.fakes.fake_gpu import FakeGpu, FakeNvmlLib, handle_of, install
from workers.contract import ShardTask
from workers.measure.device_watch import DeviceWatch

HW_THERMAL, SW_POWER_CAP, IDLE = (pynvml.nvmlClocksEventReasonHwThermalSlowdown,
                                  pynvml.nvmlClocksEventReasonSwPowerCap, pynvml.nvmlClocksEventReasonGpuIdle)
ME = os.getpid()


@pytest.fixture()
def nvml(monkeypatch) -> FakeNvmlLib:
    """One fake GPU on which this process holds a context, behind pynvml's real wrappers."""
    return install(monkeypatch, [FakeGpu(processes=[(ME, 2 << 30)])])


@pytest.fixture()
def gpu(nvml) -> FakeGpu:
    return nvml.gpus[0]


def watch_of(gpu: FakeGpu) -> DeviceWatch:
    return DeviceWatch(handle_of(gpu))


def test_a_quiet_pass_reports_its_figures_and_nothing_else(gpu):
    watch = watch_of(gpu)
    watch.start()
    health = watch.stop()
    watch.close()
    assert health.samples >= 2 and health.sm_clock_mhz_min == 1980 and health.temperature_c_max == 45
    assert health.power_w_max == 350.0 and health.ecc_errors == 0
    assert (health.clock_events, health.xid_errors, health.other_pids, health.note) == ([], [], [], "")


def test_what_happens_during_the_pass_is_seen_by_the_sampler_and_the_last_sample(nvml, gpu):
    """Throttling, a hotter GPU, an XID, an ECC error and another process, all staged mid-pass."""
    watch = watch_of(gpu)
    watch.start()
    gpu.sm_clock_mhz, gpu.clock_events, gpu.temperature_c, gpu.power_mw = 1245, HW_THERMAL | SW_POWER_CAP, 88, 700_000
    gpu.processes.append((4242, 1 << 30))
    gpu.ecc_uncorrected += 2
    nvml.raise_xid(gpu, 79)
    health = watch.stop()
    watch.close()
    assert health.sm_clock_mhz_min == 1245 and health.temperature_c_max == 88 and health.power_w_max == 700.0
    assert health.clock_events == ["sw_power_cap", "hw_thermal"]
    assert health.xid_errors == [79] and health.ecc_errors == 2 and health.other_pids == [4242]
    assert "nvmlEventSetWait_v2" in nvml.calls  # the XID came through the event set, not a guess


def test_idle_samples_do_not_count_as_the_lowest_clock(gpu):
    gpu.clock_events, gpu.sm_clock_mhz = IDLE, 210  # between kernels the clock drops: not a slowdown
    watch = watch_of(gpu)
    watch.start()
    gpu.clock_events, gpu.sm_clock_mhz = 0, 1755
    health = watch.stop()
    assert health.sm_clock_mhz_min == 1755 and health.clock_events == []


def test_figures_nvml_cannot_read_are_blank_with_the_reason(nvml, gpu):
    """No ECC counter (a GPU without ECC), no XID events, an older driver without the "clocks event"
    names (the "throttle reasons" call answers instead), and a PID namespace hiding our pid."""
    gpu.unsupported = {"nvmlDeviceGetTotalEccErrors", "nvmlDeviceRegisterEvents"}
    gpu.processes = [(1, 1 << 30)]  # NVML lists host pids; ours is not among them
    gpu.clock_events = HW_THERMAL
    nvml.missing.add("nvmlDeviceGetCurrentClocksEventReasons")
    watch = watch_of(gpu)
    watch.start()
    health = watch.stop()
    watch.close()
    assert health.ecc_errors is None and health.other_pids is None and health.clock_events == ["hw_thermal"]
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in nvml.calls
    assert "ecc: " in health.note and "xid events: " in health.note and "PID namespace" in health.note


def test_a_real_pass_carries_the_gpus_figures_in_its_shard_result(gpu):
    """A tiny BERT's infer pass on the CPU with the watch of a (fake) GPU: the sampler runs beside the
    timed calls and what happened during the pass is in the result."""
    runtime, _ = worker_runtime(validate(job(passes=["infer"]), "x").worker_config())
    engine = runtime.engines["infer"]
    forward, batches = engine.forward, []

    def throttled_after_the_first_batch(inputs):
        batches.append(1)
        if len(batches) == 2:
            gpu.clock_events, gpu.sm_clock_mhz = HW_THERMAL, 1100
            gpu.processes.append((31337, 1 << 20))
        return forward(inputs)

    engine.forward = throttled_after_the_first_batch
    runtime.device_watch = watch_of(gpu)
    try:
        result = run_on(runtime, ShardTask(0, 0, 16, "infer"))
    finally:
        runtime.close()
    assert len(batches) > 2 and result.health.samples >= 2
    assert result.health.clock_events == ["hw_thermal"] and result.health.sm_clock_mhz_min == 1100
    assert result.health.other_pids == [31337]


def test_a_cpu_worker_has_no_watch():
    import torch

    assert DeviceWatch.for_device(torch.device("cpu")) is None


def legacy_pynvml():
    """The deprecated `pynvml` package (<= 11.5.3) as a module object: pynvml's real wrappers (over the
    fake library), without `nvmlDeviceGetCurrentClocksEventReasons`, which that package never had."""
    import types

    legacy = types.ModuleType("pynvml")
    legacy.__dict__.update({k: v for k, v in vars(pynvml).items() if k != "nvmlDeviceGetCurrentClocksEventReasons"})
    legacy.__file__ = "/usr/lib/python3/dist-packages/pynvml/nvml.py"
    return legacy


def test_a_legacy_pynvml_without_the_clock_events_wrapper_reads_throttle_reasons(monkeypatch, nvml, gpu):
    """Before: the AttributeError escaped `start()` and every pass of the run failed."""
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", legacy_pynvml())
    gpu.clock_events = HW_THERMAL
    watch = watch_of(gpu)
    watch.start()
    health = watch.stop()
    watch.close()
    assert health.clock_events == ["hw_thermal"] and health.sm_clock_mhz_min == 1980
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in nvml.calls
    assert "nvmlDeviceGetCurrentClocksEventReasons" not in nvml.calls
    assert "legacy pynvml package shadows nvidia-ml-py" in health.note


def test_a_wrapper_missing_from_pynvml_leaves_its_figure_blank_and_the_pass_runs(monkeypatch, nvml, gpu):
    """Any wrapper a pynvml lacks (AttributeError) blanks its figure with the reason; the watch never fails a pass."""
    import sys

    legacy = legacy_pynvml()
    del legacy.nvmlDeviceGetPowerUsage, legacy.nvmlDeviceGetCurrentClocksThrottleReasons
    monkeypatch.setitem(sys.modules, "pynvml", legacy)
    watch = watch_of(gpu)
    watch.start()
    health = watch.stop()
    watch.close()
    assert health.power_w_max is None and health.clock_events == [] and health.temperature_c_max == 45
    assert "power: " in health.note and "clock events: " in health.note


def test_a_loadgen_test_reads_energy_and_starts_the_watch_once_not_around_every_batch(nvml, gpu):
    """Before: `run_samples` read NVML's energy counter before and after each LoadGen batch, on the
    query path. Over a test (`begin_watch` .. `end_watch`) the counter is read at the test's two ends
    and one watch covers the test; the batches carry no energy of their own and say why."""
    from workers.actor import BenchWorker
    from workers.contract import SampleBatch
    from workers.measure.energy import EnergyCounter

    gpu.energy_mj = [1_000_000, 1_000_500, 1_001_000, 1_001_500, 1_002_000]
    worker = BenchWorker(validate(job(passes=["infer"]), "x").worker_config())
    worker.setup()
    runtime = worker._runtime  # the CPU run, with the counter and watch of the fake GPU in place of none
    runtime.energy, runtime.device_watch = EnergyCounter(handle_of(gpu), device_key="node/GPU-7"), watch_of(gpu)
    before = nvml.calls.count("nvmlDeviceGetTotalEnergyConsumption")
    worker.begin_watch("infer")
    batches = [worker.run_samples(SampleBatch(i, (i, i + 1), "infer")) for i in range(4)]
    span = worker.end_watch("infer")
    assert nvml.calls.count("nvmlDeviceGetTotalEnergyConsumption") - before == 2
    assert span.error is None and span.energy_joules == pytest.approx(0.5)
    assert span.energy_counters == {"node/GPU-7": [pytest.approx(1000.0), pytest.approx(1000.5)]}
    assert span.start_ts < span.end_ts
    assert span.health is not None and span.health.samples >= 2 and span.health.sm_clock_mhz_min == 1980
    assert all(b.error is None and b.energy_joules is None and b.health is None for b in batches)
    assert all("read over the LoadGen test" in b.energy_note for b in batches)
    again = worker.end_watch("infer")  # no span open (as for a worker restarted during the test): blank, saying why
    worker.close()
    assert again.energy_joules is None and "not watched" in again.energy_note
