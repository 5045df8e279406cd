"""Shard results -> one metrics row: the one assembly every way to run an engine job goes through.

`assemble` builds every section once (identity, setup, data, memory, energy, health, MFU from
orchestrator/metrics/sections.py; the measured pass's figures from orchestrator/metrics/passes.py)
and the figures the verdict reads. A mode then adds its own columns and rule set with `judge`,
which joins them with the incidents every row is judged on (orchestrator/metrics/verdict.py):
nothing a mode adds replaces another part's reasons. `merge` is Offline's row: the assembly judged
by the pass rules.

A shard retried after a failure is counted once (the attempt that completed). With `repeats: R`
the measured pass ran R times on fresh workers (orchestrator/metrics/passes.py says how they merge).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from dataclasses import replace as replace_fields
from datetime import datetime
from typing import Any, Sequence

from orchestrator.metrics.generation import generation_columns
from orchestrator.metrics.invariance import InvarianceCheck, invariance_columns
from orchestrator.metrics.passes import (
    Pause,
    accuracy_columns,
    completed,
    latency_columns,
    latency_fit,
    measured,
    shard_labels,
    task_columns,
    throughput_columns,
    worker_rates,
)
from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.sections import (
    data_columns,
    energy_columns,
    health_columns,
    identity_columns,
    memory_columns,
    mfu_columns,
    setup_columns,
)
from orchestrator.metrics.verdict import RuleSet, VerdictFigures, evaluate, figures_from_row, pass_rules
from orchestrator.spec import EngineJob
from workers.contract import DataInfo, ShardResult, WorkerInfo
from workers.requests import RequestRecord


@dataclass(frozen=True)
class Merged:
    """A row with every shared section and no verdict yet, and the figures its verdict reads."""

    row: MetricsRow
    figures: VerdictFigures


def assemble(
    *,
    spec: EngineJob,
    run_id: str,
    results: list[ShardResult],
    infos: list[WorkerInfo],
    data: list[DataInfo],
    e2e_seconds: float,
    retries: int,
    item_unit: str,
    resumed: bool = False,
    pauses: tuple[Pause, ...] = (),
    sweep_id: str | None = None,
    timestamp: datetime | None = None,
    ray_start_seconds: float | None = None,
    invariance: InvarianceCheck | None = None,
    workers_lost: tuple[str, ...] = (),
    watched: Sequence[ShardResult] | None = None,
    requests: Sequence[RequestRecord] | None = None,
) -> Merged:
    """Every section of one run's row. `pauses`: when no driver was running (a resumed run), cut out
    of the spans. `invariance`: the measured pass's examples run again at bs 1. `workers_lost`: one
    line per worker the run lost (which, where, why). `watched`: what the device watch and the
    energy counters saw while the measured work ran, where a mode reads them around more than one
    batch (LoadGen: per test); default: the measured pass's shards, which carry their own.
    `requests` (generate): the records latencies are read from where a mode keeps its own (LoadGen's,
    on the driver's clock from each query's issue); default: the measured pass's shards'."""
    final = completed(results)
    by_pass: dict[str, dict[int, list[ShardResult]]] = {"val": defaultdict(list), "infer": defaultdict(list)}
    for (pass_name, repeat, _), r in sorted(final.items()):
        by_pass[pass_name][repeat].append(r)
    val_m, infer_m = measured(by_pass["val"], pauses), measured(by_pass["infer"], pauses)
    val, infer = (val_m.first if val_m else None), (infer_m.first if infer_m else None)
    head = infer_m or val_m
    throughput = throughput_columns(val_m, infer_m)
    fit = latency_fit(spec, head)
    watched_first = list(watched) if watched is not None else list(head.first_results)
    watched_all = list(watched) if watched is not None else list(head.all_results)
    mfu = mfu_columns(infer.flops_per_item if infer else None, throughput["p_infer_core"],
                      infer.worker_ids if infer else None, infos)
    row = MetricsRow(
        **identity_columns(spec, run_id, sweep_id, timestamp, item_unit),
        byte_per_batch=max(r.bytes_per_batch for r in head.first_results),  # the measured pass's (infer)
        e2e_time=e2e_seconds,
        examples=head.first.examples,
        shards=len({shard for (_, repeat, shard) in final if repeat == 0}),
        retries=retries,
        resumed=resumed,
        workers_lost=len(workers_lost),
        **throughput,
        **accuracy_columns(val, infer, spec.acc_tolerance),
        **memory_columns(list(final.values())),
        **mfu,
        **generation_columns(spec, head.first_results, infos, mfu, requests),
        **energy_columns(watched_first, items=head.first.items),
        **health_columns(watched_all, list(final.values()), infos),
        **latency_columns(spec, head, fit),
        **setup_columns(spec, infos),
        **data_columns(data),
        **task_columns(spec, head),
        ray_start_time=ray_start_seconds,
        **invariance_columns(head.records, invariance),
    )
    rates, unit = worker_rates(spec, head, fit)
    figures = figures_from_row(row, rates, spec.task.variable_length, shard_labels(fit), unit)
    if row.requests is not None:  # generate: each request is a measurement (a continuous engine's call holds many)
        figures = replace_fields(figures, measured_batches=max(row.measured_batches, row.requests))
    return Merged(row, replace_fields(figures, workers_lost=tuple(workers_lost)))


def judge(merged: Merged, spec: EngineJob, rule_sets: Sequence[RuleSet],
          columns: dict[str, Any] | None = None) -> MetricsRow:
    """The row with the mode's `columns` added and its verdict: the mode's rule sets joined with the
    incidents every row is judged on."""
    verdict = evaluate(merged.figures, spec.verdict.rules(spec.acc_tolerance), rule_sets)
    return merged.row.model_copy(update={**(columns or {}), "verdict": verdict.label,
                                         "verdict_reasons": verdict.reasons_text, "verdict_profile": verdict.profile})


def merge(**inputs: Any) -> MetricsRow:
    """Offline's row: every section (`assemble`'s inputs), judged by the pass rules."""
    merged = assemble(**inputs)
    spec: EngineJob = inputs["spec"]
    return judge(merged, spec, [pass_rules(merged.figures, spec.verdict.rules(spec.acc_tolerance))])
