"""Invariance on the real engine: do predictions survive a change of batch size and worker?

On a CPU in fp32 they do by construction (right-padded batches, each prompt read at its own last
token: workers/tasks/mmlu.py). On a GPU, fp16/bf16 kernels are chosen by shape, so the same prompt
in a batch of 8 and alone can round differently, and a near-tie between two choices can flip: the
accuracy then depends on bs, which a benchmark must not hide. After the measured pass, N of its
examples, spread evenly over the plan's order (by length, for variable-length work: short and
long prompts alike), run again one at a time (bs 1) through the infer engine (job
field `invariance_check`, orchestrator/modes/offline/invariance_check.py); each whose prediction
differs from the measured pass's is a flip. Any flip makes the row INVALID
(orchestrator/metrics/verdict.py); `invariance.parquet` in the run folder lists every checked example.

What it costs, by default (mmlu): 3 % of the measured pass's examples, at least 4
(`EngineJob.invariance_examples`), dealt over every worker of the pool so they run side by side, and
its wall time is its own column (`invariance_time`) and a span of the timeline, so readers of
`e2e_time` see it. Why bs 1 and not a cheaper batch: a prompt alone is the reference every batch
must agree with (no companion rows, no padding at all, the smallest shape a kernel heuristic can
pick for), and a different shape from the measured bs is what catches batch-size-dependent
kernels. It is also not dear where it runs: with no padding its cost is its tokens, so on a CPU it
costs about its share of the examples (a little less: the measured batches carry some padding);
on a GPU a bs-1 forward of a 600-token prompt still fills the GEMMs with 600 rows. Before issue 31
the default was 32 examples on one worker: 27 % of a 120-question run, 26 s of 150.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InvarianceCheck:
    """What the check ran: the examples, their records at bs 1, or why there are none."""

    examples: tuple[int, ...]
    records: tuple[dict[str, Any], ...] = ()
    note: str | None = None  # the check could not run (a failure), and why
    seconds: float | None = None  # its wall time on the driver, from handing out the first part to the last result
    workers: int = 1  # the parts it was dealt into, one per worker


def dealt(examples: tuple[int, ...], workers: int) -> list[tuple[int, ...]]:
    """`examples` dealt round-robin into at most `workers` non-empty parts (one per worker): spread
    evenly over the data, so each part holds about the same mix of lengths."""
    parts = max(1, min(workers, len(examples)))
    return [examples[k::parts] for k in range(parts)]


def check_examples(num_examples: int, count: int) -> tuple[int, ...]:
    """`count` distinct positions spread evenly over 0..num_examples-1, the middle of each of `count`
    equal stretches: the same ones on every run of the same data (all of them when there are fewer).
    Positions in the plan's order of the examples (orchestrator/modes/offline/invariance_check.py)."""
    count = min(count, num_examples)
    return tuple((2 * k + 1) * num_examples // (2 * count) for k in range(count))


Records = list[dict[str, Any]] | tuple[dict[str, Any], ...]


def _prediction(record: dict[str, Any]) -> Any:
    """What a record predicts: MMLU's letter, or a generated request's output token ids."""
    return record["predicted"] if "predicted" in record else record["output_ids"]


def compared(measured: Records, check: InvarianceCheck) -> list[dict[str, Any]]:
    """One record per checked example: its measured and bs-1 predictions and whether they differ
    (generate: its output tokens as measured and as plain greedy `generate` of the prompt alone made them)."""
    by_example = {rec["example"]: rec for rec in measured}
    out = []
    for again in check.records:
        first = by_example.get(again["example"])
        if first is None:
            continue
        before, after = _prediction(first), _prediction(again)
        out.append({"example": again["example"], "subject": again.get("subject"),
                    "question_index": again.get("question_index"), "predicted_measured": before,
                    "predicted_bs1": after, "flipped": before != after})
    return out


def invariance_columns(measured: Records, check: InvarianceCheck | None) -> dict[str, Any]:
    """`invariance_checked`, `invariance_flips` and `invariance_time` of the row; blank when no check
    ran (with the reason in `invariance_note` when one was asked for and failed)."""
    if check is None:
        return {}
    if check.note is not None:
        return {"invariance_note": check.note, "invariance_time": check.seconds}
    rows = compared(measured, check)
    return {"invariance_checked": len(rows), "invariance_flips": sum(r["flipped"] for r in rows),
            "invariance_time": check.seconds}
