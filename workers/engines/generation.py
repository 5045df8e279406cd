"""The Generator protocol beside `Engine`: an engine that generates, telling each token as it exists.

An `Engine` answers one forward pass per batch (logits, scored by the task). A `Generator` takes
requests (prompt ids, how many tokens to make) and runs prefill then decode steps, calling
`on_token(request_id, token_id, time_s)` the moment each new token exists, not at the end of its
batch, so a first token can reach LoadGen (`FirstTokenComplete`) or a live metric while the rest
are still decoding. `TokenStamps` turns those calls into `RequestRecord`s (workers/requests.py), the
one shape every way of making requests produces; latencies are computed from them in
orchestrator/metrics/requests.py. Timing inside a generator is the caller's clock, passed in.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from workers.contract import BuildInfo
from workers.engines import BuildContext
from workers.registry import resolve
from workers.requests import RequestError, RequestRecord
from workers.specs import Registered

TokenSink = Callable[[int, int, float], None]  # (request_id, token_id, time_s) the moment a token exists


@dataclass(frozen=True)
class Sampling:
    """Sampling instead of greedy decoding (the task's temperature > 0), seeded per request."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


@dataclass(frozen=True)
class GenerationRequest:
    request_id: int
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    ignore_eos: bool = True  # the throughput convention: always make max_new_tokens
    eos_ids: tuple[int, ...] = ()  # where a request stops when it does not ignore EOS (the EOS token is its last)
    sampling: Sampling | None = None  # None: greedy

    def ends_with(self, token_id: int, made: int) -> bool:
        """Whether the `made`-th token (1-based), `token_id`, is this request's last."""
        return made >= self.max_new_tokens or (not self.ignore_eos and token_id in self.eos_ids)


@dataclass
class Generated:
    request_id: int
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # length | eos | error


class Generator(Protocol):
    """`continuous`: the generator takes requests while others run (continuous batching): the decode
    loop hands it every request at once, and calls from several threads may overlap; otherwise it
    runs static batches, and the loop hands it one batch of at most bs requests per call.
    `runs_model`: False for the synthetic generator (it only waits: no FLOPs, no bytes)."""

    name: str
    continuous: bool
    runs_model: bool

    def build(self, ctx: BuildContext) -> BuildInfo: ...

    def generate(self, requests: Sequence[GenerationRequest], on_token: TokenSink,
                 clock: Callable[[], float] = time.perf_counter) -> list[Generated]:
        """Every request's tokens; `on_token` is called for each as it exists, stamped by `clock`."""

    def close(self) -> None: ...


def generator_class(options: Registered) -> type:
    """The Generator class the job's `engine:` options name for the generate task (workers/specs.py)."""
    return resolve("engine", options, options.generator)


class TokenStamps:
    """The records of requests a generator runs: their arrival (when they reached the system, on the
    same clock), then each token's time as `on_token` tells it, and the end."""

    def __init__(self, requests: Sequence[GenerationRequest], arrivals_s: Sequence[float], source: str = "") -> None:
        self.records = {r.request_id: RequestRecord(r.request_id, arrival, input_tokens=len(r.prompt_ids),
                                                    source=source)
                        for r, arrival in zip(requests, arrivals_s)}

    def started(self, time_s: float) -> None:
        for record in self.records.values():
            record.sent_s = time_s if record.sent_s is None else record.sent_s

    def on_token(self, request_id: int, token_id: int, time_s: float) -> None:
        record = self.records[request_id]
        record.token_times_s.append(time_s)
        record.token_counts.append(1)
        record.output_tokens += 1
        record.end_s = time_s

    def failed(self, kind: str, message: str, time_s: float) -> None:
        """The generator failed: every request of the call failed with it (their tokens so far kept)."""
        for record in self.records.values():
            record.error, record.end_s = RequestError(kind, message), time_s  # type: ignore[arg-type]

    def finish(self) -> list[RequestRecord]:
        return list(self.records.values())


@dataclass
class PendingCall:
    """One `generate` call's requests while an engine's own thread completes them (continuous
    batching's manager, vLLM's stepping loop): `done` is set when `pending` empties or `error` is set."""

    requests: dict[str, GenerationRequest]
    on_token: TokenSink
    clock: Callable[[], float]
    out: dict[str, Generated]
    pending: set[str]
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
