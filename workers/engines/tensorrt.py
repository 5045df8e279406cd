"""TensorRT 10/11: ONNX export -> OnnxParser -> serialized engine (cached) -> execute_async_v3.

Written against the documented TensorRT 10/11 Python API; it has not run here (no TensorRT, no
GPU on this machine): tests drive it with a fake `tensorrt` module at the import boundary.

Build. The shared export (workers/engines/onnx_export.py) is parsed into an explicit-batch network
(the only kind TensorRT 10 has). Precision: where `BuilderFlag.FP16` exists (10.x, "weak typing")
the export is fp32 and FP16/BF16 flags let the builder pick reduced-precision kernels layer by
layer, as the seed's TensorRT 8.5 engines did; TensorRT 11 removed those flags, so there the
export is at the job's precision and the network is strongly typed. fp32 clears the TF32 flag so
an fp32 engine is fp32 (the `tf32` precision keeps it). One optimisation profile: min =
(engine.min_bs, engine.min_seq_len), opt = (bs, the prepared data's median length), max = (bs,
seq_len) (see `cache.shape_profile`); the row records it (`engine_profile`). The serialized engine goes into the engine
cache with the builder's log beside it; a failed build raises `BuildFailed` with that log.

Wheel and driver. Before building, the installed wheel's CUDA major (tensorrt-cu12, tensorrt-cu13; a
plain `tensorrt` 11.x is CUDA 13) must be one the driver runs (NVML) and torch's own; the Builder
and Runtime are created so that a failure carries TensorRT's logged cause, not pybind11's
"factory function returned nullptr". CUDA-12 stacks (r535+ drivers) install `raybench[tensorrt-cu12]`.

Run. `to_device` copies inputs to the GPU in the dtypes the engine declares (timed as h2d);
`forward` sets shapes and the torch tensors' addresses and calls `execute_async_v3` on the
engine's own CUDA stream, ordered after torch's (the copies) and before torch's next work (the
timer's end event), see `EngineStream`; TensorRT runs slower on the legacy default stream.
Output buffers are allocated once, by tensor name, at the profile's max shape; `forward`
returns a view of the prefix the batch's shape uses (valid until the next call) and `close`
releases buffers, context and engine in that order.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from workers.contract import BuildInfo
from workers.engines import BuildContext, BuildFailed, EngineBase, EngineStream
from workers.engines.cache import EngineCache, Profile, key_fields, shape_profile
from workers.engines.onnx_export import exported_onnx
from workers.errors import UserError, first_line
from workers.measure.nvml import cuda_driver_version
from workers.measure.versions import distributions_of
from workers.specs import TensorRTOptions

PLAN = "engine.plan"


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise UserError("engine: tensorrt needs the TensorRT Python package (10 or later): "
                        "pip install 'raybench[tensorrt]'") from exc
    if int(str(trt.__version__).split(".")[0]) < 10:
        raise UserError(f"engine: tensorrt needs TensorRT 10 or later; found {trt.__version__}")
    return trt


def wheel_cuda_major(dists: dict[str, str]) -> tuple[int, str] | None:
    """(CUDA major, "tensorrt-cu12 10.13.3") of the installed TensorRT wheel, from its distribution's
    name: tensorrt-cuNN is CUDA NN; a plain `tensorrt` is CUDA 13 from 11.x on and CUDA 12 for 10.x
    (NVIDIA's install notes). None where TensorRT came from no wheel (a container's system install)."""
    named = {int(name.removeprefix("tensorrt-cu")): name for name in dists if name.startswith("tensorrt-cu")}
    if len(named) > 1:
        raise UserError(f"engine: TensorRT wheels for CUDA {' and '.join(map(str, sorted(named)))} are both installed "
                        f"({', '.join(sorted(named.values()))}): pip uninstall the one that is not torch's CUDA "
                        f"({torch.version.cuda or 'none'})")
    if named:
        (major, name), = named.items()
        return major, f"{name} {dists[name]}"
    if "tensorrt" in dists:
        version = dists["tensorrt"]
        return (13 if int(version.split(".")[0]) >= 11 else 12), f"tensorrt {version}"
    return None


def check_cuda_majors() -> None:
    """The TensorRT wheel's CUDA major against the driver's and torch's, before anything is built.

    NVIDIA's `tensorrt` wheel is CUDA 13 from TensorRT 11 on and needs an r580+ driver; on r535/r550
    `trt.Builder` fails with "pybind11::init(): factory function returned nullptr". And TensorRT runs
    on torch's streams and memory: one CUDA major per process. One line naming the wheel otherwise.
    """
    dists = distributions_of("tensorrt")
    found = wheel_cuda_major(dists)
    if found is None:
        return
    wheel, label = found
    driver = cuda_driver_version()
    torch_major = int(torch.version.cuda.split(".")[0]) if torch.version.cuda else None
    fit = torch_major or (driver[0] if driver else 12)
    advice = f"pip uninstall {' '.join(dists)}, then pip install tensorrt-cu{fit}"
    if driver is not None and wheel > driver[0]:
        raise UserError(f"engine: {label} is TensorRT for CUDA {wheel}, but this node's NVIDIA driver runs CUDA up to "
                        f"{driver[0]}.{driver[1]} (CUDA 13 needs r580+): {advice}")
    if torch_major is not None and wheel != torch_major:
        raise UserError(f"engine: {label} is TensorRT for CUDA {wheel}, but torch {torch.__version__} is built for "
                        f"CUDA {torch.version.cuda} (TensorRT shares torch's streams and memory: one CUDA major): "
                        f"{advice}")


def create(trt: Any, what: str, log: Any) -> Any:
    """`trt.Builder(log)` or `trt.Runtime(log)`, or BuildFailed naming the cause TensorRT logged.

    Where CUDA cannot start (a driver older than the wheel's CUDA: error 35) the constructor raises
    "pybind11::init(): factory function returned nullptr" and only the captured log says why.
    """
    try:
        made, failure = getattr(trt, what)(log), "returned None"
    except (TypeError, RuntimeError) as exc:
        made, failure = None, first_line(exc)
    if made is None:
        cause = log.last_error() if log.lines else failure
        hint = (" (CUDA error 35: the driver is older than this TensorRT's CUDA; tensorrt-cu12 runs on r535+)"
                if "error: 35" in cause else "")
        raise BuildFailed(f"engine: TensorRT could not create its {what}: {cause}{hint}",
                          detail=f"{log.text()}trt.{what}(): {failure}\n")
    return made


def require_gpu(device: torch.device) -> None:
    if device.type != "cuda":
        raise UserError("engine: tensorrt needs an NVIDIA GPU and this worker has none "
                        "(give workers GPUs, or use engine onnxruntime or torch_compile)")


def weakly_typed(trt: Any) -> bool:
    """True on TensorRT 10.x, whose builder still takes precision flags (11.x removed them)."""
    return hasattr(trt.BuilderFlag, "FP16")


def captured_logger(trt: Any) -> Any:
    """A trt.ILogger that keeps every message but VERBOSE, for build.log and failed builds."""

    class CapturedLog(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity != trt.ILogger.Severity.VERBOSE:
                self.lines.append(f"[{getattr(severity, 'name', severity)}] {msg}")

        def text(self) -> str:
            return "\n".join(self.lines) + "\n"

        def last_error(self) -> str:
            errors = [ln for ln in self.lines if "ERROR" in ln.split("]")[0]]
            return (errors or self.lines or ["(the builder logged nothing)"])[-1]

    return CapturedLog()


def set_precision(trt: Any, config: Any, precision: str) -> None:
    """Precision flags of a weakly typed build; fp32 also turns TF32 off (TensorRT enables it by default)."""
    flags = trt.BuilderFlag
    if hasattr(flags, "TF32") and precision == "fp32":
        config.clear_flag(flags.TF32)
    if hasattr(flags, "TF32") and precision == "tf32":
        config.set_flag(flags.TF32)
    if not weakly_typed(trt) or precision in ("fp32", "tf32"):
        return
    flag = {"fp16": "FP16", "bf16": "BF16"}[precision]
    if not hasattr(flags, flag):
        raise UserError(f"precision: {precision} needs a TensorRT with BuilderFlag.{flag}; found {trt.__version__}")
    config.set_flag(getattr(flags, flag))


def build_plan(trt: Any, onnx_path: Path, profile: Profile, precision: str,
               options: TensorRTOptions, log: Any) -> bytes:
    """The serialized engine of `onnx_path` for one optimisation profile; BuildFailed with the log otherwise."""
    builder = create(trt, "Builder", log)
    strong = not weakly_typed(trt) and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0)
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildFailed(f"engine: TensorRT could not parse the ONNX export: {(errors or [log.last_error()])[0]}",
                          detail=log.text() + "\n".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * 2**30))
    config.builder_optimization_level = options.optimization_level
    set_precision(trt, config, precision)
    shapes = builder.create_optimization_profile()
    for name, dims in profile.items():
        shapes.set_shape(name, dims["min"], dims["opt"], dims["max"])
    config.add_optimization_profile(shapes)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildFailed(f"engine: TensorRT failed to build the {precision} engine: {log.last_error()}",
                          detail=log.text())
    return bytes(plan)


def torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
             "INT64": torch.int64, "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8}
    return table[dtype.name]


def plan_buffers(trt: Any, engine: Any, context: Any, profile: Profile) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Output tensors by name with the shape they take at the profile's max input shapes."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    for name in names:
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            if not context.set_input_shape(name, profile[name]["max"]):
                raise RuntimeError(f"TensorRT refused the max shape {profile[name]['max']} for input {name}")
    return {
        name: (tuple(context.get_tensor_shape(name)), torch_dtype(trt, engine.get_tensor_dtype(name)))
        for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT
    }


class TensorRT(EngineBase):
    name = "tensorrt"

    def __init__(self, options: TensorRTOptions | None = None) -> None:
        self.options = options or TensorRTOptions()
        self.runtime: Any = None
        self.engine: Any = None
        self.context: Any = None
        self.buffers: dict[str, torch.Tensor] = {}

    def build(self, ctx: BuildContext) -> BuildInfo:
        trt = import_tensorrt()
        require_gpu(ctx.device)
        check_cuda_majors()
        self.device = ctx.device
        self.stream = EngineStream(ctx.device)
        t0 = time.perf_counter()
        opts = self.options
        profile = shape_profile(ctx.signature, ctx.bs, ctx.seq_len, opts.min_bs, opts.min_seq_len, ctx.opt_seq_len)
        export_precision = "fp32" if weakly_typed(trt) or ctx.precision == "tf32" else ctx.precision
        cache = EngineCache(ctx.cache_dir)
        fields = key_fields(ctx, self.name, opts, {"tensorrt": str(trt.__version__)}, shapes=profile,
                            export_precision=export_precision)

        def build(folder: Path) -> None:
            onnx_path, _ = exported_onnx(ctx, cache, export_precision, opts.opset)
            log = captured_logger(trt)
            plan = build_plan(trt, onnx_path, profile, ctx.precision, opts, log)
            (folder / PLAN).write_bytes(plan)
            (folder / "build.log").write_text(log.text())

        entry = cache.get_or_build(self.name, fields, build)
        self._load(trt, entry.path / PLAN, profile, ctx.signature.output)
        info = entry.build_info(self.name, time.perf_counter() - t0)
        info.profile = profile
        return info

    def _load(self, trt: Any, plan: Path, profile: Profile, output: str) -> None:
        """Deserialize the engine, make its context and allocate output buffers once, by tensor name."""
        log = captured_logger(trt)
        self.runtime = create(trt, "Runtime", log)
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise BuildFailed(f"engine: TensorRT could not load the cached engine {plan}; "
                              f"delete {plan.parent} to rebuild", detail=log.text())
        self.context = self.engine.create_execution_context()
        self.input_dtypes = {name: torch_dtype(trt, self.engine.get_tensor_dtype(name)) for name in profile}
        planned = plan_buffers(trt, self.engine, self.context, profile)
        self.buffers = {name: torch.empty(shape, dtype=dtype, device=self.device)
                        for name, (shape, dtype) in planned.items()}
        for name, buffer in self.buffers.items():
            self.context.set_tensor_address(name, buffer.data_ptr())
        self.output = output

    def to_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: tensor.to(self.device, dtype=self.input_dtypes[name], non_blocking=True).contiguous()
                for name, tensor in inputs.items()}

    def forward(self, device_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.stream.begin(device_inputs.values())
        for name, tensor in device_inputs.items():
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise RuntimeError(f"TensorRT refused shape {tuple(tensor.shape)} for {name} (outside the profile)")
            self.context.set_tensor_address(name, tensor.data_ptr())
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.end()
        shape = tuple(self.context.get_tensor_shape(self.output))
        return self.buffers[self.output].view(-1)[: math.prod(shape)].view(shape)

    def close(self) -> None:
        self.buffers = {}
        self.context = None
        self.engine = None
        self.runtime = None
