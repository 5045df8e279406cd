"""PyTorch eager: the reference framework, and an engine in its own right."""

from __future__ import annotations

import copy

import torch

from workers.contract import BuildInfo
from workers.engines import BuildContext, EngineBase, call_kwargs
from workers.measure.device import DTYPES
from workers.specs import TorchEngineOptions


def model_at(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model at `precision`: the same object when it already is, else a cast copy."""
    dtype = DTYPES[precision]
    if next(model.parameters()).dtype == dtype:
        return model
    return copy.deepcopy(model).to(dtype)


class TorchEager(EngineBase):
    name = "torch"

    def __init__(self, options: TorchEngineOptions | None = None) -> None:
        self.options = options or TorchEngineOptions()
        self.model: torch.nn.Module | None = None
        self.extra: dict[str, bool] = {}

    def build(self, ctx: BuildContext) -> BuildInfo:
        self.device = ctx.device
        self.model = model_at(ctx.model(), ctx.precision)
        self.extra = call_kwargs(ctx.causal)
        return BuildInfo(engine=self.name)

    @torch.inference_mode()
    def forward(self, device_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**device_inputs, **self.extra).logits

    def close(self) -> None:
        self.model = None
