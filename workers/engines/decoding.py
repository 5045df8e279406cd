"""What the torch generators share: a left-padded static batch, the decode loop over it, token
choice (greedy or seeded sampling), and plain `generate` of one prompt alone, the reference.

A static batch is left-padded, each row's positions counted from its first real token
(`generate`'s own rule: cumsum of the mask - 1), so under the causal mask every real token sees
exactly what it would see alone: each request's greedy tokens are those of its prompt run alone
(tests/workers/engines/test_generators.py checks it against `model.generate`). Rows that finished
(their max_new_tokens, or EOS) keep being computed until the batch's longest one ends, as any
static batch does, but tell no more tokens.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from workers.engines.generation import Generated, GenerationRequest, TokenSink

Step = Callable[[torch.Tensor, int], torch.Tensor]  # (this step's tokens [B], tokens made so far) -> next logits [B, V]


def pad_id_of(config: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(config, name, None)
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, int):
            return value
    return 0


def cache_argument(model: torch.nn.Module) -> str:
    """The model's name for its KV cache argument: `cache` (transformers 5), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    return output.cache if getattr(output, "cache", None) is not None else output.past_key_values


@dataclass
class LeftPadded:
    input_ids: torch.Tensor  # [B, L], pad on the left
    attention_mask: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L]: each row from 0 at its first real token

    @staticmethod
    def of(requests: Sequence[GenerationRequest], pad_id: int, device: torch.device, rows: int | None = None,
           length: int | None = None) -> "LeftPadded":
        """`rows`/`length`: pad to that many rows (copies of the last request) and tokens (fixed shapes)."""
        count = rows or len(requests)
        width = length or max(len(r.prompt_ids) for r in requests)
        ids = torch.full((count, width), pad_id, dtype=torch.long)
        mask = torch.zeros((count, width), dtype=torch.long)
        for row in range(count):
            prompt = requests[min(row, len(requests) - 1)].prompt_ids
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        return LeftPadded(ids.to(device), mask.to(device), positions.to(device))


class Chooser:
    """The next token of each row: argmax of the last logits (greedy), or a draw from them for a
    request that samples (temperature, top-k, top-p; its own generator seeded with its seed)."""

    def __init__(self, requests: Sequence[GenerationRequest]) -> None:
        self.requests = requests
        self.rngs = {i: torch.Generator().manual_seed(r.sampling.seed) for i, r in enumerate(requests) if r.sampling}

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        tokens = logits.float().argmax(-1)
        if not self.rngs:
            return tokens
        host = logits.float().cpu()
        for row, rng in self.rngs.items():
            tokens[row] = sample(host[row], self.requests[row].sampling, rng)
        return tokens


def sample(logits: torch.Tensor, sampling: Any, rng: torch.Generator) -> int:
    scores = logits / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(scores, min(sampling.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        drop = torch.softmax(ordered, -1).cumsum(-1) > sampling.top_p
        drop[1:] = drop[:-1].clone()  # keep the token that crosses top_p
        drop[0] = False
        scores[order[drop]] = float("-inf")
    return int(torch.multinomial(torch.softmax(scores, -1), 1, generator=rng))


def decode(requests: Sequence[GenerationRequest], first_logits: torch.Tensor, step: Step, on_token: TokenSink,
           clock: Callable[[], float]) -> list[Generated]:
    """The decode loop of a static batch: choose, tell each running request its token (stamped once
    the tokens are on the host, which waits for the device), stop rows that ended, step."""
    out = [Generated(r.request_id) for r in requests]
    running = list(range(len(requests)))
    choose = Chooser(requests)
    logits, made = first_logits, 0
    while True:
        tokens = choose(logits)
        values = tokens.tolist()
        now = clock()
        made += 1
        still = []
        for row in running:
            request, token = requests[row], values[row]
            out[row].token_ids.append(token)
            on_token(request.request_id, token, now)
            if request.ends_with(token, made):
                out[row].finish_reason = "length" if made >= request.max_new_tokens else "eos"
            else:
                still.append(row)
        running = still
        if not running:
            return out
        logits = step(tokens, made)


def plain_generate(model: torch.nn.Module, request: GenerationRequest, pad_id: int) -> list[int]:
    """The reference: transformers' own greedy `generate` of the prompt alone, its output tokens.
    A config of its own, so no setting of the model's (a repetition penalty) changes the tokens. EOS
    is ignored with an empty `eos_token_id` (a None there falls back to the model's own EOS), else the
    request's EOS ids stop it (the EOS token kept, as generate does)."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    ids = torch.tensor([request.prompt_ids], dtype=torch.long, device=device)
    eos = [] if request.ignore_eos else list(request.eos_ids)
    config = GenerationConfig(max_new_tokens=request.max_new_tokens, do_sample=False, pad_token_id=pad_id,
                              eos_token_id=eos)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return out[0, ids.shape[1]:].tolist()
