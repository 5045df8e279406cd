"""ONNX Runtime and torch.compile through BenchWorker on a tiny random BERT masked-LM: val vs infer.

The model has a vocabulary of 8 (4 ordinary tokens), so even random weights score well above 0 and
"infer accuracy equals val accuracy" compares real numbers. Stated tolerances: |acc_infer -
acc_val| <= 1 point (the job default `acc_tolerance`), and top-1 predictions of the engine agree
with torch eager's on >= 99 % of all positions of the same batches.
"""

from __future__ import annotations

import pytest
import torch

from orchestrator.spec import validate
from tests.builders import TINY_BERT, job, run_on, worker_runtime
from workers.actor import BenchWorker
from workers.contract import ShardTask

ACC_TOLERANCE = 0.01
AGREEMENT = 0.99


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One engine cache for the module: the ONNX export of the model is made once and shared."""
    return tmp_path_factory.mktemp("engines")


def config(cache_dir, **overrides):
    spec = job(model={"random": dict(TINY_BERT, vocab_size=8)}, engine_cache=str(cache_dir), **overrides)
    return validate(spec, "x").worker_config()


def worker(cache_dir, **overrides) -> BenchWorker:
    return BenchWorker(config(cache_dir, **overrides))


def top1_agreement(runtime) -> float:
    """Per-position agreement of the two engines a worker built, on every batch of its task."""
    val, infer = runtime.engines["val"], runtime.engines["infer"]
    same = total = 0
    for batch in runtime.task.batches(0, runtime.task.num_examples(), runtime.config.bs):
        want = val.forward(val.to_device(batch.inputs)).argmax(-1).cpu()
        got = infer.forward(infer.to_device(batch.inputs)).argmax(-1).cpu()
        same += int((got == want).sum())
        total += want.numel()
    return same / total


def run_val_and_infer(runtime) -> tuple[float, float]:
    n = runtime.task.num_examples()
    val = run_on(runtime, ShardTask(0, 0, n, "val"))
    infer = run_on(runtime, ShardTask(0, 0, n, "infer"))
    assert val.scored == infer.scored > 100
    return val.correct / val.scored, infer.correct / infer.scored


@pytest.mark.parametrize("engine", [
    "onnxruntime",
    pytest.param("torch_compile", marks=pytest.mark.slow),
])
def test_infer_matches_val(cache_dir, engine):
    runtime, info = worker_runtime(config(cache_dir, engine=engine, bs=5))  # 48 windows: the last batch is short (3)
    build = info.build
    assert build.engine == engine and build.build_seconds > 0 and build.engine_bytes > 0 and build.cache_key
    acc_val, acc_infer = run_val_and_infer(runtime)
    assert acc_val > 0.1  # a meaningful comparison, not 0 == 0
    assert abs(acc_infer - acc_val) <= ACC_TOLERANCE
    assert top1_agreement(runtime) >= AGREEMENT
    runtime.close()


@pytest.mark.slow
def test_torch_compile_bf16_on_cpu(cache_dir):
    """bf16 compiles on a CPU worker too; eager bf16 is the reference, so agreement stays high."""
    runtime, _ = worker_runtime(config(cache_dir, engine="torch_compile", precision="bf16", passes=["val", "infer"]))
    acc_val, acc_infer = run_val_and_infer(runtime)
    assert abs(acc_infer - acc_val) <= 0.05  # bf16 kernels differ more between eager and inductor
    assert top1_agreement(runtime) >= 0.95
    runtime.close()


def test_onnxruntime_refuses_bf16(cache_dir):
    info = worker(cache_dir, engine="onnxruntime", precision="bf16").setup()
    assert info.error is not None and info.error.kind == "user"
    assert info.error.message.startswith("precision: bf16 is not supported by engine onnxruntime")


def test_onnxruntime_unknown_provider(cache_dir):
    info = worker(cache_dir, engine={"name": "onnxruntime", "providers": ["CUDAExecutionProvider"]}).setup()
    assert info.error.message.startswith("engine.providers: 'CUDAExecutionProvider' is not available")


def test_onnxruntime_cpu_inputs_are_host_views(cache_dir):
    """On the CPU provider to_device copies nothing: the session reads the host tensors' memory."""
    runtime, _ = worker_runtime(config(cache_dir, engine="onnxruntime", passes=["infer"]))
    engine = runtime.engines["infer"]
    batch = next(iter(runtime.task.batches(0, 4, 4)))
    fed = engine.to_device(batch.inputs)
    assert fed["input_ids"].ctypes.data == batch.inputs["input_ids"].data_ptr()
    logits = engine.forward(fed)
    assert isinstance(logits, torch.Tensor) and logits.shape == (4, 32, 8)
    runtime.close()


