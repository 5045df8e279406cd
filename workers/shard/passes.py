"""The one timing loop every engine and task goes through.

Per batch: copy inputs to the device (timed, reported as h2d), call the engine (timed: core), score
(argmax on the device, small copy back). The pass wall time covers all of it, batching included.
Warm-up batches run before the stopwatch starts and are neither timed nor counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from workers.contract import ShardResult, ShardTask
from workers.engines import Engine
from workers.measure.device import MemoryProbe
from workers.measure.device_watch import DeviceWatch
from workers.measure.energy import EnergyCounter, energy_between
from workers.measure.timing import CoreTimer, Stopwatch
from workers.tasks import Batch, Task


def shard_batches(task: Task, shard: ShardTask, bs: int) -> Iterator[Batch]:
    """The shard's batches: the task's own batching of a range of the data, or, where the plan put
    the examples in its own order (sorted by cost: orchestrator/modes/offline/plan.py), `bs` at a
    time in that order."""
    if shard.examples is None:
        yield from task.batches(shard.start, shard.stop, bs)
        return
    for lo in range(0, len(shard.examples), bs):
        yield task.batch_of(shard.examples[lo: lo + bs])


def call(engine: Engine, device_inputs: Any, batch: Batch) -> Any:
    """The engine's core call for `batch`: the logits at the positions the task reads where it says
    which (`Batch.read_positions`: MMLU reads one per prompt), every position's otherwise."""
    if batch.read_positions is None:
        return engine.forward(device_inputs)
    return engine.forward_at(device_inputs, batch.read_positions)


def warm_up(engine: Engine, task: Task, shard: ShardTask, bs: int, batches: int, timer: CoreTimer) -> int:
    """Run `batches` untimed batches drawn (cyclically) from the start of this shard, or from the
    examples the plan gave for warming up (a sorted plan's cheapest: the worker's first shard is its
    dearest, and a warm-up batch costs what its prompts cost), each of the rows the engine needs to
    warm up (`Engine.warmup_rows`: bs, or one for the eager engine)."""
    if batches == 0:
        return 0
    source = list(shard.warmup_examples if shard.warmup_examples is not None else shard.example_ids())
    groups = [source[lo: lo + bs] for lo in range(0, len(source), bs)][:batches]
    rows = max(1, min(bs, engine.warmup_rows(bs)))
    for k in range(batches):
        batch = task.batch_of(groups[k % len(groups)][:rows])
        call(engine, engine.to_device(batch.inputs), batch)
    timer.sync()
    return batches


def input_bytes(device_inputs: Any) -> int:
    """Bytes of model input as the engine receives it: every tensor `to_device` returned, with its
    own dtype and shape (METRICS.md `byte_per_batch`: an engine that casts ids to int32 counts 4
    bytes each). Torch tensors and numpy arrays (ONNX Runtime's CPU inputs) both have `nbytes`."""
    return sum(int(tensor.nbytes) for tensor in device_inputs.values())


def run_pass(
    engine: Engine,
    task: Task,
    shard: ShardTask,
    bs: int,
    timer: CoreTimer,
    memory: MemoryProbe,
    flops_of_length: Callable[[int], float],
    result: ShardResult,
    energy: EnergyCounter | None = None,
    device_watch: DeviceWatch | None = None,
) -> ShardResult:
    """Fill `result` with the counts and timings of one pass of `shard` (and its energy, read
    around the pass, where `energy` has a counter; and what NVML saw meanwhile, where there is a
    `device_watch`: its sampler thread runs beside the pass, outside every timed call)."""
    return run_batches(engine, task, shard_batches(task, shard, bs), timer, memory, flops_of_length,
                       result, energy, device_watch)


