"""The measured matmul peak: what it times, its cache (miss, hit, key) and where a worker reports it."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch

from orchestrator.spec import validate
from tests.builders import job, worker_runtime
from workers.measure import matmul_peak
from workers.measure.matmul_peak import MatmulPlan, key_fields, measure_matmul_flops, measured_peak

CPU = torch.device("cpu")
SMALL = MatmulPlan(min_n=64, max_n=128, target_call_s=10.0, per_call=2, warmup=1, seconds=0.0, min_rounds=2)
VERSIONS = {"torch": "2.13.0", "cuda": "", "nvidia_driver": "580.65.06"}


def entries(root):
    """The published cache entries (folders; each has a .lock file beside it)."""
    return [p for p in root.glob("peak-*") if p.is_dir()]


def test_the_peak_is_the_steady_figure_of_square_matmuls_at_the_precision(monkeypatch):
    """2 n^3 FLOPs per matmul, `per_call` matmuls per timed call; a size's figure is the median of
    the later half of its calls and the best size wins; the timer is the project's CoreTimer. Sizes
    double from min_n to max_n while a call stays short."""
    calls: list[tuple[int, torch.dtype]] = []
    real_mm = torch.mm

    def counted_mm(a, b, out):
        calls.append((a.shape[0], a.dtype))
        return real_mm(a, b, out=out)

    plan = dataclasses.replace(SMALL, min_rounds=4)
    # n=64: 4, 1, 3, 3 ms (steady 3 ms); n=128: 6, 8, 10, 12 ms (steady 11 ms, 2x the work of 64 in 8x the FLOPs)
    seconds = iter([0.004, 0.001, 0.003, 0.003, 0.006, 0.008, 0.010, 0.012])
    monkeypatch.setattr(matmul_peak.CoreTimer, "time", lambda self, fn: (fn(), next(seconds)))
    monkeypatch.setattr(torch, "mm", counted_mm)
    found = measure_matmul_flops(CPU, "bf16", plan)
    assert found.n == 128 and found.flops == pytest.approx(2 * 2 * 128**3 / 0.011)
    assert found.burst_flops == pytest.approx(2 * 2 * 128**3 / 0.006) and found.rounds == 4
    assert {dtype for _, dtype in calls} == {torch.bfloat16}
    assert [n for n, _ in calls] == [64] * 10 + [128] * 10  # (1 warm-up + 4 timed) calls x 2 matmuls per size


class ThrottlingDevice:
    """torch.mm on a device that bursts, then settles: each call sleeps `burst_s` for the first
    `burst_calls` calls (a GPU at its boost clock), then `steady_s` (the clock its power limit
    sustains). Timed by the real CoreTimer (perf_counter on the CPU)."""

    def __init__(self, monkeypatch, burst_calls: int, burst_s: float, steady_s: float) -> None:
        self.calls, self.burst_calls, self.burst_s, self.steady_s = 0, burst_calls, burst_s, steady_s
        monkeypatch.setattr(torch, "mm", self.mm)

    def mm(self, a, b, out):
        self.calls += 1
        time.sleep(self.burst_s if self.calls <= self.burst_calls else self.steady_s)
        return out


def test_a_burst_before_the_clock_settles_is_not_the_peak(monkeypatch):
    """Before: the fastest of five calls after two warm-ups, ~40 ms on a GPU: the boost-clock burst.
    Here the device is 2x slower once it settles; the figure is the settled one, the burst kept beside."""
    plan = MatmulPlan(min_n=64, max_n=64, target_call_s=0.0, per_call=1, warmup=2, seconds=0.4, min_rounds=8)
    device = ThrottlingDevice(monkeypatch, burst_calls=8, burst_s=0.005, steady_s=0.010)
    found = measure_matmul_flops(CPU, "fp32", plan)
    work = 2.0 * 64**3
    assert found.flops == pytest.approx(work / 0.010, rel=0.15)  # the settled rate (sleep overshoots a little)
    assert found.burst_flops == pytest.approx(work / 0.005, rel=0.15)
    assert found.rounds >= 30 and device.calls == plan.warmup + found.rounds


def test_the_cpu_measurement_stays_short():
    """It runs at every worker setup on a cache miss: about 1 s on this 2-core VM (fp32)."""
    found = measure_matmul_flops(CPU, "fp32")
    assert found.seconds < 5 and found.rounds >= matmul_peak.CPU_PLAN.min_rounds


def test_fp32_is_measured_without_tf32_and_the_jobs_setting_is_restored():
    seen = []
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        with matmul_peak.matmul_precision("highest"):
            seen.append(torch.get_float32_matmul_precision())
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
    assert seen == ["highest"] and matmul_peak.MATMUL_DTYPES["fp32"] == (torch.float32, "highest")


def test_a_real_cpu_measurement_is_a_plausible_figure():
    found = measure_matmul_flops(CPU, "fp32", SMALL)
    assert found.n in (64, 128) and 1e7 < found.flops < 1e13 and found.seconds > 0


def test_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    """The second call (a second run on the same machine) reads the figure back and times no matmul."""
    monkeypatch.setattr(matmul_peak, "plan_for", lambda device: SMALL)
    calls = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b, out: calls.append(a.shape[0]) or real_mm(a, b, out=out))
    first = measured_peak(CPU, "fp32", tmp_path, VERSIONS)
    measured = len(calls)
    again = measured_peak(CPU, "fp32", tmp_path, VERSIONS)
    assert measured > 0 and len(calls) == measured  # the second call timed nothing
    assert (first.cache_hit, again.cache_hit) == (False, True)
    assert again.flops == first.flops > 0 and "cached" in again.label and "measured" in first.label
    (entry,) = entries(tmp_path)
    assert json.loads((entry / "peak.json").read_text())["flops"] == first.flops
    assert json.loads((entry / "meta.json").read_text())["fields"]["driver"] == "580.65.06"
    newer = measured_peak(CPU, "fp32", tmp_path, dict(VERSIONS, nvidia_driver="590.10"))
    other = measured_peak(CPU, "bf16", tmp_path, VERSIONS)
    assert not newer.cache_hit and not other.cache_hit and len(calls) > measured
    assert len(entries(tmp_path)) == 3


def test_the_key_covers_the_gpu_itself_and_its_power_limit_and_clocks(monkeypatch):
    """Before: keyed by the device model only, so one GPU's figure stood for every GPU of every node
    and every power limit. The GPU's UUID and the settings NVML reports (pynvml's real wrappers over
    tests/fakes/fake_gpu.py) are in the key now."""
    from tests.fakes.fake_gpu import FakeGpu, install
    from workers.engines.cache import cache_key

    gpus = [FakeGpu(), FakeGpu("5d6b0a1e-0000-0000-0000-000000000008", bus=0x0F)]
    install(monkeypatch, gpus)
    cuda0, cuda1 = torch.device("cuda:0"), torch.device("cuda:1")

    def key(device=cuda0):
        return cache_key(key_fields(device, "fp16", VERSIONS, matmul_peak.GPU_PLAN))

    first = key()
    assert key_fields(cuda0, "fp16", VERSIONS, matmul_peak.GPU_PLAN)["gpu"] == {
        "uuid": gpus[0].nvml_uuid, "power_limit_mw": 700_000, "max_sm_clock_mhz": 1980,
        "applications_sm_clock_mhz": 1755}
    assert key(cuda1) != first  # the same model, another GPU
    gpus[0].power_limit_mw = 500_000  # nvidia-smi -pl 500
    capped = key()
    gpus[0].app_sm_clock_mhz = 1410  # nvidia-smi -ac
    clocked = key()
    assert len({first, capped, clocked}) == 3
    gpus[0].power_limit_mw, gpus[0].app_sm_clock_mhz = 700_000, 1755
    assert key() == first


def test_the_key_covers_device_precision_driver_libraries_threads_and_method(monkeypatch):
    from workers.engines.cache import cache_key

    def key(device=CPU, precision="fp16", versions=VERSIONS, plan=matmul_peak.GPU_PLAN):
        return cache_key(key_fields(device, precision, versions, plan))

    variants = {
        "same": key(),
        "precision": key(precision="bf16"),
        "driver": key(versions=dict(VERSIONS, nvidia_driver="590.10")),
        "plan": key(plan=SMALL),
    }
    monkeypatch.setattr(torch, "__version__", "2.14.0")
    variants["torch"] = key()
    monkeypatch.undo()
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    variants["cuda"] = key()
    monkeypatch.undo()
    monkeypatch.setattr(matmul_peak, "device_name", lambda device: "NVIDIA H200")
    variants["device"] = key()
    monkeypatch.undo()
    monkeypatch.setattr(matmul_peak, "METHOD", "square-matmul@3")
    variants["method"] = key()
    monkeypatch.undo()
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        variants["threads"] = key()
    finally:
        torch.set_num_threads(threads)
    assert len(set(variants.values())) == len(variants), variants
    assert key() == variants["same"]  # deterministic


def test_a_worker_reports_its_measured_peak_and_where_none_is_measured_why(tmp_path):
    runtime, info = worker_runtime(validate(job(passes=["infer"], engine_cache=str(tmp_path)), "x").worker_config())
    runtime.close()
    assert info.peak_flops is None and info.peak_flops_measured > 0 and info.peak_flops_measured_reason == ""
    assert "fp32" in info.peak_flops_measured_label
    assert info.rank_list()[0].peak_flops_measured == info.peak_flops_measured
    for passes, engine, why in ((["val"], "torch", "no infer pass"), (["infer"], "synthetic", "runs no model")):
        spec = validate(job(passes=passes, engine=engine, engine_cache=str(tmp_path / "none")), "x")
        runtime, info = worker_runtime(spec.worker_config())
        runtime.close()
        assert info.peak_flops_measured is None and why in info.peak_flops_measured_reason
        assert not entries(tmp_path / "none")


def test_a_job_can_skip_the_measurement(tmp_path):
    runtime, info = worker_runtime(validate(job(passes=["infer"], engine_cache=str(tmp_path), measure_peak=False),
                                            "x").worker_config())
    runtime.close()
    assert info.peak_flops_measured is None and info.peak_flops_measured_reason == "not measured (measure_peak: false)"
    assert not entries(tmp_path)
