"""`engine: torch` for the generate task: transformers' model with its dynamic KV cache, static batches.

Each call is one batch: prefill of the left-padded prompts (only the last position's logits kept),
then one forward of one token per row per step against the growing cache, until the batch's
longest request ends (workers/engines/decoding.py). Every token is told the moment it is on the
host, so the first one can leave the worker while the rest decode.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from workers.contract import BuildInfo
from workers.engines import BuildContext
from workers.engines.decoding import LeftPadded, cache_argument, decode, pad_id_of, plain_generate, returned_cache
from workers.engines.generation import Generated, GenerationRequest, TokenSink
from workers.engines.torch_eager import model_at
from workers.specs import TorchEngineOptions


class TorchGenerator:
    name = "torch"
    continuous = False
    runs_model = True
    thread_bound = False

    def __init__(self, options: TorchEngineOptions | None = None) -> None:
        self.options = options or TorchEngineOptions()
        self.model: torch.nn.Module | None = None
        self._running = 0

    def build(self, ctx: BuildContext) -> BuildInfo:
        from transformers import DynamicCache

        self.device = ctx.device
        self.model = model_at(ctx.model(), ctx.precision)
        self.pad_id = pad_id_of(self.model.config)
        self.cache_arg = cache_argument(self.model)
        self._new_cache = lambda: DynamicCache(config=self.model.config)
        return BuildInfo(engine=self.name)

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest], on_token: TokenSink,
                 clock: Callable[[], float] = time.perf_counter) -> list[Generated]:
        batch = LeftPadded.of(requests, self.pad_id, self.device)
        state = {"mask": batch.attention_mask, "positions": batch.position_ids[:, -1:]}
        output = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            position_ids=batch.position_ids, use_cache=True, logits_to_keep=1,
                            **{self.cache_arg: self._new_cache()})
        state["cache"] = returned_cache(output)

        def step(tokens: torch.Tensor, made: int) -> torch.Tensor:
            state["mask"] = torch.cat([state["mask"], state["mask"].new_ones(len(requests), 1)], dim=1)
            state["positions"] = state["positions"] + 1
            out = self.model(input_ids=tokens[:, None], attention_mask=state["mask"], position_ids=state["positions"],
                             use_cache=True, **{self.cache_arg: state["cache"]})
            state["cache"] = returned_cache(out)
            return out.logits[:, -1]

        self._running = len(requests)
        try:
            return decode(requests, output.logits[:, -1], step, on_token, clock)
        finally:
            self._running = 0

    def live(self) -> dict[str, int]:
        """The rows of the batch being decoded (a live metric)."""
        return {"running": self._running}

    def reference(self, request: GenerationRequest) -> list[int]:
        """Plain greedy `generate` of this prompt alone, with this generator's model."""
        return plain_generate(self.model, request, self.pad_id)

    def close(self) -> None:
        self.model = None
