"""The Task protocol: one benchmark case (data, batches, scoring). Implementations register in specs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import torch

from workers.registry import resolve
from workers.specs import Registered


@dataclass
class Batch:
    """Model inputs as fed to the engine (host tensors) plus what the scorer needs."""

    inputs: dict[str, torch.Tensor]
    items: int
    lengths: list[int]
    payload: Any = None


@dataclass
class BatchScore:
    scored: int
    correct: int
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class InputSignature:
    """Names and dynamic axes of a task's model inputs, for export and engine shape profiles."""

    inputs: dict[str, dict[int, str]]
    output: str = "logits"


class Task(Protocol):
    """One benchmark case on one worker. Built once per actor; pure after construction.

    `model_kind` picks the transformers auto class ("masked_lm" or "causal_lm"). Examples are the
    unit of sharding (sequences, questions); items are the unit of throughput (sequences, tokens).
    """

    model_kind: str
    item_unit: str
    signature: InputSignature

    def num_examples(self) -> int: ...

    def fingerprint(self) -> str: ...

    def batches(self, start: int, stop: int, bs: int) -> Iterator[Batch]: ...

    def score(self, batch: Batch, logits: torch.Tensor) -> BatchScore: ...

    def sample_inputs(self, bs: int, seq_len: int) -> dict[str, torch.Tensor]: ...


def task_class(options: Registered) -> type:
    """The Task class the job's `task:` options name (workers/specs.py holds the registry)."""
    return resolve("task", options)
