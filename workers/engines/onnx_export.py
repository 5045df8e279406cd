"""torch -> ONNX, the one export step shared by the ONNX Runtime and TensorRT engines.

`torch.onnx.export` (the torch.export-based exporter) writes `model.onnx` with its weights in the
side file `model.onnx.data`, with the task's dynamic axes (batch, sequence) as named dynamic
dimensions and the opset the engine options state. The model is wrapped so the graph takes the
task's inputs in signature order and returns logits alone (no KV cache for causal LMs).

Device memory. The export is made from a copy of the model on the host at the export precision,
copied tensor by tensor (`host_copy`): no second copy of the weights is ever made on the model's
device. (Copying the loaded model on the GPU and casting it to fp32 would hold, for a 7B fp16
model, 14 + 14 + 28 GB at the peak: more than the seed's A100-40GB.) The host needs the export
precision's copy (28 GB for a 7B model at fp32) while the export runs.

Each export is checked once, before it enters the cache, against torch on a real sample batch run
by ONNX Runtime: the largest |onnx - torch| logit difference over the positions that count (those
with attention_mask 1) must stay under a per-precision fraction of the largest |torch| logit.
A bound on the logits, not on top-1 agreement, because random test models have near-ties that
flip an argmax at any precision; the agreement is reported beside it. The torch side is the loaded
model on its device (at the val precision), so the check adds no copy of it either; ONNX Runtime
runs the check on the GPU only when the export fits in half the device's free memory (it holds its
own copy of the weights), else on the CPU.
"""

from __future__ import annotations

import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

from workers.engines import BuildContext, BuildFailed, call_kwargs
from workers.engines.cache import EngineCache, key_fields, library_version
from workers.engines.torch_eager import cast_copy
from workers.errors import UserError, first_line
from workers.measure.device import DTYPES

