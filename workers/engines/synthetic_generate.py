"""The null system under test for the generate task: generation of known cost, so every timing
raybench reports can be checked against truth.

A call is a static batch: prefill waits `prefill_ms_per_token` x the batch's prompt tokens (every
row's), then every request has its first token; each later decode step waits `decode_ms_per_step`
and makes one token for every request still running. So a request alone has TTFT = prefill x its
prompt length (plus its queueing) and TPOT = decode_ms_per_step. Tokens are a function of the
prompt and the step alone ((last prompt token x 7 + step) mod vocab), the same in any batch, so
the correctness check (`reference`) holds by construction. Waits are sleeps: many workers share
two cores without competing. `engine.fail_shards` / `fail_workers` / `fail_setup_workers` inject
faults as for the forward-pass synthetic engine.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from workers.engines.generation import Generated, GenerationRequest, TokenSink
from workers.engines.synthetic import FailureInjection
from workers.specs import SyntheticEngineOptions


def synthetic_tokens(request: GenerationRequest, vocab_size: int) -> list[int]:
    last = request.prompt_ids[-1] if request.prompt_ids else 0
    tokens = []
    for step in range(request.max_new_tokens):
        token = (last * 7 + step) % vocab_size
        tokens.append(token)
        if request.ends_with(token, step + 1):
            break
    return tokens


class SyntheticGenerator(FailureInjection):
    name = "synthetic"
    continuous = False
    runs_model = False
    thread_bound = False

    def __init__(self, options: SyntheticEngineOptions) -> None:
        self.options = options
        self.vocab_size = 1
        self.worker_id = 0


    def generate(self, requests: Sequence[GenerationRequest], on_token: TokenSink,
                 clock: Callable[[], float] = time.perf_counter) -> list[Generated]:
        planned = [synthetic_tokens(r, self.vocab_size) for r in requests]
        out = [Generated(r.request_id) for r in requests]
        start = time.perf_counter()
        due = start + self.options.prefill_ms_per_token / 1e3 * sum(len(r.prompt_ids) for r in requests)
        for step in range(max((len(p) for p in planned), default=0)):
            if step:
                due += self.options.decode_ms_per_step / 1e3
            _sleep_until(due)
            now = clock()
            for request, tokens, made in zip(requests, planned, out):
                if step < len(tokens):
                    made.token_ids.append(tokens[step])
                    on_token(request.request_id, tokens[step], now)
                    if step == len(tokens) - 1:
                        made.finish_reason = "length" if len(tokens) >= request.max_new_tokens else "eos"
        return out

    def reference(self, request: GenerationRequest) -> list[int]:
        return synthetic_tokens(request, self.vocab_size)

    def close(self) -> None:
        return None


def _sleep_until(deadline: float) -> None:
    """Waits against a schedule, not a sum of sleeps: an oversleep of one step (a busy machine) is
    taken back in the next, so a request's TPOT is decode_ms_per_step on average, not more."""
    left = deadline - time.perf_counter()
    if left > 0:
        time.sleep(left)
