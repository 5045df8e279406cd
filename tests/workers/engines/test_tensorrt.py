"""The TensorRT engine without TensorRT: its logic around the library, driven by a fake at the boundary.

`FakeTensorRT` stands for the `tensorrt` module (10.x, or 11.x without precision flags). It reads
the real ONNX export's inputs and outputs the way the ONNX parser would, checks shapes against the
optimisation profile the way an execution context does, and records every request: network flags,
builder flags, workspace, profile, tensor addresses, executions. The GPU boundary (the device check
and the CUDA stream handle) is replaced too, so buffers live in host memory. Nothing here shows that
real TensorRT builds or runs these engines; the README says what has run on a GPU.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from pathlib import Path

import onnx
import pytest
import torch

from orchestrator.spec import validate
from tests.builders import job, worker_runtime
from tests.workers.engines.test_engines_llama import llama_context
from workers.actor import BenchWorker
from workers.engines import BuildFailed
from workers.engines import tensorrt as trt_engine
from workers.engines.cache import cache_key
from workers.measure.device import cpu_name


class DataType(enum.Enum):  # values are ONNX's TensorProto element types
    FLOAT, INT32, INT64, BOOL, HALF, BF16 = 1, 6, 7, 9, 10, 16


class ILogger:
    Severity = enum.IntEnum("Severity", "INTERNAL_ERROR ERROR WARNING INFO VERBOSE", start=0)

    def __init__(self) -> None:
        pass


class FakeTensorRT:
    """Stands for `import tensorrt`; one instance per test, holding what the engine asked of it."""

    DataType, ILogger = DataType, ILogger
    TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")
    MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})

    def __init__(self, version: str = "10.9.0", fail: bool = False, parse_error: str = "",
                 cuda_error: int | None = None) -> None:
        self.__version__ = version
        self.cuda_error = cuda_error  # CUDA does not start (35: the driver is older than the wheel's CUDA)
        self.parse_error = parse_error
        names = "TF32 FP16 BF16" if version.startswith("10.") else "TF32"  # 11.x removed precision flags
        self.BuilderFlag = enum.Enum("BuilderFlag", names)
        self.fail = fail
        self.builders: list[FakeBuilder] = []
        self.contexts: list[FakeContext] = []
        self.loaded = 0

    def _start_cuda(self, logger) -> None:
        """What TensorRT's constructors do when CUDA cannot start: log the cause, then pybind11 raises."""
        if self.cuda_error is not None:
            logger.log(ILogger.Severity.ERROR, f"CUDA initialization failure with error: {self.cuda_error}. Please "
                                               "check your CUDA installation: http://docs.nvidia.com/cuda/")
            raise TypeError("pybind11::init(): factory function returned nullptr")

    def Builder(self, logger):  # noqa: N802 - the library's name
        self._start_cuda(logger)
        self.builders.append(FakeBuilder(self, logger))
        return self.builders[-1]

    def OnnxParser(self, network, logger):  # noqa: N802
        return FakeParser(network, self.parse_error)

    def Runtime(self, logger):  # noqa: N802
        self._start_cuda(logger)
        return self

    def deserialize_cuda_engine(self, plan: bytes):
        self.loaded += 1
        try:
            return FakeEngine(self, json.loads(plan))
        except ValueError:
            return None  # as TensorRT does for a plan it cannot read


class FakeBuilder:
    def __init__(self, trt: FakeTensorRT, logger) -> None:
        self.trt, self.logger = trt, logger

    def create_network(self, flags: int):
        self.network = dataclasses.make_dataclass("Network", ["flags", "io"])(flags, {})
        return self.network

    def create_builder_config(self):
        self.config = FakeConfig(self.trt)
        return self.config

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        self.logger.log(ILogger.Severity.VERBOSE, "fake: tactic timing details")
        if self.trt.fail:
            self.logger.log(ILogger.Severity.WARNING, "fake: workspace may be too small")
            self.logger.log(ILogger.Severity.ERROR, "fake: no implementation for node /bert/MatMul")
            return None
        self.logger.log(ILogger.Severity.INFO, "fake: engine built")
        return json.dumps({"io": network.io, "profile": config.profiles[0].shapes}).encode()


