"""A Generator of known cost, standing for a real decode engine in tests of the generation contract:
prefill waits `prefill_ms_per_token` x the batch's prompt tokens, then each decode step waits
`decode_ms_per_step` and makes one token for every request still running (token id = step). Steps
keep to a schedule from the call's start (a step that overslept on a busy machine is taken back by
the next), so a request's TPOT is the stated cost up to one oversleep over all its steps."""

from __future__ import annotations

import time
from typing import Callable, Sequence

from workers.contract import BuildInfo
from workers.engines.generation import Generated, GenerationRequest, TokenSink


class PacedGenerator:
    name = "paced"
    continuous = False  # static batches: the decode loop hands it at most bs requests per call
    runs_model = True

    def __init__(self, prefill_ms_per_token: float, decode_ms_per_step: float) -> None:
        self.prefill_s = prefill_ms_per_token / 1e3
        self.decode_s = decode_ms_per_step / 1e3

    def build(self, ctx) -> BuildInfo:
        return BuildInfo(engine=self.name)

    def generate(self, requests: Sequence[GenerationRequest], on_token: TokenSink,
                 clock: Callable[[], float] = time.perf_counter) -> list[Generated]:
        out = {r.request_id: Generated(r.request_id) for r in requests}
        due = time.perf_counter() + self.prefill_s * sum(len(r.prompt_ids) for r in requests)
        for step in range(max(r.max_new_tokens for r in requests)):
            due += self.decode_s if step else 0.0
            time.sleep(max(0.0, due - time.perf_counter()))
            for r in requests:
                if step < r.max_new_tokens:
                    out[r.request_id].token_ids.append(step)
                    on_token(r.request_id, step, clock())
        return list(out.values())

    def close(self) -> None:
        return None
