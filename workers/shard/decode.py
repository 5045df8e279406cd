"""The decode loop: the generate task's requests through a Generator, timed once, here.

Beside passes.py's timing loop, and shaped like it: per call of the generator (a static batch of
at most bs requests, or every request at once for a continuous generator) the call is the core
time (device synchronised on both sides), each token is stamped as the generator tells it
(TokenStamps: workers/engines/generation.py), and the call's figures are added into the shard's
result: requests (examples), output tokens (items), FLOPs, and the prefill / decode split
(`DecodeTotals`). Records are made on `time.perf_counter()` and handed back in epoch seconds of
this node, so the driver can pool them with other workers' and with the pass's start.

Arrival: an Offline request arrives when its pass began on the driver (`ShardTask.arrival_ts`),
so its wait behind earlier shards and batches counts in its TTFT; without one (a LoadGen batch,
whose arrival the driver keeps) it arrives when the call reaches the worker.

`emit` (LoadGen's streaming hand-over): each request's first token is told the moment it exists,
`("first", request_id, token_id)`, and its end, `("done", request_id, output ids, seconds from its
first token to each token, prompt tokens)`, so the driver completes it in LoadGen without waiting
for its batch. (A LoadGen batch's request ids are the samples' rows in it: a sample may repeat.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from workers.contract import DecodeTotals, ShardResult
from workers.engines.generation import Generated, GenerationRequest, TokenStamps
from workers.measure.device import MemoryProbe
from workers.measure.device_watch import DeviceWatch
from workers.measure.energy import EnergyCounter
from workers.measure.flops import FlopsModel
from workers.measure.timing import CoreTimer, Stopwatch
from workers.requests import RequestRecord
from workers.shard.passes import begin_span, end_span

Emit = Callable[[Any], None]


@dataclass(frozen=True)
class DecodeCost:
    """What a request costs the device: FLOPs (workers/measure/flops.py) and, per decode step of a
    static batch, the bytes it must read: every weight once, and every row's KV cache so far
    (padding included: the attention reads it). `runs_model` False (the synthetic generator): none."""

    flops: FlopsModel
    weight_bytes: int
    kv_bytes_per_token: int
    runs_model: bool = True

    def flops_split(self, prompt: int, made: int) -> tuple[float, float]:
        """(prefill, decode) FLOPs of one request: its prompt; then every output token but the last
        fed back, each attending to the context so far."""
        if not self.runs_model:
            return 0.0, 0.0
        prefill = self.flops.sequence_flops(prompt)
        return prefill, self.flops.sequence_flops(prompt + max(made - 1, 0)) - prefill

    def static_decode_bytes(self, rows: int, padded_prompt: int, steps: int) -> float:
        """Bytes read by `steps` decode steps of a static batch of `rows` rows left-padded to `padded_prompt`."""
        if not self.runs_model:
            return 0.0
        context = steps * padded_prompt + steps * (steps + 1) / 2  # summed over steps: the cache before each
        return steps * self.weight_bytes + rows * self.kv_bytes_per_token * context


class Teller:
    """Stamps each token (TokenStamps), counts it for the live metrics (`meter.tokens_made`) and, with
    `emit`, tells a request's first token and its end."""

    def __init__(self, requests: Sequence[GenerationRequest], stamps: TokenStamps, emit: Emit | None,
                 meter: Any = None) -> None:
        self.requests = {r.request_id: r for r in requests}
        self.stamps, self.emit, self.meter = stamps, emit, meter
        self.tokens: dict[int, list[int]] = {r.request_id: [] for r in requests}

    def on_token(self, request_id: int, token_id: int, time_s: float) -> None:
        self.stamps.on_token(request_id, token_id, time_s)
        if self.meter is not None:
            self.meter.tokens_made += 1
        if self.emit is None:
            return
        tokens = self.tokens[request_id]
        tokens.append(token_id)
        if len(tokens) == 1:
            self.emit(("first", request_id, token_id))
        if self.requests[request_id].ends_with(token_id, len(tokens)):
            times = self.stamps.records[request_id].token_times_s
            self.emit(("done", request_id, list(tokens), [t - times[0] for t in times],
                       len(self.requests[request_id].prompt_ids)))


