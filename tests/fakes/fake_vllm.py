"""Stands for the `vllm` module (its offline engine API) on a machine that has no vLLM and no GPU.

Only what raybench's vllm generator calls: `EngineArgs(**kwargs)` and `SamplingParams(**kwargs)`
(kept as given), `LLMEngine.from_engine_args(args)`, and the engine's `add_request(request_id,
{"prompt_token_ids": [...]}, params)`, `has_unfinished_requests()`, `step()` and
`abort_request(id)`. Each step makes one token for every unfinished request, (last prompt token +
tokens so far) mod 1000, and returns `RequestOutput`-shaped objects whose `outputs[0].token_ids`
grow (as vLLM's do); a request ends at `max_tokens`, or at a `stop_token_ids` token unless
`ignore_eos`. It says nothing about how real vLLM schedules or how fast it is.
"""

from __future__ import annotations

import threading
import types
from dataclasses import dataclass, field
from typing import Any


class EngineArgs:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class SamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@dataclass
class _Running:
    prompt: list[int]
    params: SamplingParams
    tokens: list[int] = field(default_factory=list)


class FakeEngine:
    def __init__(self, args: EngineArgs) -> None:
        self.args = args
        self.running: dict[str, _Running] = {}
        self.added: list[tuple[str, dict, SamplingParams]] = []
        self.steps = 0
        self.lock = threading.Lock()

    def add_request(self, request_id: str, prompt: dict, params: SamplingParams) -> None:
        with self.lock:
            self.added.append((request_id, prompt, params))
            self.running[request_id] = _Running(list(prompt["prompt_token_ids"]), params)

    def has_unfinished_requests(self) -> bool:
        return bool(self.running)

    def abort_request(self, request_id: str) -> None:
        self.running.pop(request_id, None)

    def step(self) -> list[Any]:
        with self.lock:
            self.steps += 1
            outputs = []
            for request_id, run in list(self.running.items()):
                token = (run.prompt[-1] + len(run.tokens)) % 1000
                run.tokens.append(token)
                p = run.params.kwargs
                finished = len(run.tokens) >= p["max_tokens"] or (
                    not p["ignore_eos"] and token in p["stop_token_ids"])
                if finished:
                    del self.running[request_id]
                completion = types.SimpleNamespace(token_ids=list(run.tokens))
                outputs.append(types.SimpleNamespace(request_id=request_id, outputs=[completion], finished=finished))
            return outputs


class LLMEngine:
    made: list[FakeEngine] = []

    @classmethod
    def from_engine_args(cls, args: EngineArgs) -> FakeEngine:
        engine = FakeEngine(args)
        cls.made.append(engine)
        return engine


def module() -> types.ModuleType:
    """A fresh `vllm` module for sys.modules."""
    fake = types.ModuleType("vllm")
    fake.EngineArgs, fake.SamplingParams = EngineArgs, SamplingParams
    fake.LLMEngine = type("LLMEngine", (LLMEngine,), {"made": []})
    return fake
