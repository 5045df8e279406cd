"""gpu_check's GPU-only checks on a GPU that NVML lets down, with NVML and CUDA faked at their lowest
layer (tests/fakes/fake_gpu.py): a missing handle, process memory or energy counter is a FAIL; SKIPPED
only for a cause detected and named (a container's PID namespace; a GPU before Volta).
"""

from __future__ import annotations

import os

import pytest

from benchmarks import gpu_check
from tests.builders import metrics_row
from tests.fakes.fake_gpu import FakeGpu, install

GIB = 1 << 30
UUID = "8b0b6d9e-2c3f-4a1e-9d7c-5b6a4f3e2d1c"
FALLBACK = metrics_row(mem=2.0, mem_source="torch-cuda-reserved-peak")  # NVML gave no figure for the run


def gpu(processes, major: int = 9, energy_mj=(1_000_000,)) -> FakeGpu:
    return FakeGpu(UUID, bus=0x07, processes=list(processes), major=major, energy_mj=list(energy_mj))


def test_nvml_that_cannot_find_the_gpu_fails():
    check = gpu_check.nvml_check(True, "")  # nothing faked: NVML has no driver on this machine
    assert check.status == "FAIL" and check.detail.startswith("NVML did not initialise")


def test_nvml_finding_the_gpu_by_uuid_passes(monkeypatch):
    install(monkeypatch, [gpu([(os.getpid(), GIB)])])
    check = gpu_check.nvml_check(True, "")
    assert check.status == "PASS" and f"GPU-{UUID}" in check.detail and "00000000:07:00.0" in check.detail


def test_memory_without_nvml_figure_fails_unless_a_container_hides_our_pid(monkeypatch):
    install(monkeypatch, [gpu([])])  # NVML lists nobody, not even us: NVML failing, not a container
    failed = gpu_check.memory_check(FALLBACK, 2 * GIB, True, "")
    assert failed.status == "FAIL" and "NVML lists no compute process" in failed.detail
    install(monkeypatch, [gpu([(977, 3 * GIB), (978, GIB)])])  # the host's pids, not ours
    skipped = gpu_check.memory_check(FALLBACK, 2 * GIB, True, "")
    assert skipped.status == "SKIPPED" and "a container's own PID namespace" in skipped.detail


def test_energy_without_a_counter_fails_on_volta_and_later_and_is_skipped_before(monkeypatch):
    blank = metrics_row(energy_per_item=None, energy_note="NVML has no energy counter for this GPU (Not Supported)")
    install(monkeypatch, [gpu([], major=9)])
    assert gpu_check.energy_check(blank, True, "").status == "FAIL"
    install(monkeypatch, [gpu([], major=6)])  # a Pascal GPU: NVML's total-energy counter starts with Volta
    skipped = gpu_check.energy_check(blank, True, "")
    assert skipped.status == "SKIPPED" and "older than Volta (sm_60)" in skipped.detail


@pytest.mark.parametrize("check", ["nvml", "memory", "energy"])
def test_on_a_cpu_they_say_skipped_and_why(check):
    row = metrics_row(energy_note="no energy counter on a CPU")
    found = {"nvml": lambda: gpu_check.nvml_check(False, "no GPU"),
             "memory": lambda: gpu_check.memory_check(row, None, False, "no GPU"),
             "energy": lambda: gpu_check.energy_check(row, False, "no GPU")}[check]()
    assert found.status == "SKIPPED" and found.detail.startswith("no GPU")


def test_memory_compares_nvml_with_torchs_reserved_at_the_same_instants(monkeypatch):
    """NVML's figure is sampled at MemoryProbe's instants (after the matmul peak's empty_cache, at pass
    ends); torch's whole-run reserved peak also holds build and autotune transients released before
    NVML looked. Before: compared with that peak, NVML could read smaller and the check FAILed."""
    import torch

    from workers.measure.device import MemoryProbe

    install(monkeypatch, [gpu([(os.getpid(), 10 * GIB)])])
    reserved = iter([9 * GIB, int(9.5 * GIB)])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: next(reserved))
    with gpu_check.instruments() as seen:
        probe = MemoryProbe(torch.device("cuda:0"))
        probe.sample(), probe.sample()
    assert seen.reserved_at_samples == [9 * GIB, int(9.5 * GIB)]
    row = metrics_row(mem=10.0, mem_source="nvml-process")
    assert gpu_check.memory_check(row, max(seen.reserved_at_samples), True, "").status == "PASS"
    assert gpu_check.memory_check(row, 12 * GIB, True, "").status == "FAIL"  # the whole-run peak (build transients)


def test_the_assigned_gpu_check_compares_uuids_with_nvmls(monkeypatch):
    gpus = [FakeGpu(f"5d6b0a1e-0000-0000-0000-00000000000{i}", bus=0x07 + 8 * i) for i in range(4)]
    install(monkeypatch, gpus, visible=[2], cuda_runtime=True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    passed = gpu_check.assigned_gpu_check(True)
    assert passed.status == "PASS" and gpus[2].nvml_uuid in passed.detail
    install(monkeypatch, gpus, visible=[0], cuda_runtime=True)  # CUDA started before the variable was set
    failed = gpu_check.assigned_gpu_check(True)
    assert failed.status == "FAIL" and failed.detail.startswith("gpus_per_worker: Ray gave this worker GPU 2")


def test_the_ort_providers_check_fails_on_a_session_that_lost_cuda(monkeypatch, tmp_path):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "preload_dlls", lambda **kw: None)
    failed = gpu_check.ort_providers_check(True, tmp_path)  # this machine's real session runs on the CPU
    assert failed.status == "FAIL" and "could not load its CUDA provider" in failed.detail
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert gpu_check.ort_providers_check(True, tmp_path).status == "SKIPPED"


@pytest.mark.parametrize("name", ["assigned GPU", "ORT providers", "steady vs burst peak", "watch on/off"])
def test_the_device_checks_say_skipped_on_a_cpu(tmp_path, name):
    found = {c.name: c for c in gpu_check.device_checks(False, {}, tmp_path)}[name]
    assert found.status == "SKIPPED" and found.detail.startswith("no GPU")
