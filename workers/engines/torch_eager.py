"""PyTorch eager: the reference framework, and an engine in its own right."""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch

from workers.contract import BuildInfo
from workers.engines import BuildContext, EngineBase, call_kwargs
from workers.measure.device import DTYPES
from workers.specs import TorchEngineOptions


def cast_copy(model: torch.nn.Module, dtype: torch.dtype, device: torch.device | None = None) -> torch.nn.Module:
    """A copy of `model` with floating-point parameters and buffers at `dtype` (as `model.to(dtype)`
    casts them) on `device` (default: where each tensor is), made one tensor at a time.

    Why not `copy.deepcopy(model).to(dtype)`: that holds a whole second copy at the source dtype on
    the model's device before casting it (a 7B model, fp32 val and fp16 infer: 28 + 28 + 14 GB, an
    OOM on an A100-40GB). Here the peak is the model plus its cast copy. Tied weights stay one
    tensor; a tensor already at `dtype` on `device` is shared, not copied.
    """
    memo: dict[int, Any] = {}
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if id(tensor) in memo:
                continue
            moved = tensor.to(device or tensor.device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
            if isinstance(tensor, torch.nn.Parameter):
                moved = torch.nn.Parameter(moved, requires_grad=tensor.requires_grad)
            memo[id(tensor)] = moved
    return copy.deepcopy(model, memo)  # the memo hands deepcopy the cast tensors instead of copying


def model_at(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model at `precision`: the same object when it already is, else a cast copy (`cast_copy`)."""
    dtype = DTYPES[precision]
    if next(model.parameters()).dtype == dtype:
        return model
    return cast_copy(model, dtype)


def takes_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes `logits_to_keep` (transformers' causal LMs: the LM head is
    applied to those sequence positions only)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


class TorchEager(EngineBase):
    name = "torch"
    always_loads_model = True

    def __init__(self, options: TorchEngineOptions | None = None) -> None:
        self.options = options or TorchEngineOptions()
        self.model: torch.nn.Module | None = None
        self.extra: dict[str, bool] = {}

    def build(self, ctx: BuildContext) -> BuildInfo:
        self.device = ctx.device
        self.model = model_at(ctx.model(), ctx.precision)
        self.extra = call_kwargs(ctx.causal)
        self.head_at_read_positions = ctx.causal and takes_logits_to_keep(self.model)
        return BuildInfo(engine=self.name)

    def warmup_rows(self, bs: int) -> int:
        """One: eager builds nothing per shape, so a warm-up takes its one-time costs (thread pools,
        the allocator, library handles and kernels loaded) with one prompt as well as with bs; on
        variable-length work every batch is a shape of its own anyway. A full batch of 5-shot MMLU
        prompts at bs 8 costs as much as 8 of them (4 to 7 s each on a 2-core CPU)."""
        return 1

    @torch.inference_mode()
    def forward(self, device_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**device_inputs, **self.extra).logits

    @torch.inference_mode()
    def forward_at(self, device_inputs: dict[str, torch.Tensor], positions: list[int]) -> torch.Tensor:
        """The LM head at the distinct positions of the batch only (`logits_to_keep` as a tensor of
        sequence positions: the same for every row, so at most `rows` of them), then row i's own.
        The logits are the whole forward's at those positions up to the rounding of a matmul of
        another shape (1e-6 on a tiny Llama, 0 on SmolLM2-135M in fp32 on the CPU);
        tests/workers/engines/test_engines_llama.py."""
        if not self.head_at_read_positions:
            return super().forward_at(device_inputs, positions)
        wanted = torch.tensor(positions, device=self.device)
        keep, row_index = torch.unique(wanted, sorted=True, return_inverse=True)
        logits = self.model(**device_inputs, **self.extra, logits_to_keep=keep).logits  # (rows, len(keep), vocab)
        return logits[torch.arange(len(positions), device=self.device), row_index]

    def close(self) -> None:
        self.model = None
