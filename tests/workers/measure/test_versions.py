"""The software versions a worker records: GPU wheels (onnxruntime-gpu, tensorrt-cu12) that provide a
module under another distribution name are on record, never a blank."""

from __future__ import annotations

from importlib import metadata

from tests.fakes.fake_dists import install_dist
from workers.measure.versions import collect


def test_gpu_wheels_are_recorded_under_the_module_and_their_own_names(monkeypatch, tmp_path):
    """Before: `metadata.version("tensorrt")` found nothing when only tensorrt-cu12 was installed and
    recorded "", and onnxruntime-gpu beside the CPU onnxruntime was not on record at all."""
    install_dist(monkeypatch, tmp_path, "tensorrt-cu12", "10.13.3")
    install_dist(monkeypatch, tmp_path, "onnxruntime-gpu", "1.22.0")
    found = collect()
    assert found["tensorrt"] == "10.13.3" and found["tensorrt-cu12"] == "10.13.3"
    assert found["onnxruntime-gpu"] == "1.22.0"  # beside the CPU package this machine has: both on record
    assert found["onnxruntime"] == metadata.version("onnxruntime")


def test_a_gpu_wheel_alone_gives_the_modules_version(monkeypatch, tmp_path):
    monkeypatch.setattr("importlib.metadata.version", _without("onnxruntime"))
    install_dist(monkeypatch, tmp_path, "onnxruntime-gpu", "1.22.0")
    assert collect()["onnxruntime"] == "1.22.0"


def _without(name: str):
    """importlib.metadata.version as on a machine where `name` itself is not installed."""
    real = metadata.version

    def version(dist: str) -> str:
        if dist == name:
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    return version