class FakeParser:
    def __init__(self, network, error: str) -> None:
        self.network, self.error, self.num_errors = network, error, int(bool(error))

    def get_error(self, index: int) -> str:
        return self.error

    def parse_from_file(self, path: str) -> bool:
        """Reads the graph's inputs and outputs; TensorRT resolves weights from the side file, so it must exist."""
        assert Path(path + ".data").exists()
        if self.error:
            return False
        graph = onnx.load(path, load_external_data=False).graph
        for mode, values in (("INPUT", graph.input), ("OUTPUT", graph.output)):
            for v in values:
                dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                self.network.io[v.name] = {"mode": mode, "dtype": DataType(v.type.tensor_type.elem_type).name, "dims": dims}
        return True


class FakeConfig:
    def __init__(self, trt: FakeTensorRT) -> None:
        self.flags = {trt.BuilderFlag.TF32}  # TensorRT's default
        self.pools: dict = {}
        self.profiles: list = []
        self.builder_optimization_level = 3

    def set_flag(self, flag) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag) -> None:
        self.flags.discard(flag)

    def set_memory_pool_limit(self, pool, size: int) -> None:
        self.pools[pool.name] = size

    def add_optimization_profile(self, profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class FakeProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list[list[int]]] = {}

    def set_shape(self, name: str, low, opt, high) -> None:
        self.shapes[name] = [list(low), list(opt), list(high)]


class FakeEngine:
    def __init__(self, trt: FakeTensorRT, plan: dict) -> None:
        self.trt, self.io, self.profile = trt, plan["io"], plan["profile"]
        self.num_io_tensors = len(self.io)

    def get_tensor_name(self, index: int) -> str:
        return list(self.io)[index]

    def get_tensor_mode(self, name: str):
        return self.trt.TensorIOMode[self.io[name]["mode"]]

    def get_tensor_dtype(self, name: str):
        return DataType[self.io[name]["dtype"]]

    def create_execution_context(self):
        self.trt.contexts.append(FakeContext(self))
        return self.trt.contexts[-1]


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.shapes, self.addresses, self.executions = engine, {}, {}, []

    def set_input_shape(self, name: str, shape) -> bool:
        low, _, high = self.engine.profile[name]
        ok = len(shape) == len(low) and all(lo <= s <= hi for lo, s, hi in zip(low, shape, high))
        if ok:
            self.shapes[name] = list(shape)
        return ok

    def get_tensor_shape(self, name: str) -> list[int]:
        sizes = {d: s for n, shape in self.shapes.items() for d, s in zip(self.engine.io[n]["dims"], shape)}
        return [sizes[d] if isinstance(d, str) else d for d in self.engine.io[name]["dims"]]

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream: int) -> bool:
        self.executions.append({"shapes": dict(self.shapes), "addresses": dict(self.addresses), "stream": stream})
        return True


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the module, so the ONNX export (the slow part) is shared by the tests."""
    return tmp_path_factory.mktemp("engines")


class HostStream:
    """Stands for the engine's CUDA stream (workers.engines.EngineStream): a handle, and what it ordered."""

    handle = 7

    def __init__(self, device) -> None:
        self.events: list[str] = []

    def begin(self, tensors) -> None:
        self.events.append(f"begin({len(list(tensors))})")

    def end(self) -> None:
        self.events.append("end")


@pytest.fixture
def fake_gpu(monkeypatch):
    """Stands for an NVIDIA GPU: the device check passes and the engine's stream is a HostStream."""
    monkeypatch.setattr(trt_engine, "require_gpu", lambda device: None)
    monkeypatch.setattr(trt_engine, "EngineStream", HostStream)