def run_generation(generator: Any, waves: Sequence[Sequence[GenerationRequest]], cost: DecodeCost,
                   record: Callable[[Generated], dict[str, Any]], device: Any, memory: MemoryProbe,
                   result: ShardResult, arrival_ts: float | None = None, emit: Emit | None = None,
                   energy: EnergyCounter | None = None, device_watch: DeviceWatch | None = None,
                   meter: Any = None) -> ShardResult:
    """Every wave through `generator` into `result` (module docstring)."""
    timer = CoreTimer(device)  # one per call: calls of a continuous generator may overlap
    to_epoch = time.time() - time.perf_counter()
    source = f"worker {result.worker_id}"
    totals = DecodeTotals() if not generator.continuous else DecodeTotals(prefill_seconds=None, decode_seconds=None,
                                                                          decode_bytes=None)
    span = begin_span(energy, device_watch)
    with Stopwatch() as watch:
        arrival = arrival_ts - to_epoch if arrival_ts is not None else time.perf_counter()
        for wave in waves:
            stamps = TokenStamps(wave, [arrival] * len(wave), source)
            teller = Teller(wave, stamps, emit, meter)
            began = time.perf_counter()
            stamps.started(began)
            generated, core_s = timer.time(lambda: generator.generate(wave, teller.on_token))
            records = stamps.finish()
            totals = totals.add(_wave_totals(cost, wave, generated, records, began, core_s, generator.continuous))
            made = sum(len(g.token_ids) for g in generated)
            result.examples += len(wave)
            result.items += made
            result.core_seconds += core_s
            result.batch_core_seconds.append(core_s)
            result.batch_items.append(made)
            result.batch_rows.append(len(wave))
            # the call's shape for the cost fit (orchestrator/metrics/cost_fit.py): the positions a row runs
            # through, its padded prompt and its decode steps (the longest request's tokens but one)
            result.batch_seq_lens.append(max(len(r.prompt_ids) for r in wave) + max(made_by_row(generated)) - 1)
            result.bytes_per_batch = max(result.bytes_per_batch, 8 * len(wave) * max(len(r.prompt_ids) for r in wave))
            result.records.extend(record(g) for g in generated)
            result.requests.extend(_shifted(r, to_epoch) for r in records)
    result.flops = totals.prefill_flops + totals.decode_flops
    result.decode = totals
    result.wall_seconds, result.start_ts, result.end_ts = watch.seconds, watch.start_ts, watch.end_ts
    end_span(span, energy, device_watch, result)
    result.peak_mem_bytes = memory.sample()
    result.mem_total_bytes = memory.total_bytes()
    result.mem_source = memory.source
    return result


def made_by_row(generated: list[Generated]) -> list[int]:
    return [len(g.token_ids) for g in generated] or [1]


def _wave_totals(cost: DecodeCost, wave: Sequence[GenerationRequest], generated: list[Generated],
                 records: list[RequestRecord], began: float, core_s: float, continuous: bool) -> DecodeTotals:
    """One call's totals. A static batch's prefill ends at its first tokens (all rows get theirs at
    once); its decode is the rest of the call, its steps the longest request's tokens but one."""
    prefill_flops = decode_flops = 0.0
    for request, made in zip(wave, generated):
        p, d = cost.flops_split(len(request.prompt_ids), len(made.token_ids))
        prefill_flops, decode_flops = prefill_flops + p, decode_flops + d
    inputs = sum(len(r.prompt_ids) for r in wave)
    if continuous:
        return DecodeTotals(inputs, None, prefill_flops, None, decode_flops, None)
    firsts = [r.first_token_s for r in records if r.first_token_s is not None]
    prefill_s = min(max(min(firsts) - began, 0.0), core_s) if firsts else core_s
    steps = max((len(g.token_ids) for g in generated), default=1) - 1
    padded = max(len(r.prompt_ids) for r in wave)
    return DecodeTotals(inputs, prefill_s, prefill_flops, core_s - prefill_s, decode_flops,
                        cost.static_decode_bytes(len(wave), padded, max(steps, 0)))


def _shifted(record: RequestRecord, offset: float) -> RequestRecord:
    """The record on the epoch clock of this node (every time + `offset`)."""
    def move(t: float | None) -> float | None:
        return None if t is None else t + offset

    record.arrival_s, record.sent_s, record.end_s = move(record.arrival_s), move(record.sent_s), move(record.end_s)
    record.first_byte_s = move(record.first_byte_s)
    record.token_times_s = [t + offset for t in record.token_times_s]
    return record


def decode_cost(model: Any, config: Any, precision: str, runs_model: bool, flops: FlopsModel) -> DecodeCost:
    """The cost model of the infer engine's requests: its FLOPs model, the bytes of its weights at
    the infer precision (every parameter once: a decode step reads them all, the LM head included),
    and the KV cache's bytes per token (keys and values of every layer's KV heads)."""
    from workers.measure.device import DTYPES

    if not runs_model:
        return DecodeCost(flops, 0, 0, runs_model=False)
    if model is None:  # an engine that loads the weights itself (vLLM): count them on the meta device
        import torch
        import transformers

        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
    size = DTYPES[precision].itemsize
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 1)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    head_dim = getattr(config, "head_dim", None) or hidden // max(heads, 1)
    weights = sum(p.numel() for p in model.parameters()) * size
    return DecodeCost(flops, int(weights), int(2 * layers * kv_heads * head_dim * size))


def warm_generation(generator: Any, task: Any, bs: int, calls: int) -> int:
    """`calls` untimed calls on the first requests (at most bs each, whole), so no measured request
    pays for first-call costs (allocations as a KV cache grows, a paged cache's first pages)."""
    count = min(task.num_examples(), bs)
    if not calls or not count:
        return 0
    requests = task.requests(range(count))
    for _ in range(calls):
        generator.generate(requests, lambda *_: None)
    return calls


def reference_records(generator: Any, task: Any, examples: Sequence[int]) -> list[dict[str, Any]]:
    """Each example's request alone through the reference (plain greedy `generate` of its prompt, on
    the generator's model), untimed: the correctness check compares its tokens with the measured run's."""
    out = []
    for example in examples:
        request = task.request(int(example))
        tokens = generator.reference(request)
        finish = "length" if len(tokens) >= request.max_new_tokens else "eos"
        out.append(task.record(Generated(request.request_id, list(tokens), finish)))
    return out
