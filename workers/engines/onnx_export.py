"""torch -> ONNX, the one export step shared by the ONNX Runtime and TensorRT engines.

`torch.onnx.export` (the torch.export-based exporter) writes `model.onnx` with its weights in the
side file `model.onnx.data`, with the task's dynamic axes (batch, sequence) as named dynamic
dimensions and the opset the engine options state. The model is wrapped so the graph takes the
task's inputs in signature order and returns logits alone (no KV cache for causal LMs).

Each export is checked once, before it enters the cache, against torch on a real sample batch run
by ONNX Runtime: the largest |onnx - torch| logit difference over the positions that count (those
with attention_mask 1) must stay under a per-precision fraction of the largest |torch| logit.
A bound on the logits, not on top-1 agreement, because random test models have near-ties that
flip an argmax at any precision; the agreement is reported beside it.
"""

from __future__ import annotations

import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

from workers.engines import BuildContext, BuildFailed, call_kwargs
from workers.engines.cache import EngineCache, key_fields, library_version
from workers.engines.torch_eager import model_at
from workers.errors import UserError, first_line

ONNX_FILE = "model.onnx"
# max |onnx - torch| / max |torch| over counted positions; fp16/bf16 kernels differ in accumulation order.
CHECK_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2}
# torch.export specialises axes traced at size 0 or 1, so the export sample is at least 2 x 2.
EXPORT_BS, EXPORT_SEQ = 2, 16


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


def ort_session(path: Path, providers: list[str], options: Any = None):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise UserError("engine: checking and running ONNX exports needs onnxruntime: "
                        "pip install 'raybench[onnx]'") from exc
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def check_providers(device: torch.device) -> list[str]:
    """ONNX Runtime providers for the export check: the GPU where the worker has one and ORT can use it."""
    import onnxruntime as ort

    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


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
    """Run the export with ONNX Runtime and torch on `sample` and compare (see the module docstring)."""
    providers = check_providers(ctx.device)
    if precision == "bf16" and providers == ["CPUExecutionProvider"]:
        return "not checked: ONNX Runtime's CPU provider has no bf16 kernels"
    names = list(ctx.signature.inputs)
    session = ort_session(path, providers)
    got = torch.from_numpy(session.run([ctx.signature.output], {n: sample[n].cpu().numpy() for n in names})[0])
    del session
    with torch.inference_mode():
        want = LogitsOnly(model, names, ctx.causal)(*(sample[n].to(ctx.device) for n in names)).cpu()
    return compare_logits(got, want, sample.get("attention_mask"), precision)


def exported_onnx(ctx: BuildContext, cache: EngineCache, precision: str, opset: int) -> tuple[Path, bool]:
    """(path of the checked ONNX export of ctx's model at `precision`, whether it came from the cache).

    Keyed without shapes or device name (the graph has dynamic axes and runs anywhere), so ONNX
    Runtime and TensorRT jobs on the same model and precision share one export.
    """
    fields = key_fields(ctx, "onnx", {"opset": opset, "exporter": "torch.onnx.export"},
                        {"onnx": library_version("onnx"), "onnxscript": library_version("onnxscript")})
    fields.update(precision=precision, device=ctx.device.type)

    def build(folder: Path) -> None:
        model = model_at(ctx.model(), precision)
        sample = ctx.sample_inputs(EXPORT_BS, max(EXPORT_BS, min(ctx.seq_len, EXPORT_SEQ)))
        sample = {k: v.to(ctx.device) for k, v in sample.items()}
        export_model(model, sample, ctx.signature, ctx.causal, folder / ONNX_FILE, opset)
        (folder / "check.log").write_text(check_export(folder / ONNX_FILE, model, sample, ctx, precision) + "\n")

    entry = cache.get_or_build("onnx", fields, build)
    return entry.path / ONNX_FILE, entry.hit