def run_batches(
    engine: Engine,
    task: Task,
    batches: Iterable[Batch],
    timer: CoreTimer,
    memory: MemoryProbe,
    flops_of_length: Callable[[int], float],
    result: ShardResult,
    energy: EnergyCounter | None = None,
    device_watch: DeviceWatch | None = None,
    responses: bool = False,
) -> ShardResult:
    """The loop itself, over any batches: a shard's, or the one batch of LoadGen samples a worker
    is handed (`WorkerRuntime.run_samples`), so both are timed and scored alike. With `responses`
    each example's prediction bytes are kept (LoadGen's responses), outside the timed call."""
    span = begin_span(energy, device_watch)
    with Stopwatch() as watch:
        for batch in batches:
            device_inputs, h2d_s = timer.time(lambda: engine.to_device(batch.inputs))
            logits, core_s = timer.time(lambda: call(engine, device_inputs, batch))
            score = task.score(batch, logits, responses)
            result.examples += len(batch.lengths)
            result.items += batch.items
            result.scored += score.scored
            result.correct += score.correct
            result.flops += batch_flops(engine, batch, flops_of_length)
            result.core_seconds += core_s
            result.h2d_seconds += h2d_s
            result.batch_core_seconds.append(core_s)
            result.batch_items.append(batch.items)
            result.batch_rows.append(len(batch.lengths))
            result.batch_seq_lens.append(max(batch.lengths, default=0))
            result.batch_tokens.append(sum(batch.lengths))
            result.bytes_per_batch = max(result.bytes_per_batch, input_bytes(device_inputs))
            result.records.extend(score.records)
            result.responses.extend(score.responses)
    result.wall_seconds, result.start_ts, result.end_ts = watch.seconds, watch.start_ts, watch.end_ts
    end_span(span, energy, device_watch, result)
    result.peak_mem_bytes = memory.sample()
    result.mem_total_bytes = memory.total_bytes()
    result.mem_source = memory.source
    return result


@dataclass(frozen=True)
class SpanStart:
    """Where a watched span began: the energy counter's reading (J) and whether the watch runs."""

    joules: float | None
    watching: bool


def begin_span(energy: EnergyCounter | None, device_watch: DeviceWatch | None) -> SpanStart:
    """Read the energy counter and start the device watch: the start of a pass (Offline) or of a
    whole LoadGen test (orchestrator/modes/loadgen/), never inside a timed call."""
    joules = energy.read_joules() if energy else None
    if device_watch is not None:
        device_watch.start()
    return SpanStart(joules, device_watch is not None)


def end_span(start: SpanStart, energy: EnergyCounter | None, device_watch: DeviceWatch | None,
             result: ShardResult) -> ShardResult:
    """The span's energy (the counter's rise, by physical device) and what the watch saw, into `result`."""
    joules_after = energy.read_joules() if energy else None
    result.energy_joules = energy_between(start.joules, joules_after)
    result.health = device_watch.stop() if device_watch is not None and start.watching else None
    result.energy_note = "" if result.energy_joules is not None else (energy.note if energy else "not measured")
    if result.energy_joules is not None:
        result.energy_counters = {energy.device_key: [start.joules, joules_after]}
    return result


def batch_flops(engine: Engine, batch: Batch, flops_of_length: Callable[..., float]) -> float:
    """FLOPs the engine ran for `batch`: each sequence's forward pass, its LM head counted at the
    positions the engine computed logits for (one per row where it computes only those the task
    reads: `Engine.head_at_read_positions`; every token otherwise)."""
    if batch.read_positions is not None and engine.head_at_read_positions:
        return sum(flops_of_length(n, head_tokens=1) for n in batch.lengths)
    return sum(flops_of_length(n) for n in batch.lengths)


def run_examples(engine: Engine, task: Task, examples: tuple[int, ...]) -> list[dict[str, Any]]:
    """Each example alone, as a batch of one, untimed: the records its scoring makes (the invariance
    check compares them with the measured pass's; orchestrator/metrics/invariance.py)."""
    records: list[dict[str, Any]] = []
    for example in examples:
        batch = task.batch_of([example])
        records.extend(task.score(batch, call(engine, engine.to_device(batch.inputs), batch)).records)
    return records
