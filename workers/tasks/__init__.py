"""The Task protocol: one benchmark case (data, batches, scoring). Implementations register in specs.

A task has two halves. `prepare` (static, pure) turns the job's files into one Arrow table, one row
per example, with the few constants scoring needs (mask id, choice tokens, fingerprint) in the
schema metadata; it runs once per run (workers/data/dataprep.py). The instance is a worker's read-only
view of that table: it wraps the table's buffers without copying them and reads only the rows of
the shards it is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import pyarrow as pa
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
    # the one position of each row whose logits the scorer reads (MMLU: each prompt's last token),
    # None when it reads every position (masked-LM): the engine is then asked for those alone
    # (`Engine.forward_at`), and one that can skips the LM head everywhere else
    read_positions: list[int] | None = None


@dataclass
class BatchScore:
    scored: int
    correct: int
    records: list[dict[str, Any]] = field(default_factory=list)
    responses: list[bytes] = field(default_factory=list)  # one per example, in batch order, when asked for


@dataclass(frozen=True)
class InputSignature:
    """Names and dynamic axes of a task's model inputs, for export and engine shape profiles."""

    inputs: dict[str, dict[int, str]]
    output: str = "logits"


class Task(Protocol):
    """One benchmark case on one worker. Built once per actor from the prepared table; pure.

    `model_kind` picks the transformers auto class ("masked_lm" or "causal_lm"). Examples are the
    unit of sharding (sequences, questions); items are the unit of throughput (sequences, tokens).
    `costs` gives each example's relative cost for the shard plan, or None when all cost the same.
    `median_length` is the length engines with shape profiles tune for (TensorRT's `opt`).
    """

    model_kind: str
    item_unit: str
    signature: InputSignature

    @staticmethod
    def prepare(options: Any, data: Any, tokenizer: Any, config: Any, seq_len: int, seed: int) -> pa.Table: ...

    @staticmethod
    def costs(table: pa.Table, config: Any) -> np.ndarray | None: ...

    def __init__(self, table: pa.Table) -> None: ...

    def num_examples(self) -> int: ...

    def fingerprint(self) -> str: ...

    def median_length(self) -> int:
        """Median example length in tokens over the prepared set (fixed-length tasks: seq_len)."""
        ...

    def batches(self, start: int, stop: int, bs: int) -> Iterator[Batch]: ...

    def batch_of(self, examples: Sequence[int]) -> Batch:
        """One batch of any examples (the samples of LoadGen queries), scored like `batches`' batches."""

    def score(self, batch: Batch, logits: torch.Tensor, responses: bool = False) -> BatchScore:
        """Counts (and records) of a batch; with `responses`, each example's prediction as bytes: the
        response LoadGen gets for it, the same in performance and accuracy mode (MLPerf's rule), and
        what `score_responses` scores again from LoadGen's accuracy log."""

    def score_responses(self, responses: dict[int, bytes]) -> BatchScore:
        """The score of these examples (index -> the bytes `score` answered for it): what an accuracy
        script reads back from LoadGen's accuracy log, with no model run."""

    def sample_inputs(self, bs: int, seq_len: int) -> dict[str, torch.Tensor]: ...


def logits_at(logits: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """(rows, vocab): row i's logits at positions[i], from an engine's `forward_at` (already that
    shape) or a whole `forward` (rows, length, vocab)."""
    if logits.dim() == 2:
        return logits
    rows = torch.arange(len(positions), device=logits.device)
    return logits[rows, torch.tensor(list(positions), device=logits.device)]


def task_class(options: Registered) -> type:
    """The Task class the job's `task:` options name (workers/specs.py holds the registry)."""
    return resolve("task", options)


METADATA_KEY = b"raybench.task"


def task_metadata(values: dict[str, Any]) -> dict[bytes, bytes]:
    """Schema metadata of a prepared table: the constants its task needs besides the rows."""
    return {METADATA_KEY: json.dumps(values, sort_keys=True).encode()}


def read_task_metadata(table: pa.Table) -> dict[str, Any]:
    return json.loads(table.schema.metadata[METADATA_KEY])


def single_chunk(table: pa.Table, name: str) -> pa.Array:
    """A column as one array: prepared tables are written as one record batch, so no copy."""
    column = table.column(name)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def fixed_size_rows(table: pa.Table, name: str) -> np.ndarray:
    """A fixed-size-list column as a (rows, size) numpy view of the table's buffer (read-only)."""
    array = single_chunk(table, name)
    values = array.flatten().to_numpy(zero_copy_only=True)
    return values.reshape(len(array), array.type.list_size)
