"""The engine cache: keys, atomic publishing, one builder per key, and rebuild-or-load through ONNX Runtime."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from orchestrator.spec import validate
from tests.builders import job, worker_runtime
from workers.actor import BenchWorker
from workers.engines import cache as cache_module
from workers.engines import onnx_export
from workers.engines import onnxruntime as ort_engine
from workers.engines.cache import EngineCache, cache_key, key_fields, shape_profile
from workers.tasks import InputSignature

BERT = InputSignature({"input_ids": {0: "batch", 1: "sequence"}})
LLAMA = InputSignature({"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}})


def test_shape_profile_from_the_job():
    assert shape_profile(BERT, bs=32, seq_len=512) == {"input_ids": {"min": [1, 1], "opt": [32, 512], "max": [32, 512]}}
    profile = shape_profile(LLAMA, bs=4, seq_len=2048, min_bs=2, min_seq_len=64)
    assert profile["attention_mask"] == profile["input_ids"] == {"min": [2, 64], "opt": [4, 2048], "max": [4, 2048]}
    assert shape_profile(BERT, bs=2, seq_len=8, min_bs=4, min_seq_len=16)["input_ids"]["min"] == [2, 8]


def fake_ctx(**changes) -> SimpleNamespace:
    base = dict(model_files_hash=lambda: "weights-a", causal=False, precision="fp16", signature=BERT,
                device=torch.device("cpu"))
    base.update(changes)
    return SimpleNamespace(**base)


def key(ctx=None, engine="tensorrt", options=None, version="10.9.0", shapes=None) -> str:
    shapes = shapes or shape_profile(BERT, 32, 512)
    fields = key_fields(ctx or fake_ctx(), engine, options or {"workspace_gib": 8}, {"tensorrt": version}, shapes=shapes)
    return cache_key(fields)


def test_key_changes_with_everything_it_covers(monkeypatch):
    variants = {
        "same": key(),
        "model": key(fake_ctx(model_files_hash=lambda: "weights-b")),
        "precision": key(fake_ctx(precision="bf16")),
        "shapes": key(shapes=shape_profile(BERT, 32, 128)),
        "signature": key(fake_ctx(signature=LLAMA)),
        "engine": key(engine="onnxruntime"),
        "options": key(options={"workspace_gib": 4}),
        "library": key(version="10.10.0"),
    }
    monkeypatch.setattr(cache_module, "device_name", lambda device: "NVIDIA H100 80GB HBM3")
    variants["device"] = key()
    assert len(set(variants.values())) == len(variants)
    monkeypatch.undo()
    assert key() == variants["same"]  # deterministic


def test_get_or_build_builds_once_then_loads(tmp_path):
    cache = EngineCache(tmp_path)
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "engine.plan").write_bytes(b"x" * 100)
        (folder / "build.log").write_text("[INFO] built\n")

    first = cache.get_or_build("tensorrt", {"a": 1}, build)
    second = cache.get_or_build("tensorrt", {"a": 1}, build)
    assert len(calls) == 1 and (first.hit, second.hit) == (False, True)
    assert first.path == second.path and (second.path / "engine.plan").read_bytes() == b"x" * 100
    assert second.meta["bytes"] == 100 and second.meta["files"] == ["engine.plan"]  # logs are not the artifact
    info = second.build_info("tensorrt", 0.5)
    assert (info.cache_hit, info.build_seconds, info.engine_bytes, info.cache_key) == (True, 0.0, 100, cache_key({"a": 1}))
    assert info.engine_hash == first.meta["sha256"] and len(info.engine_hash) == 16
    assert first.build_info("tensorrt", 2.5).build_seconds == 2.5
    assert not list(tmp_path.glob(".tmp-*"))


def test_failed_build_publishes_nothing(tmp_path):
    cache = EngineCache(tmp_path)

    def broken(folder):
        (folder / "engine.plan").write_bytes(b"half")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("tensorrt", {"a": 1}, broken)
    assert cache.lookup("tensorrt", cache_key({"a": 1})) is None and not list(tmp_path.glob(".tmp-*"))
    entry = cache.get_or_build("tensorrt", {"a": 1}, lambda folder: (folder / "engine.plan").write_bytes(b"ok"))
    assert entry.hit is False


def test_concurrent_builders_of_one_key_build_once(tmp_path):
    """Workers on one node sharing the cache: all miss at once, the lock lets one build, the rest load."""
    misses = threading.Condition()
    looked = []

    class Watched(EngineCache):
        def lookup(self, kind, key):
            found = super().lookup(kind, key)
            with misses:
                looked.append(found is None)
                misses.notify_all()
            return found

    calls, entries = [], []

    def build(folder):
        calls.append(folder)
        with misses:  # hold the build until every worker has looked and missed
            assert misses.wait_for(lambda: sum(looked) >= 5, timeout=10)
        (folder / "engine.plan").write_bytes(b"plan")

    threads = [threading.Thread(target=lambda: entries.append(Watched(tmp_path).get_or_build("tensorrt", {"a": 1}, build)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(e.hit for e in entries) == [False, True, True, True]
    assert len({e.path for e in entries}) == 1


# --------------------------------------------------------------- through an engine: ONNX Runtime
@pytest.fixture
def counted(monkeypatch):
    """Counts exports and ORT optimisations (the two build steps) without changing them."""
    counts = {"export": 0, "optimise": 0}
    export, optimise = onnx_export.export_model, ort_engine.OnnxRuntime._optimise

    def count_export(*args, **kwargs):
        counts["export"] += 1
        return export(*args, **kwargs)

    def count_optimise(self, *args, **kwargs):
        counts["optimise"] += 1
        return optimise(self, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_model", count_export)
    monkeypatch.setattr(ort_engine.OnnxRuntime, "_optimise", count_optimise)
    return counts


def ort_build(tmp_path, **overrides):
    spec = job(engine="onnxruntime", passes=["infer"], engine_cache=str(tmp_path / "cache"), **overrides)
    w = BenchWorker(validate(spec, "x").worker_config())
    info = w.setup()
    assert info.error is None, info.error
    w.close()
    return info.build


def test_second_run_loads_and_changes_rebuild(tmp_path, counted):
    first = ort_build(tmp_path)
    assert (first.cache_hit, counted) == (False, {"export": 1, "optimise": 1}) and first.build_seconds > 0

    again = ort_build(tmp_path)
    assert again.cache_hit is True and again.build_seconds == 0.0 and "loaded from cache" in again.log
    assert counted == {"export": 1, "optimise": 1}  # nothing was built
    assert (again.cache_key, again.engine_hash, again.engine_bytes) == (first.cache_key, first.engine_hash, first.engine_bytes)

    shorter = ort_build(tmp_path, seq_len=16)
    assert shorter.cache_hit is False and shorter.cache_key != first.cache_key
    assert counted == {"export": 1, "optimise": 2}  # new engine key; the export (dynamic axes) is shared


def test_changed_precision_rebuilds_the_export(tmp_path, counted):
    """fp16 is refused on CPU workers, so this drives the engine with the worker's own build context."""
    spec = job(engine="onnxruntime", passes=["infer"], engine_cache=str(tmp_path / "cache"))
    runtime, _ = worker_runtime(validate(spec, "x").worker_config())
    assert counted == {"export": 1, "optimise": 1}
    engine = ort_engine.OnnxRuntime()
    info = engine.build(runtime.build_context("fp16"))
    assert info.cache_hit is False and counted == {"export": 2, "optimise": 2}
    batch = next(iter(runtime.task.batches(0, 4, 4)))
    assert engine.forward(engine.to_device(batch.inputs)).dtype == torch.float16
    engine.close()
    runtime.close()


