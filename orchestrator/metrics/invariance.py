"""Invariance on the real engine: do predictions survive a change of batch size and worker?

On a CPU in fp32 they do by construction (right-padded batches, each prompt read at its own last
token: workers/tasks/mmlu.py). On a GPU, fp16/bf16 kernels are chosen by shape, so the same prompt
in a batch of 8 and alone can round differently, and a near-tie between two choices can flip: the
accuracy then depends on bs, which a benchmark must not hide. After the measured pass, N of its
examples, spread evenly over the data, run again one at a time (bs 1) on one worker through the
infer engine (job field `invariance_check`, orchestrator/modes/offline/invariance_check.py); each whose prediction
differs from the measured pass's is a flip. Any flip makes the row INVALID
(orchestrator/metrics/verdict.py); `invariance.parquet` in the run folder lists every checked example.
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


def check_examples(num_examples: int, count: int) -> tuple[int, ...]:
    """`count` distinct examples spread evenly over 0..num_examples-1, the middle of each of `count`
    equal stretches: the same ones on every run of the same data (all of them when there are fewer)."""
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
    """`invariance_checked` and `invariance_flips` of the row; blank when no check ran (with the
    reason in `invariance_note` when one was asked for and failed)."""
    if check is None:
        return {}
    if check.note is not None:
        return {"invariance_note": check.note}
    rows = compared(measured, check)
    return {"invariance_checked": len(rows), "invariance_flips": sum(r["flipped"] for r in rows)}