def test_onnxruntime_cuda_sessions_compute_fp32_without_tf32(monkeypatch):
    """ORT's CUDA provider runs float matmuls as TF32 unless use_tf32 is 0: every CUDA session (the
    engine's and the export check's) says 0, except at precision tf32."""
    import onnxruntime as ort

    from workers.engines import onnx_export
    from workers.engines.onnxruntime import CPU, CUDA, provider_settings

    gpu = torch.device("cuda:0")
    for precision, tf32 in (("fp32", "0"), ("fp16", "0"), ("tf32", "1")):
        (name, options), cpu = provider_settings([CUDA, CPU], gpu, precision)
        assert (name, options["use_tf32"], options["device_id"], cpu) == (CUDA, tf32, 0, CPU)
    assert provider_settings([CPU], gpu, "fp32") == [CPU]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 << 30, 80 << 30))
    assert onnx_export.check_providers(gpu, 1 << 30) == [(CUDA, {"use_tf32": "0"}), CPU]


@pytest.fixture
def onnxruntime_gpu_without_its_libraries(monkeypatch):
    """onnxruntime-gpu whose CUDA provider cannot load its CUDA/cuDNN libraries: ORT still lists
    CUDA among the available providers (it is in the wheel), its build info says CUDA 12.8, and a
    session asked for CUDA silently runs on the CPU, as this machine's real CPU sessions do."""
    import onnxruntime as ort
    from onnxruntime.capi import build_and_package_info

    from workers.engines.onnxruntime import CPU, CUDA

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "package_name", "onnxruntime-gpu")
    monkeypatch.setattr(ort, "cuda_version", "12.8")
    monkeypatch.setattr(build_and_package_info, "cudnn_version", "9.8", raising=False)
    monkeypatch.setattr(ort, "preload_dlls", lambda **kw: None)  # there are no CUDA libraries to load here
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # the CUDA provider's device_id
    monkeypatch.setattr(torch.version, "cuda", "13.0")


LOST_CUDA = (f"engine: onnxruntime-gpu {__import__('onnxruntime').__version__} could not load its CUDA provider "
             "(needs CUDA 12 and cuDNN 9 libraries; torch has CUDA 13.0) and fell back to the CPU: pip uninstall "
             "onnxruntime onnxruntime-gpu, then install the onnxruntime-gpu for torch's CUDA, or use engine.providers: "
             "[CPUExecutionProvider]")


def test_a_session_that_lost_cuda_is_refused_before_its_graph_is_cached(tmp_path,
                                                                          onnxruntime_gpu_without_its_libraries):
    """Before: the CPU-optimised graph was published under a key naming CUDA, and the run went on
    (IO binding failing on every batch, or a CPU run reported as the GPU's)."""
    from workers.engines.onnxruntime import CPU, CUDA

    info = worker(tmp_path, engine={"name": "onnxruntime", "providers": [CUDA, CPU]}, passes=["infer"]).setup()
    assert info.error is not None and info.error.kind == "user"
    assert info.error.message == LOST_CUDA
    assert not [p for p in tmp_path.glob("onnxruntime-*") if p.is_dir()]  # nothing cached under the CUDA key
    assert [p for p in tmp_path.glob("onnx-*") if p.is_dir()]  # the export (checked on the CPU) is cached


def test_the_export_check_refuses_a_session_that_lost_cuda(tmp_path, monkeypatch,
                                                            onnxruntime_gpu_without_its_libraries):
    """The export check asks for CUDA on a GPU worker when the export fits: a session that fell to the
    CPU must not stand in for it (an fp16 export would then fail on the CPU's missing kernels)."""
    import dataclasses

    from workers.engines import onnx_export

    runtime, _ = worker_runtime(config(tmp_path, engine="onnxruntime", passes=["infer"]))  # exported on the CPU
    ctx = runtime.build_context("fp32")
    model = ctx.model()
    runtime.close()
    path = next(p for p in tmp_path.glob("onnx-*") if p.is_dir()) / onnx_export.ONNX_FILE
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 << 30, 80 << 30))
    gpu_ctx = dataclasses.replace(ctx, device=torch.device("cuda:0"))
    with pytest.raises(onnx_export.UserError) as caught:
        onnx_export.check_export(path, model, ctx.sample_inputs(2, 16), gpu_ctx, "fp32")
    assert str(caught.value) == LOST_CUDA


def test_the_install_advice_uninstalls_the_cpu_package_first():
    from workers.engines.onnxruntime import CPU, choose_providers
    from workers.errors import UserError

    with pytest.raises(UserError, match=r"pip uninstall onnxruntime, then pip install onnxruntime-gpu"):
        choose_providers(None, torch.device("cuda:0"), [CPU])