def two_nodes_build_at_once(monkeypatch, tmp_path, build_of):
    """Two nodes sharing a cache folder on NFS: the flock is per node, so both miss and both build.
    Node a publishes first; node b finishes its build after that and must use a's entry."""
    from tests.two_nodes import TwoNodes

    nodes = TwoNodes(monkeypatch, timeout_s=30)

    def build(folder):
        nodes.gate()
        build_of(folder, nodes.name)

    return nodes.run(lambda: EngineCache(tmp_path).get_or_build("onnx", {"a": 1}, build))


def test_the_node_that_publishes_second_uses_the_winners_entry(monkeypatch, tmp_path):
    """Before: node b's os.replace onto a's folder failed with ENOTEMPTY and its worker failed."""
    out, errors = two_nodes_build_at_once(monkeypatch, tmp_path,
                                          lambda folder, name: (folder / "model.onnx").write_bytes(name.encode()))
    assert errors == []
    a, b = out["a"], out["b"]
    assert a.path == b.path and (b.path / "model.onnx").read_bytes() == b"a"
    assert b.meta == a.meta and b.build_info("onnx", 1.0).engine_hash == a.meta["sha256"]
    assert not list(tmp_path.glob(".tmp-*"))  # the loser's copy is gone
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [a.path.name]