def install(monkeypatch, **kwargs) -> FakeTensorRT:
    fake = FakeTensorRT(**kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


def bert_context(cache_dir: Path, precision: str, **overrides):
    """The BuildContext a real worker gives its engine (tiny random BERT, bs 4, seq_len 32)."""
    runtime, _ = worker_runtime(validate(job(passes=["val"], engine_cache=str(cache_dir), **overrides), "x").worker_config())
    return runtime.build_context(precision)


def build(ctx, **options) -> tuple[trt_engine.TensorRT, object]:
    engine = trt_engine.TensorRT(validate(job(engine=dict(name="tensorrt", **options)), "x").worker_config().engine)
    return engine, engine.build(ctx)


# -------------------------------------------------------------------------------------- tests
def test_without_tensorrt_the_clear_error(monkeypatch, cache_dir):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails, as where it is not installed
    info = BenchWorker(validate(job(engine="tensorrt", engine_cache=str(cache_dir)), "x").worker_config()).setup()
    assert info.error.kind == "user"
    assert info.error.message == ("engine: tensorrt needs the TensorRT Python package (10 or later): "
                                  "pip install 'raybench[tensorrt]'")


def test_without_a_gpu_the_clear_error(monkeypatch, cache_dir):
    install(monkeypatch)
    info = BenchWorker(validate(job(engine="tensorrt", engine_cache=str(cache_dir)), "x").worker_config()).setup()
    assert info.error.kind == "user" and info.error.message.startswith("engine: tensorrt needs an NVIDIA GPU")


def test_too_old_tensorrt(monkeypatch, cache_dir):
    install(monkeypatch, version="8.6.1")
    with pytest.raises(trt_engine.UserError, match="needs TensorRT 10 or later; found 8.6.1"):
        trt_engine.TensorRT().build(bert_context(cache_dir, "fp16"))


def test_build_asks_for_the_jobs_profile_precision_and_key(monkeypatch, fake_gpu, cache_dir):
    fake = install(monkeypatch)
    ctx = bert_context(cache_dir, "fp16")
    engine, info = build(ctx, min_seq_len=8, workspace_gib=2, optimization_level=4)
    builder = fake.builders[0]
    assert builder.network.flags == 0  # 10.x: explicit batch is the only mode; weakly typed
    assert builder.config.profiles[0].shapes == {"input_ids": [[1, 8], [4, 32], [4, 32]]}
    assert builder.config.flags == {fake.BuilderFlag.FP16, fake.BuilderFlag.TF32}
    assert builder.config.pools == {"WORKSPACE": 2 * 2**30} and builder.config.builder_optimization_level == 4
    meta = json.loads((cache_dir / f"tensorrt-{info.cache_key}" / "meta.json").read_text())
    fields = meta["fields"]
    assert info.cache_key == cache_key(fields) and info.cache_hit is False
    assert fields["shapes"] == {"input_ids": {"min": [1, 8], "opt": [4, 32], "max": [4, 32]}}
    assert (fields["precision"], fields["export_precision"]) == ("fp16", "fp32")  # fp32 graph + FP16 flag
    assert fields["libraries"]["tensorrt"] == "10.9.0" and fields["device"] == cpu_name()
    assert fields["model"] == ctx.model_files_hash() and fields["options"]["workspace_gib"] == 2
    assert info.engine_bytes == (cache_dir / f"tensorrt-{info.cache_key}" / "engine.plan").stat().st_size
    assert "[INFO] fake: engine built" in (cache_dir / f"tensorrt-{info.cache_key}" / "build.log").read_text()
    # output buffers: planned by tensor name at the profile's max shape, allocated once
    assert {n: (tuple(b.shape), b.dtype) for n, b in engine.buffers.items()} == {"logits": ((4, 32, 512), torch.float32)}
    engine.close()
    assert engine.buffers == {} and engine.context is None and engine.engine is None


def test_forward_binds_torch_tensors_and_returns_the_used_prefix(monkeypatch, fake_gpu, cache_dir):
    fake = install(monkeypatch)
    engine, _ = build(bert_context(cache_dir, "fp16"))
    buffer = engine.buffers["logits"]
    inputs = engine.to_device({"input_ids": torch.ones(3, 32, dtype=torch.int64)})  # a short last batch
    logits = engine.forward(inputs)
    run = fake.contexts[0].executions[-1]
    assert run["shapes"] == {"input_ids": [3, 32]} and run["stream"] == HostStream.handle
    assert engine.stream.events == ["begin(1)", "end"]  # ordered after the copies, before torch's next work
    assert run["addresses"] == {"input_ids": inputs["input_ids"].data_ptr(), "logits": buffer.data_ptr()}
    assert logits.shape == (3, 32, 512) and logits.data_ptr() == buffer.data_ptr()
    with pytest.raises(RuntimeError, match="outside the profile"):
        engine.forward(engine.to_device({"input_ids": torch.ones(5, 32, dtype=torch.int64)}))


@pytest.mark.parametrize("precision, flags", [("fp32", set()), ("bf16", {"BF16", "TF32"})])
def test_precision_flags(monkeypatch, fake_gpu, cache_dir, precision, flags):
    fake = install(monkeypatch)
    build(bert_context(cache_dir, precision))
    assert {f.name for f in fake.builders[0].config.flags} == flags  # fp32 turns TF32 off


def test_tensorrt_11_is_strongly_typed_with_a_graph_at_the_jobs_precision(monkeypatch, fake_gpu, cache_dir):
    fake = install(monkeypatch, version="11.0.0")
    engine, info = build(bert_context(cache_dir, "fp16"))
    assert fake.builders[0].network.flags == 1 << 1  # STRONGLY_TYPED
    assert fake.builders[0].config.flags == {fake.BuilderFlag.TF32}
    fields = json.loads((cache_dir / f"tensorrt-{info.cache_key}" / "meta.json").read_text())["fields"]
    assert fields["export_precision"] == "fp16" and engine.buffers["logits"].dtype == torch.float16


def test_second_build_loads_and_changes_rebuild(monkeypatch, fake_gpu, tmp_path):
    ctx = bert_context(tmp_path, "fp16")
    first = install(monkeypatch)
    _, built = build(ctx)
    again = install(monkeypatch)  # a fresh process: nothing in memory
    _, loaded = build(ctx)
    assert (len(first.builders), built.cache_hit) == (1, False)
    assert (len(again.builders), again.loaded, loaded.cache_hit, loaded.build_seconds) == (0, 1, True, 0.0)
    assert (loaded.cache_key, loaded.engine_hash) == (built.cache_key, built.engine_hash)
    for changed in (dataclasses.replace(ctx, precision="fp32"), dataclasses.replace(ctx, seq_len=16)):
        fake = install(monkeypatch)
        _, info = build(changed)
        assert len(fake.builders) == 1 and info.cache_hit is False and info.cache_key != built.cache_key
    assert json.loads((tmp_path / f"tensorrt-{info.cache_key}" / "meta.json").read_text())["fields"]["shapes"] == {
        "input_ids": {"min": [1, 1], "opt": [4, 16], "max": [4, 16]}}


def test_llama_inputs_share_the_profile(monkeypatch, fake_gpu, tmp_path):
    fake = install(monkeypatch)
    engine, _ = build(llama_context(tmp_path / "cache", "fp16", bs=2, seq_len=24))
    assert fake.builders[0].config.profiles[0].shapes == {
        "input_ids": [[1, 1], [2, 24], [2, 24]], "attention_mask": [[1, 1], [2, 24], [2, 24]]}
    assert engine.buffers["logits"].shape == (2, 24, 64)


def test_failed_build_one_line_error_with_the_log(monkeypatch, fake_gpu, cache_dir):
    install(monkeypatch, fail=True)
    with pytest.raises(BuildFailed) as caught:
        build(bert_context(cache_dir, "fp16"), workspace_gib=1)
    assert str(caught.value) == "engine: TensorRT failed to build the fp16 engine: [ERROR] fake: no implementation for node /bert/MatMul"
    assert "[WARNING] fake: workspace may be too small" in caught.value.detail and "VERBOSE" not in caught.value.detail
    assert not list(cache_dir.glob(".tmp-*"))  # nothing half-built is left or published


def test_failed_build_reaches_the_driver_with_its_log(monkeypatch, fake_gpu, cache_dir):
    """workers.actor.classify copies `detail`; the driver writes it to runs/<id>/build-w<N>.log."""
    install(monkeypatch, fail=True)
    spec = job(engine={"name": "tensorrt", "workspace_gib": 0.5}, engine_cache=str(cache_dir))
    info = BenchWorker(validate(spec, "x").worker_config()).setup()
    assert info.error.kind == "user" and info.error.message.startswith("engine: TensorRT failed to build the fp32 engine")
    assert "[ERROR] fake: no implementation for node /bert/MatMul" in info.error.detail


def test_unparsable_export_one_line_error(monkeypatch, fake_gpu, cache_dir):
    install(monkeypatch, parse_error="In node 12 (importMatMul): UNSUPPORTED_NODE")
    with pytest.raises(BuildFailed, match=r"^engine: TensorRT could not parse the ONNX export: In node 12 "):
        build(bert_context(cache_dir, "fp16"), workspace_gib=3)


def test_unreadable_cached_engine_names_the_folder(monkeypatch, fake_gpu, tmp_path):
    install(monkeypatch)
    ctx = bert_context(tmp_path, "fp16")
    _, info = build(ctx)
    (tmp_path / f"tensorrt-{info.cache_key}" / "engine.plan").write_bytes(b"not a plan")
    with pytest.raises(BuildFailed, match=f"could not load the cached engine .*tensorrt-{info.cache_key}"):
        build(ctx)


def test_mmlu_profile_is_tuned_for_the_median_prompt_and_recorded(monkeypatch, fake_gpu, tmp_path):
    """MMLU prompts run from a few hundred tokens to the cap: `opt` is the prepared prompts' median
    length, not seq_len (the longest), and the build reports the profile for the row."""
    from tests.builders import save_bpe_tokenizer, tp_llama_job

    raw = tp_llama_job(save_bpe_tokenizer(tmp_path / "tokenizer"), tp=1, bs=2, seq_len=2048, passes=["val"],
                       engine_cache=str(tmp_path / "cache"))
    runtime, _ = worker_runtime(validate(raw, "x").worker_config())
    fake = install(monkeypatch)  # after torch._dynamo's import, which inspects every module loaded
    lengths = sorted(runtime.task.length(i) for i in range(runtime.task.num_examples()))
    middle = lengths[(len(lengths) - 1) // 2: len(lengths) // 2 + 1]
    engine, info = build(runtime.build_context("fp16"))
    (opt_len,) = {shapes[1][1] for shapes in fake.builders[0].config.profiles[0].shapes.values()}
    assert middle[0] <= opt_len <= middle[-1] < max(lengths) < 2048
    assert info.profile == {name: {"min": [1, 1], "opt": [2, opt_len], "max": [2, 2048]}
                            for name in ("input_ids", "attention_mask")}
    runtime.close()


# ------------------------------------------------------------------ the wheel against the driver
@pytest.fixture
def node(monkeypatch, tmp_path):
    """A node as TensorRT's wheel check sees it: the installed distributions (dist-info folders on a
    temporary sys.path), the driver's CUDA version (NVML, through pynvml's real wrappers over
    tests/fakes/fake_gpu.py) and torch's CUDA. Call it with the wheels, the driver's CUDA and torch's."""
    from tests.fakes.fake_dists import install_dist
    from tests.fakes.fake_gpu import FakeGpu
    from tests.fakes.fake_gpu import install as install_gpu

    def make(wheels: dict[str, str], driver_cuda: int, torch_cuda: str) -> None:
        for name, version in wheels.items():
            install_dist(monkeypatch, tmp_path / "site", name, version)
        install_gpu(monkeypatch, [FakeGpu()], cuda_driver_version=driver_cuda)
        monkeypatch.setattr(torch.version, "cuda", torch_cuda)

    return make


R535, R580 = 12020, 13000  # nvmlSystemGetCudaDriverVersion of an r535 and an r580 driver


def test_the_cuda_13_wheel_on_an_r535_driver_is_refused_naming_tensorrt_cu12(monkeypatch, fake_gpu, cache_dir, node):
    """`pip install 'raybench[tensorrt]'` resolves to TensorRT 11.x, CUDA 13 (needs r580+). Before:
    trt.Builder died with "pybind11::init(): factory function returned nullptr"."""
    fake = install(monkeypatch, version="11.4.0")
    node({"tensorrt": "11.4.0", "tensorrt-cu13": "11.4.0"}, R535, "12.8")
    with pytest.raises(trt_engine.UserError) as caught:
        build(bert_context(cache_dir, "fp16"))
    assert str(caught.value) == ("engine: tensorrt-cu13 11.4.0 is TensorRT for CUDA 13, but this node's NVIDIA driver "
                                 "runs CUDA up to 12.2 (CUDA 13 needs r580+): pip uninstall tensorrt tensorrt-cu13, "
                                 "then pip install tensorrt-cu12")
    assert fake.builders == []  # refused before building


def test_a_plain_tensorrt_11_wheel_counts_as_cuda_13(monkeypatch, fake_gpu, cache_dir, node):
    install(monkeypatch, version="11.4.0")
    node({"tensorrt": "11.4.0"}, R535, "12.8")
    with pytest.raises(trt_engine.UserError, match=r"^engine: tensorrt 11.4.0 is TensorRT for CUDA 13, but .* "
                                                   r"pip uninstall tensorrt, then pip install tensorrt-cu12$"):
        build(bert_context(cache_dir, "fp16"))


def test_a_wheel_for_another_cuda_than_torchs_is_refused(monkeypatch, fake_gpu, cache_dir, node):
    install(monkeypatch, version="11.4.0")
    node({"tensorrt-cu13": "11.4.0"}, R580, "12.8")
    with pytest.raises(trt_engine.UserError, match=r"is TensorRT for CUDA 13, but torch .* is built for CUDA 12.8 .*"
                                                   r"pip install tensorrt-cu12$"):
        build(bert_context(cache_dir, "fp16"))


def test_wheels_for_two_cuda_majors_are_refused(monkeypatch, fake_gpu, cache_dir, node):
    install(monkeypatch, version="11.4.0")
    node({"tensorrt-cu12": "10.13.3", "tensorrt-cu13": "11.4.0"}, R580, "12.8")
    with pytest.raises(trt_engine.UserError, match=r"^engine: TensorRT wheels for CUDA 12 and 13 are both installed"):
        build(bert_context(cache_dir, "fp16"))


def test_tensorrt_cu12_with_a_cuda_12_torch_on_r535_builds(monkeypatch, fake_gpu, cache_dir, node):
    fake = install(monkeypatch, version="10.13.3")
    node({"tensorrt-cu12": "10.13.3"}, R535, "12.8")
    engine, info = build(bert_context(cache_dir, "fp16"))
    assert len(fake.builders) + fake.loaded >= 1 and info.cache_key


def test_cuda_that_cannot_start_reaches_the_user_with_tensorrts_logged_cause(monkeypatch, fake_gpu, cache_dir):
    """No wheel to read (TensorRT from a container's system install), and the driver too old: the
    Builder's pybind11 error used to be all the user saw (a "crash"), the cause stayed in the log."""
    install(monkeypatch, cuda_error=35)
    spec = job(engine={"name": "tensorrt", "workspace_gib": 0.25}, engine_cache=str(cache_dir))
    info = BenchWorker(validate(spec, "x").worker_config()).setup()
    assert info.error.kind == "user"
    assert info.error.message.startswith("engine: TensorRT could not create its Builder: [ERROR] CUDA initialization "
                                         "failure with error: 35.")
    assert info.error.message.endswith("(CUDA error 35: the driver is older than this TensorRT's CUDA; "
                                       "tensorrt-cu12 runs on r535+)")
    assert "pybind11::init(): factory function returned nullptr" in info.error.detail


def test_a_runtime_that_cannot_start_names_the_cause_too(monkeypatch, fake_gpu, tmp_path):
    ctx = bert_context(tmp_path, "fp16")
    install(monkeypatch)
    build(ctx)  # built and cached
    install(monkeypatch, cuda_error=35)  # a later worker: loading the cached engine needs a Runtime
    with pytest.raises(BuildFailed, match=r"^engine: TensorRT could not create its Runtime: \[ERROR\] CUDA "
                                          r"initialization failure with error: 35"):
        build(ctx)
