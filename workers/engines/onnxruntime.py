"""ONNX Runtime: the checked ONNX export, optimised once per device and cached, run by one session.

Build: the shared export (workers/engines/onnx_export.py) -> a session at ORT_ENABLE_ALL that saves
its optimised graph into the engine cache -> the running session loads that graph with graph
optimisation off (ONNX Runtime's offline-optimisation pattern). The optimised graph may hold
hardware-specific rewrites, which is why its key has the device name, providers and ORT version.

Providers: `options.providers` when given; else CUDA (onnxruntime-gpu) on a GPU worker, CPU otherwise.
Every session asked for CUDA must run on it (`onnx_export.ort_session`), checked before the optimised
graph is published into the cache: a CUDA provider that did not load (its CUDA/cuDNN libraries) is
one line naming them, never a CPU session labelled with the GPU.
- CPU: `to_device` hands the session numpy views of the host tensors (no copy: the CPU provider
  reads host memory, so there is nothing to transfer and h2d time is ~0), `forward` is
  `session.run`, and its output array becomes a torch tensor without a copy.
- CUDA with `io_binding` (the default): `to_device` copies inputs to the GPU as torch tensors (timed
  as h2d); `forward` binds them and an output buffer allocated once at the max shape, so the
  session run is all that core time holds and logits stay on the GPU for scoring. ORT runs on
  the engine's own CUDA stream (`user_compute_stream`), ordered with torch's (`EngineStream`).
  (Written to the documented API; not run here: this machine has no GPU.)
- fp32 means fp32: ORT's CUDA provider runs float matmuls and convolutions as TF32 unless its
  `use_tf32` option is 0, while MFU divides by the plain FP32 peak. Every CUDA session here sets
  `use_tf32` 0, except for precision `tf32`, whose MFU divides by the TF32 peak.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from workers.contract import BuildInfo
from workers.engines import BuildContext, EngineBase, EngineStream
from workers.engines.cache import EngineCache, key_fields, shape_profile
from workers.engines.onnx_export import exported_onnx, ort_session
from workers.errors import UserError
from workers.specs import OnnxRuntimeOptions

OPTIMISED = "model.onnx"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
NUMPY_TYPES = {torch.int64: np.int64, torch.int32: np.int32, torch.float32: np.float32,
               torch.float16: np.float16, torch.bool: np.bool_}
TORCH_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}


def choose_providers(requested: list[str] | None, device: torch.device, available: list[str]) -> list[str]:
    """The execution providers to use, in priority order, or a one-line error naming the field."""
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise UserError(f"engine.providers: '{missing[0]}' is not available in this onnxruntime "
                            f"(available: {', '.join(available)})")
        return list(requested)
    if device.type == "cuda":
        if CUDA not in available:
            raise UserError("engine: onnxruntime on a GPU worker needs the CUDA provider: pip uninstall onnxruntime, "
                            "then pip install onnxruntime-gpu (installed together, the CPU package can win), or set "
                            "engine.providers: [CPUExecutionProvider]")
        return [CUDA, CPU]
    return [CPU]


def provider_settings(providers: list[str], device: torch.device, precision: str,
                      stream: int | None = None) -> list[Any]:
    """Providers as ORT takes them: CUDA on this device, TF32 only for precision tf32, and on
    `stream` when one is given."""
    if CUDA not in providers:
        return list(providers)
    settings: dict[str, Any] = {"device_id": device.index if device.index is not None else torch.cuda.current_device(),
                                "use_tf32": "1" if precision == "tf32" else "0"}
    if stream:
        settings["user_compute_stream"] = str(stream)
    return [(CUDA, settings) if p == CUDA else p for p in providers]


class OnnxRuntime(EngineBase):
    name = "onnxruntime"

    def __init__(self, options: OnnxRuntimeOptions | None = None) -> None:
        self.options = options or OnnxRuntimeOptions()
        self.session: ort.InferenceSession | None = None
        self.output_buffer: torch.Tensor | None = None
        self.bound = False

    def _session_options(self, level: ort.GraphOptimizationLevel) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        so.log_severity_level = 3  # errors only: the "hardware specific" warning is what the key covers
        if self.options.intra_op_threads:
            so.intra_op_num_threads = self.options.intra_op_threads
        return so

    def _optimise(self, ctx: BuildContext, folder: Any) -> None:
        """Build step: export (or reuse the export), then save ORT's optimised graph into `folder`."""
        export = "fp32" if ctx.precision == "tf32" else ctx.precision  # tf32 computes on an fp32 graph
        onnx_path, _ = exported_onnx(ctx, EngineCache(ctx.cache_dir), export, self.options.opset)
        so = self._session_options(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        so.optimized_model_filepath = str(folder / OPTIMISED)
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", OPTIMISED + ".data")
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort_session(onnx_path, provider_settings(self.providers, ctx.device, ctx.precision), so)  # saves the graph

    def build(self, ctx: BuildContext) -> BuildInfo:
        if ctx.precision == "bf16":
            raise UserError("precision: bf16 is not supported by engine onnxruntime (no bf16 kernels for these "
                            "models); use fp32, or fp16 on a GPU")
        self.providers = choose_providers(self.options.providers, ctx.device, ort.get_available_providers())
        t0 = time.perf_counter()
        fields = key_fields(ctx, self.name, self.options, {"onnxruntime": ort.__version__},
                            shapes=shape_profile(ctx.signature, ctx.bs, ctx.seq_len), providers=self.providers)
        entry = EngineCache(ctx.cache_dir).get_or_build(self.name, fields, lambda folder: self._optimise(ctx, folder))
        self.bound = self.providers[0] == CUDA and self.options.io_binding
        self.stream = EngineStream(ctx.device) if CUDA in self.providers else None
        self.session = ort_session(
            entry.path / OPTIMISED,
            provider_settings(self.providers, ctx.device, ctx.precision, self.stream and self.stream.handle),
            self._session_options(ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
        )
        self.output = ctx.signature.output
        if self.bound:
            self._allocate_output(ctx)
        return entry.build_info(self.name, time.perf_counter() - t0)

    def _allocate_output(self, ctx: BuildContext) -> None:
        """One output buffer at the largest shape a batch can have: (bs, seq_len, vocab)."""
        self.device = ctx.device
        self.device_index = ctx.device.index if ctx.device.index is not None else torch.cuda.current_device()
        meta = next(o for o in self.session.get_outputs() if o.name == self.output)
        self.vocab = int(meta.shape[-1]) if isinstance(meta.shape[-1], int) else int(ctx.config.vocab_size)
        shape = (ctx.bs, ctx.seq_len, self.vocab)
        self.output_buffer = torch.empty(shape, dtype=TORCH_TYPES[meta.type], device=ctx.device)

    def to_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        if self.bound:
            return super().to_device(inputs)
        return {name: tensor.numpy() for name, tensor in inputs.items()}

    def forward(self, device_inputs: dict[str, Any]) -> torch.Tensor:
        if not self.bound:
            return torch.from_numpy(self.session.run([self.output], device_inputs)[0])
        self.stream.begin(device_inputs.values())
        binding = self.session.io_binding()
        for name, tensor in device_inputs.items():
            binding.bind_input(name, "cuda", self.device_index, NUMPY_TYPES[tensor.dtype], tuple(tensor.shape),
                               tensor.data_ptr())
        first = next(iter(device_inputs.values()))
        shape = (first.shape[0], first.shape[1], self.vocab)
        if math.prod(shape) > self.output_buffer.numel():
            raise RuntimeError(f"batch of shape {tuple(first.shape)} is larger than the engine's (bs, seq_len)")
        out = self.output_buffer.view(-1)[: math.prod(shape)].view(shape)
        binding.bind_output(self.output, "cuda", self.device_index, NUMPY_TYPES[out.dtype], shape, out.data_ptr())
        self.session.run_with_iobinding(binding)
        self.stream.end()
        return out

    def close(self) -> None:
        self.session = None
        self.output_buffer = None
