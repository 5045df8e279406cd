"""`engine: torch_compile` for the generate task: a static KV cache and a compiled decode step.

A decode step has one shape whatever the request: `bs` rows (a smaller batch is padded with copies
of its last request, whose tokens are told to no one), one token each, against a cache of
`max_context` positions (the longest prompt plus the longest output of the prepared requests) with
a mask of that width. So `torch.compile` (the job's mode and backend; `dynamic: false` unless the
job says) compiles it once, at build, where a dummy batch runs it: compile time is build time, and
no compile lands in a timed call. The prefill runs eager (prompts differ in length). One
`StaticCache` is kept and reset between calls, so its tensors are the same ones every step.
Tokens equal plain greedy `generate` of each prompt alone (tests/workers/engines/test_generators.py).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable, Sequence

import torch

from workers.contract import BuildInfo
from workers.engines import BuildContext
from workers.engines.decoding import LeftPadded, cache_argument, decode, pad_id_of, plain_generate
from workers.engines.generation import Generated, GenerationRequest, TokenSink
from workers.engines.torch_compile import needs_its_thread
from workers.engines.torch_eager import model_at
from workers.errors import UserError
from workers.specs import TorchCompileOptions

WARM_PROMPT, WARM_TOKENS = 4, 3  # the dummy batch that compiles the step at build
PAD_ROW = -1  # the request id of the rows that pad a batch to bs: their tokens are told to no one


class CompiledGenerator:
    name = "torch_compile"
    continuous = False
    runs_model = True

    def __init__(self, options: TorchCompileOptions | None = None) -> None:
        self.options = options or TorchCompileOptions()
        self.model: torch.nn.Module | None = None
        self.step: Any = None

    def build(self, ctx: BuildContext) -> BuildInfo:
        from transformers import StaticCache

        t0 = time.perf_counter()
        self.device, self.rows, self.width = ctx.device, ctx.bs, ctx.seq_len
        self.thread_bound = needs_its_thread(self.options, ctx.device)
        self.model = model_at(ctx.model(), ctx.precision)
        self.pad_id = pad_id_of(self.model.config)
        self.cache_arg = cache_argument(self.model)
        self.cache = StaticCache(config=self.model.config, max_cache_len=self.width)
        opts = self.options
        kwargs: dict[str, Any] = {"backend": opts.backend, "fullgraph": opts.fullgraph,
                                  "dynamic": False if opts.dynamic is None else opts.dynamic}
        if opts.backend == "inductor":
            kwargs["mode"] = opts.mode
        try:
            self.step = torch.compile(self._decode_step, **kwargs)
        except torch._dynamo.exc.InvalidBackend as exc:
            known = ", ".join(torch._dynamo.list_backends())
            raise UserError(f"engine.backend: '{opts.backend}' is not a torch.compile backend (known: {known})") from exc
        warm = GenerationRequest(0, (self.pad_id,) * WARM_PROMPT, WARM_TOKENS)
        self.generate([warm], lambda *_: None)  # compiles the step (and a second call, for CUDA graphs' record)
        self.generate([warm], lambda *_: None)
        return BuildInfo(engine=self.name, build_seconds=time.perf_counter() - t0)

    def _decode_step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                     cache: Any) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=True, **{self.cache_arg: cache}).logits[:, -1]

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerationRequest], on_token: TokenSink,
                 clock: Callable[[], float] = time.perf_counter) -> list[Generated]:
        if len(requests) > self.rows:
            raise ValueError(f"a static batch of {len(requests)} requests is more than bs={self.rows}")
        batch = LeftPadded.of(requests, self.pad_id, self.device, rows=self.rows)
        prompt = batch.input_ids.shape[1]
        mask = torch.zeros((self.rows, self.width), dtype=torch.long, device=self.device)
        mask[:, :prompt] = batch.attention_mask
        self.cache.reset()
        output = self.model(input_ids=batch.input_ids, attention_mask=mask[:, :prompt], position_ids=batch.position_ids,
                            use_cache=True, logits_to_keep=1, **{self.cache_arg: self.cache})
        state = {"positions": batch.position_ids[:, -1:]}

        def step(tokens: torch.Tensor, made: int) -> torch.Tensor:
            mask[:, prompt + made - 1] = 1
            state["positions"] = state["positions"] + 1
            return self.step(tokens[:, None], mask, state["positions"], self.cache)

        pads = [replace(requests[-1], request_id=PAD_ROW) for _ in range(self.rows - len(requests))]

        def told(request_id: int, token_id: int, time_s: float) -> None:
            if request_id != PAD_ROW:
                on_token(request_id, token_id, time_s)

        return decode([*requests, *pads], output.logits[:, -1], step, told, clock)[: len(requests)]

    def reference(self, request: GenerationRequest) -> list[int]:
        return plain_generate(self.model, request, self.pad_id)

    def close(self) -> None:
        self.model = self.step = self.cache = None

