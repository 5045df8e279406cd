"""`engine: continuous_batching`: transformers' own continuous batching, not one written here.

One manager per worker (`model.init_continuous_batching`), started at build and running in its
own thread: between decode steps it takes in new requests (prefill, chunked within
`max_batch_tokens`) and lets finished ones go, on a paged KV cache of `num_blocks` pages of
`page_size` tokens. Requests are added streaming with per-token timestamps; one reader thread here
takes every output the manager makes and hands each request's new tokens to the call that added
it, so calls from several threads may overlap (a worker under LoadGen's Server load takes new
requests while others decode) and each token is told as it exists.

Timestamps: the manager stamps each token with `time.perf_counter()` in its step, right after the
step's tokens reach the host; with the default clock those stamps are used, with another clock
the reader stamps on arrival (a few ms later under load). EOS: a request that ignores it is added
with `eos_token_id=-1` (no stop token; transformers' own convention), so its tokens equal plain
`generate` with EOS ignored. The cache is sized here on purpose: transformers' default on a CPU
is 60 % of the machine's free RAM, allocated at start.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from typing import Any, Callable, Sequence

import torch

from workers.contract import BuildInfo
from workers.engines import BuildContext
from workers.engines.decoding import pad_id_of, plain_generate
from workers.engines.generation import Generated, GenerationRequest, PendingCall, Sampling, TokenSink
from workers.engines.torch_eager import model_at
from workers.errors import UserError
from workers.specs import ContinuousBatchingOptions

HEADROOM = 1.25  # KV pages beyond bs requests of the longest context: the scheduler keeps a safety margin free


def _settings(sampling: Sampling | None) -> tuple | None:
    """What the manager's generation config fixes for every request (greedy: None); the seed is the
    first sampling request's: transformers' continuous batching draws from one generator."""
    return None if sampling is None else (sampling.temperature, sampling.top_p, sampling.top_k)


class ContinuousBatching:
    name = "continuous_batching"
    continuous = True
    runs_model = True
    thread_bound = False

    def __init__(self, options: ContinuousBatchingOptions | None = None) -> None:
        self.options = options or ContinuousBatchingOptions()
        self.manager: Any = None
        self._calls: dict[str, PendingCall] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._sampling: Sampling | None = None
        self._reader: threading.Thread | None = None

    def build(self, ctx: BuildContext) -> BuildInfo:
        self.model = model_at(ctx.model(), ctx.precision)
        self.pad_id = pad_id_of(self.model.config)
        pages_per_request = math.ceil(ctx.seq_len / self.options.page_size)
        self.num_blocks = self.options.num_blocks or math.ceil(ctx.bs * pages_per_request * HEADROOM) + 2
        self.bs = ctx.bs
        self._start(None)
        return BuildInfo(engine=self.name)

    def _start(self, sampling: Sampling | None) -> None:
        """(Re)start the manager with the generation settings of `sampling` (greedy: None)."""
        from transformers import ContinuousBatchingConfig, GenerationConfig

        self._stop()
        gen: dict[str, Any] = {"do_sample": False}
        if sampling is not None:
            gen = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p,
                   "top_k": sampling.top_k or None}
        config = GenerationConfig(max_new_tokens=1, eos_token_id=-1, pad_token_id=self.pad_id, **gen)
        cb = ContinuousBatchingConfig(page_size=self.options.page_size, num_blocks=self.num_blocks,
                                      max_batch_tokens=self.options.max_batch_tokens, max_requests_per_batch=self.bs,
                                      scheduler_type=self.options.scheduler,
                                      seed=sampling.seed if sampling is not None else None)
        self.manager = self.model.init_continuous_batching(generation_config=config, continuous_batching_config=cb)
        self.manager.start()
        self._sampling = sampling
        self._reader = threading.Thread(target=self._read, args=(self.manager,), name="raybench-cb-reader",
                                        daemon=True)
        self._reader.start()

    def generate(self, requests: Sequence[GenerationRequest], on_token: TokenSink,
                 clock: Callable[[], float] = time.perf_counter) -> list[Generated]:
        sampling = requests[0].sampling if requests else None
        if requests and _settings(sampling) != _settings(self._sampling):  # one manager runs one set of settings
            self._start(sampling)
        names = [f"r{r.request_id}-{next(self._ids)}" for r in requests]
        call = PendingCall(dict(zip(names, requests)), on_token, clock, {n: Generated(r.request_id) for n, r in
                                                                   zip(names, requests)}, set(names))
        if not names:
            return []
        with self._lock:
            for name in names:
                self._calls[name] = call
        for name, request in zip(names, requests):
            eos = -1 if request.ignore_eos else list(request.eos_ids)
            added = self.manager.add_request(list(request.prompt_ids), request_id=name,
                                             max_new_tokens=request.max_new_tokens, streaming=True,
                                             record_timestamps=True, eos_token_id=eos)
            if added is None:
                call.error = "the continuous batching manager refused a request (it is stopping)"
                call.done.set()
        call.done.wait()
        with self._lock:
            for name in names:
                self._calls.pop(name, None)
        if call.error is not None:
            raise RuntimeError(f"continuous batching: {call.error}")
        return [call.out[name] for name in names]

    def _read(self, manager: Any) -> None:
        """Every output the manager makes, to the call that added its request (module docstring)."""
        for output in manager:
            with self._lock:
                call = self._calls.get(output.request_id)
            if call is None:
                continue
            self._deliver(call, output)

    def _deliver(self, call: PendingCall, output: Any) -> None:
        name, request = output.request_id, call.requests[output.request_id]
        generated = call.out[name]
        own_clock = call.clock is time.perf_counter
        stamps = list(getattr(output, "timestamps", None) or [])
        for k in range(len(generated.token_ids), len(output.generated_tokens)):
            token = int(output.generated_tokens[k])
            generated.token_ids.append(token)
            call.on_token(request.request_id, token, stamps[k] if own_clock and k < len(stamps) else call.clock())
        if output.error:
            call.error = f"request {request.request_id}: {output.error}"
            call.done.set()
        elif output.is_finished():
            made = len(generated.token_ids)
            generated.finish_reason = "length" if made >= request.max_new_tokens else "eos"
            call.pending.discard(name)
            if not call.pending:
                call.done.set()

    def live(self) -> dict[str, int]:
        """Running and waiting requests and KV-cache pages in use, read from the manager's state (as
        `transformers serve` does for its own status line: there is no public API for it)."""
        processor = getattr(self.manager, "batch_processor", None)
        if processor is None:
            return {}
        allocator = next(iter(processor.cache.cache_allocators.values()))
        return {"running": len(processor.scheduler.active_requests),
                "waiting": len(processor.scheduler.waiting_requests) + self.manager.input_queue.qsize(),
                "kv_blocks_used": sum(len(b) for b in allocator.block_table.values()),
                "kv_blocks_total": int(allocator.num_blocks)}

    def reference(self, request: GenerationRequest) -> list[int]:
        """Plain greedy `generate` of the prompt alone, on the same model, the manager paused."""
        if self.manager is None:
            raise UserError("engine: continuous_batching is closed")
        with self.manager.pause():
            return plain_generate(self.model, request, self.pad_id)

    def _stop(self) -> None:
        manager, self.manager = self.manager, None
        if manager is not None:
            manager.stop(block=True, timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None

    def close(self) -> None:
        self._stop()
        self.model = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device
