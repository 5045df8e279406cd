"""The measured matmul peak: what it times, its cache (miss, hit, key) and where a worker reports it."""

from __future__ import annotations

import json

import pytest
import torch

from orchestrator.spec import validate
from tests.builders import job, worker_runtime
from workers import matmul_peak
from workers.matmul_peak import MatmulPlan, key_fields, measure_matmul_flops, measured_peak

CPU = torch.device("cpu")
SMALL = MatmulPlan(min_n=64, max_n=128, target_call_s=10.0, per_call=2, warmup=1, rounds=2)
VERSIONS = {"torch": "2.13.0", "cuda": "", "nvidia_driver": "580.65.06"}


def entries(root):
    """The published cache entries (folders; each has a .lock file beside it)."""
    return [p for p in root.glob("peak-*") if p.is_dir()]


def test_the_peak_is_the_fastest_call_of_square_matmuls_at_the_precision(monkeypatch):
    """2 n^3 FLOPs per matmul, `per_call` matmuls per timed call, the fastest call of any size wins;
    the timer is the project's CoreTimer. Sizes double from min_n to max_n while a call stays short."""
    calls: list[tuple[int, torch.dtype]] = []
    real_mm = torch.mm

    def counted_mm(a, b, out):
        calls.append((a.shape[0], a.dtype))
        return real_mm(a, b, out=out)

    seconds = iter([0.004, 0.002, 0.008, 0.010])  # n=64: 4 and 2 ms; n=128: 8 and 10 ms
    monkeypatch.setattr(matmul_peak.CoreTimer, "time", lambda self, fn: (fn(), next(seconds)))
    monkeypatch.setattr(torch, "mm", counted_mm)
    found = measure_matmul_flops(CPU, "bf16", SMALL)
    assert found.n == 128 and found.flops == pytest.approx(2 * 2 * 128**3 / 0.008)
    assert {dtype for _, dtype in calls} == {torch.bfloat16}
    assert [n for n, _ in calls] == [64] * 6 + [128] * 6  # (1 warm-up + 2 timed) calls x 2 matmuls per size


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
    measured: list[str] = []
    real = matmul_peak.measure_matmul_flops

    def counting(device, precision, plan=None):
        measured.append(precision)
        return real(device, precision, SMALL)

    monkeypatch.setattr(matmul_peak, "measure_matmul_flops", counting)
    first = measured_peak(CPU, "fp32", tmp_path, VERSIONS)
    again = measured_peak(CPU, "fp32", tmp_path, VERSIONS)
    assert (first.cache_hit, again.cache_hit) == (False, True) and measured == ["fp32"]
    assert again.flops == first.flops > 0 and "cached" in again.label and "measured" in first.label
    (entry,) = entries(tmp_path)
    assert json.loads((entry / "peak.json").read_text())["flops"] == first.flops
    assert json.loads((entry / "meta.json").read_text())["fields"]["driver"] == "580.65.06"
    newer = measured_peak(CPU, "fp32", tmp_path, dict(VERSIONS, nvidia_driver="590.10"))
    other = measured_peak(CPU, "bf16", tmp_path, VERSIONS)
    assert not newer.cache_hit and not other.cache_hit and measured == ["fp32", "fp32", "bf16"]
    assert len(entries(tmp_path)) == 3


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
    monkeypatch.setattr(matmul_peak, "METHOD", "square-matmul@2")
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
