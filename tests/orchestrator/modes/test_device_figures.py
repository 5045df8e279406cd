"""A real run's row (tiny BERT, in-process, on this CPU): MFU against the measured matmul peak, and
the GPU watch's figures and verdict, with NVML faked at the C library (tests/fakes/fake_gpu.py)."""

from __future__ import annotations

import os

import pynvml
import pytest

from orchestrator.driver import run_job
from orchestrator.spec import validate
from tests.builders import job, stored_rows
from tests.fakes.fake_gpu import FakeGpu, handle_of, install
from workers.measure.device_watch import DeviceWatch

pytestmark = pytest.mark.slow


def test_a_cpu_run_has_an_mfu_against_its_measured_peak_and_blank_gpu_figures(tmp_path):
    row = run_job(validate(job(engine_cache=str(tmp_path / "engines")), "x"), results_dir=tmp_path / "results",
                  in_process=True).row
    assert row.MFU is None and "CPU" in row.mfu_note  # no datasheet peak for a CPU: blank, saying why
    assert row.peak_flops_measured > 0 and 0 < row.MFU_measured < 1 and row.mfu_measured_note is None
    assert row.MFU_measured == pytest.approx(row.flops_per_item * row.p_infer_core / row.peak_flops_measured)
    assert (row.sm_clock_mhz_min, row.throttle_reasons, row.foreign_processes) == (None, None, None)
    assert "not watched" in row.gpu_health_note and "GPU" not in row.verdict_reasons
    (stored,) = stored_rows(tmp_path / "results")
    assert stored["MFU_measured"] == row.MFU_measured and stored["peak_flops_measured"] == row.peak_flops_measured


LOADS = {"offline": {}, "loadgen single_stream": {"load": {"kind": "loadgen", "scenario": "single_stream"}}}


@pytest.mark.parametrize("load", sorted(LOADS))
def test_a_gpu_that_throttles_and_is_shared_makes_the_row_invalid_in_every_mode(tmp_path, monkeypatch, load):
    """The worker's watch on a (fake) GPU slowed by heat, with another process on it: the row carries
    the figures and the verdict names both, whichever mode ran the job (one watch, one verdict)."""
    gpu = FakeGpu(processes=[(os.getpid(), 1 << 30), (4242, 1 << 30)], sm_clock_mhz=1185,
                  clock_events=pynvml.nvmlClocksEventReasonHwThermalSlowdown | pynvml.nvmlClocksEventReasonSwPowerCap)
    install(monkeypatch, [gpu])
    monkeypatch.setattr(DeviceWatch, "for_device", classmethod(lambda cls, device: cls(handle_of(gpu))))
    raw = job(engine_cache=str(tmp_path / "engines"), **LOADS[load])
    row = run_job(validate(raw, "x"), results_dir=tmp_path, in_process=True).row
    assert (row.sm_clock_mhz_min, row.throttle_reasons, row.temperature_c_max) == (1185, "hw_thermal,sw_power_cap", 45)
    host = os.uname()[1]
    assert (row.foreign_processes, row.foreign_pids, row.xid_errors, row.ecc_errors) == (1, f"4242@{host}", "", 0)
    assert row.verdict == "INVALID"
    slowed = "GPU clocks slowed during the measured pass: hw_thermal (lowest busy SM clock 1185 MHz)"
    assert slowed in row.verdict_reasons
    assert "1 other process(es) on the GPU(s) during the measured pass: 4242@" in row.verdict_reasons
    if load != "offline":
        assert row.loadgen_result == "VALID" and row.verdict_profile == "quick+loadgen-quick"  # LoadGen's own verdict stands beside