ONNX_FILE = "model.onnx"
# max |onnx - torch| / max |torch| over counted positions; fp16/bf16 kernels differ in accumulation order.
CHECK_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2, "tf32": 2e-2}
# torch.export specialises axes traced at size 0 or 1, so the export sample is at least 2 x 2.
EXPORT_BS, EXPORT_SEQ = 2, 16
HOST = torch.device("cpu")  # where the export's copy of the model lives (module docstring)
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def host_copy(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model on HOST at `precision`, copied one tensor at a time (never whole on its device).

    Floating-point parameters and buffers are cast as `model.to(dtype)` would cast them; tied
    weights stay one tensor. A tensor already on HOST at that dtype is shared, not copied.
    """
    return cast_copy(model, DTYPES[precision], HOST)


class LogitsOnly(torch.nn.Module):
    """The model with positional inputs in signature order and logits as its only output."""

    def __init__(self, model: torch.nn.Module, names: list[str], causal: bool) -> None:
        super().__init__()
        self.model, self.names, self.causal = model, names, causal

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors)), **call_kwargs(self.causal)).logits


def export_model(model: torch.nn.Module, sample: dict[str, torch.Tensor], signature: Any, causal: bool,
                 path: Path, opset: int) -> None:
    """Write `path` (+ `path`.data): the model's logits as ONNX with the signature's dynamic axes."""
    names = list(signature.inputs)
    dims: dict[str, Any] = {}  # one Dim per axis name, so every input shares batch and sequence
    shapes = tuple(
        {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in signature.inputs[name].items()}
        for name in names
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LogitsOnly(model, names, causal).eval(), tuple(sample[n] for n in names), f=str(path),
                input_names=names, output_names=[signature.output], opset_version=opset,
                dynamic_shapes=(shapes,), external_data=True, verbose=False,
            )
    except ImportError as exc:  # torch's exporter imports onnx and onnxscript lazily
        raise UserError(f"engine: the ONNX export needs the Python package '{exc.name or exc}': "
                        "pip install 'raybench[onnx]'") from exc
    except Exception as exc:  # noqa: BLE001 - a model the exporter cannot handle: the user's to know
        raise BuildFailed(f"engine: torch.onnx.export failed for this model (opset {opset}): {first_line(exc)}",
                          detail=traceback.format_exc()) from exc


def ort_session(path: Path, providers: list[Any], options: Any = None):
    """An ONNX Runtime session over `path` that runs on the providers asked for.

    ONNX Runtime lists CUDA among its available providers whenever onnxruntime-gpu is installed,
    but when the provider's CUDA or cuDNN libraries do not load, the session only logs it and runs
    on the CPU (microsoft/onnxruntime#21769): IO binding then fails on every batch, or a CPU run is
    reported as the GPU's. So a session asked for CUDA must have it (`get_providers()`), checked
    here, before anything the session made (an optimised graph) can enter a cache. The CUDA and
    cuDNN libraries are preloaded first where ORT can (`preload_dlls`, ORT >= 1.21; torch is
    imported already, so a torch of the same CUDA major lends its own).
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise UserError("engine: checking and running ONNX exports needs onnxruntime: "
                        "pip install 'raybench[onnx]'") from exc
    wants_cuda = CUDA in [p[0] if isinstance(p, tuple) else p for p in providers]
    if wants_cuda and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if wants_cuda and CUDA not in session.get_providers():
        raise UserError(lost_cuda_provider(ort))
    return session


def lost_cuda_provider(ort: Any) -> str:
    """The one line for a session that asked for CUDA and got the CPU: the libraries ORT needs."""
    from onnxruntime.capi import build_and_package_info as built

    def major(version: str) -> str:
        return version.split(".")[0] if version else "?"

    package = getattr(ort, "package_name", "") or "onnxruntime"
    cuda = getattr(ort, "cuda_version", "") or getattr(built, "cuda_version", "")
    cudnn = getattr(built, "cudnn_version", "") or "9"  # every CUDA build of ORT since 1.19 links cuDNN 9
    return (f"engine: {package} {ort.__version__} could not load its CUDA provider (needs CUDA {major(cuda)} and "
            f"cuDNN {major(cudnn)} libraries; torch has CUDA {torch.version.cuda or 'none'}) and fell back to the CPU: "
            "pip uninstall onnxruntime onnxruntime-gpu, then install the onnxruntime-gpu for torch's CUDA, or use "
            "engine.providers: [CPUExecutionProvider]")


def check_providers(device: torch.device, export_bytes: int) -> list[Any]:
    """ONNX Runtime providers for the export check: the worker's GPU where ORT can use it and the
    export fits in half its free memory (ORT loads its own copy of the weights), else the CPU."""
    import onnxruntime as ort

    if device.type == "cuda" and CUDA in ort.get_available_providers():
        free_bytes, _ = torch.cuda.mem_get_info(device)
        if export_bytes < free_bytes // 2:
            return [(CUDA, {"use_tf32": "0"}), CPU]  # checked at full fp32 (workers/engines/onnxruntime.py)
    return [CPU]


def precision_of(model: torch.nn.Module) -> str:
    dtype = next(model.parameters()).dtype
    return next((name for name, d in DTYPES.items() if d == dtype), "fp32")


def compare_logits(got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor | None, precision: str) -> str:
    """A one-line summary of the check; raises BuildFailed when the export is off beyond tolerance."""
    keep = mask.bool() if mask is not None else torch.ones(want.shape[:2], dtype=torch.bool)
    got, want = got.float()[keep], want.float()[keep]
    diff = (got - want).abs().max().item()
    scale = max(want.abs().max().item(), 1e-6)
    agree = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    summary = (f"max |diff| {diff:.3g} = {diff / scale:.2%} of the largest logit, "
               f"top-1 agreement {agree:.1%} over {keep.sum().item()} positions")
    if not diff / scale <= CHECK_TOLERANCE[precision]:
        raise BuildFailed(f"engine: the ONNX export disagrees with torch on a sample batch ({summary}; "
                          f"tolerance {CHECK_TOLERANCE[precision]:.1%} at {precision})", detail=summary)
    return summary


def check_export(path: Path, model: torch.nn.Module, sample: dict[str, torch.Tensor], ctx: BuildContext,
                 precision: str) -> str:
    """Run the export with ONNX Runtime and `model` (the loaded one, on its device) on `sample` and
    compare (see the module docstring); the tolerance is the looser of the two precisions'."""
    export_bytes = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    providers = check_providers(ctx.device, export_bytes)
    if precision == "bf16" and providers == [CPU]:
        return "not checked: ONNX Runtime's CPU provider has no bf16 kernels"
    if precision == "fp16" and providers == [CPU] and ctx.device.type == "cuda":
        return (f"not checked: the {export_bytes / 2**30:.1f} GiB fp16 export does not fit in half the GPU's free "
                "memory beside the model, and ONNX Runtime's CPU provider lacks fp16 kernels for these models")
    names = list(ctx.signature.inputs)
    session = ort_session(path, providers)
    got = torch.from_numpy(session.run([ctx.signature.output], {n: sample[n].cpu().numpy() for n in names})[0])
    del session
    with torch.inference_mode():
        want = LogitsOnly(model, names, ctx.causal)(*(sample[n].to(ctx.device) for n in names)).cpu()
    looser = max(precision, precision_of(model), key=CHECK_TOLERANCE.__getitem__)
    return compare_logits(got, want, sample.get("attention_mask"), looser)


def exported_onnx(ctx: BuildContext, cache: EngineCache, precision: str, opset: int) -> tuple[Path, bool]:
    """(path of the checked ONNX export of ctx's model at `precision`, whether it came from the cache).

    Keyed without shapes or device name (the graph has dynamic axes and runs anywhere), so ONNX
    Runtime and TensorRT jobs on the same model and precision share one export.
    """
    fields = key_fields(ctx, "onnx", {"opset": opset, "exporter": "torch.onnx.export"},
                        {"onnx": library_version("onnx"), "onnxscript": library_version("onnxscript")})
    fields.update(precision=precision, device=ctx.device.type, exported_on=HOST.type)

    def build(folder: Path) -> None:
        model = ctx.model()
        sample = ctx.sample_inputs(EXPORT_BS, max(EXPORT_BS, min(ctx.seq_len, EXPORT_SEQ)))
        export_model(host_copy(model, precision), {k: v.to(HOST) for k, v in sample.items()}, ctx.signature,
                     ctx.causal, folder / ONNX_FILE, opset)  # the host copy is freed when this returns
        sample = {k: v.to(ctx.device) for k, v in sample.items()}
        (folder / "check.log").write_text(check_export(folder / ONNX_FILE, model, sample, ctx, precision) + "\n")

    entry = cache.get_or_build("onnx", fields, build)
    return entry.path / ONNX_FILE, entry.hit
