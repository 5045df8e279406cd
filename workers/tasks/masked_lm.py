"""Top-1 masked-LM accuracy, exactly as METRICS.md (and the seed's harness) defines it.

The whole text is tokenised into one stream, wrapped once with [CLS] ... [SEP]; every token of the
text (not the wrapping) is replaced by [MASK] with probability `mask_prob` under the job's seed
(no 80/10/10 rule); the stream is cut into consecutive windows of `seq_len` and the last partial
window is dropped. Accuracy counts masked positions only. Masking is drawn once over the whole
stream, so it does not depend on how the windows are later split across workers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from workers.errors import UserError
from workers.specs import DataSpec, MaskedLMTask
from workers.tasks import Batch, BatchScore, InputSignature, fixed_size_rows, read_task_metadata, task_metadata

# Without a tokenizer (a random model on synthetic ids) we use this small fixed vocabulary layout.
SYNTHETIC_SPECIALS = {"pad": 0, "cls": 1, "sep": 2, "mask": 3}
_HEADING = re.compile(r"=+ .* =+")


def read_text(path: Path, skip_headings: bool) -> str:
    """The text with blank lines (and WikiText headings such as ` = = Title = = `) dropped."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UserError(f"data.path: '{path}' does not exist") from exc
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise UserError(f"data.path: '{path}' is not a UTF-8 text file ({type(exc).__name__})") from exc
    lines = (line.strip() for line in raw.splitlines())
    kept = [ln for ln in lines if ln and not (skip_headings and _HEADING.fullmatch(ln))]
    if not kept:
        raise UserError(f"data.path: '{path}' has no text lines")
    return "\n".join(kept)


def mask_stream(tokens: np.ndarray, mask_id: int, cls_id: int, sep_id: int, prob: float, seed: int):
    """(inputs, labels) of the wrapped stream; each text token masked independently with `prob`."""
    masked = np.random.default_rng(seed).random(len(tokens)) < prob
    body = np.where(masked, mask_id, tokens)
    labels = np.concatenate([[cls_id], tokens, [sep_id]]).astype(np.int64)
    inputs = np.concatenate([[cls_id], body, [sep_id]]).astype(np.int64)
    return inputs, labels


def score_masked(pred: np.ndarray, inputs: np.ndarray, labels: np.ndarray, mask_id: int) -> tuple[int, int]:
    """(masked positions, correct predictions among them)."""
    where = inputs == mask_id
    return int(where.sum()), int((pred[where] == labels[where]).sum())


def _specials(tokenizer) -> dict[str, int]:
    if tokenizer is None:
        return SYNTHETIC_SPECIALS
    if tokenizer.mask_token_id is None:
        raise UserError("model.tokenizer: this tokenizer has no mask token; masked_lm needs one")
    return {
        "pad": tokenizer.pad_token_id or 0,
        "cls": tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id,
        "sep": tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id,
        "mask": tokenizer.mask_token_id,
    }


def text_tokens(options: MaskedLMTask, data: DataSpec, tokenizer, vocab_size: int) -> np.ndarray:
    """The text file as one stream of token ids (no special tokens)."""
    if tokenizer is None:
        raise UserError("model.tokenizer: masked_lm on a text file needs a tokenizer (a hub id, folder or vocab.txt)")
    text = read_text(Path(data.path).expanduser(), options.skip_headings)
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    tokens = np.asarray(ids, dtype=np.int64)
    if tokens.max(initial=0) >= vocab_size:
        raise UserError(
            f"model.tokenizer: token id {int(tokens.max())} is outside the model's vocabulary "
            f"({vocab_size}); the tokenizer does not match the model"
        )
    return tokens


def synthetic_tokens(data: DataSpec, tokenizer, vocab_size: int, seq_len: int) -> np.ndarray:
    """Uniform random ids over the ordinary (non-special) vocabulary, sized to `size` windows."""
    special = set(SYNTHETIC_SPECIALS.values()) if tokenizer is None else set(tokenizer.all_special_ids)
    ordinary = np.setdiff1d(np.arange(vocab_size), np.fromiter(special, dtype=np.int64))
    rng = np.random.default_rng(data.synthetic.seed)
    return rng.choice(ordinary, size=data.synthetic.size * seq_len - 2)


def windows_fingerprint(inputs: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256(memoryview(np.ascontiguousarray(inputs)))
    digest.update(memoryview(np.ascontiguousarray(labels)))
    return digest.hexdigest()[:16]


class MaskedLM:
    """The worker's view of the prepared windows: two (windows, seq_len) int64 arrays, read-only.

    `prepare` builds the table once per run (workers/data/dataprep.py decides where and caches it);
    the constructor only wraps its buffers, so a worker maps the shared copy and reads the rows of
    its shards, never the whole dataset.
    """

    model_kind = "masked_lm"
    item_unit = "seq"
    signature = InputSignature({"input_ids": {0: "batch", 1: "sequence"}})

    @staticmethod
    def prepare(options: MaskedLMTask, data: DataSpec, tokenizer, config, seq_len: int, seed: int) -> pa.Table:
        """Tokenise, wrap, mask and cut into windows: one table row per window."""
        vocab_size = int(config.vocab_size)
        specials = _specials(tokenizer)
        if data.synthetic is not None:
            tokens = synthetic_tokens(data, tokenizer, vocab_size, seq_len)
        else:
            tokens = text_tokens(options, data, tokenizer, vocab_size)
        inputs, labels = mask_stream(tokens, specials["mask"], specials["cls"], specials["sep"], options.mask_prob, seed)
        del tokens
        n_windows = len(inputs) // seq_len
        if options.limit is not None:
            n_windows = min(n_windows, options.limit)
        if n_windows == 0:
            raise UserError(f"seq_len: {seq_len} is longer than the whole tokenised text ({len(inputs)} tokens)")
        inputs, labels = inputs[: n_windows * seq_len], labels[: n_windows * seq_len]
        meta = {"mask_id": int(specials["mask"]),
                "fingerprint": windows_fingerprint(inputs, labels)}
        return pa.table(
            {"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(inputs), seq_len),
             "labels": pa.FixedSizeListArray.from_arrays(pa.array(labels), seq_len)},
            metadata=task_metadata(meta),
        )

    @staticmethod
    def costs(table: pa.Table, config) -> None:
        """Every window costs the same: plans cut by count."""
        return

    def __init__(self, table: pa.Table) -> None:
        meta = read_task_metadata(table)
        self.mask_id = meta["mask_id"]
        self._fingerprint = meta["fingerprint"]
        self.inputs = fixed_size_rows(table, "input_ids")
        self.labels = fixed_size_rows(table, "labels")
        self.seq_len = self.inputs.shape[1]

    def num_examples(self) -> int:
        return len(self.inputs)

    def fingerprint(self) -> str:
        return self._fingerprint

    def median_length(self) -> int:
        """Every window is seq_len tokens."""
        return self.seq_len

    def batches(self, start: int, stop: int, bs: int) -> Iterator[Batch]:
        for lo in range(start, stop, bs):
            hi = min(lo + bs, stop)
            ids = torch.from_numpy(self.inputs[lo:hi].copy())  # a batch of its own: the shared rows are read-only
            yield Batch({"input_ids": ids}, items=hi - lo, lengths=[self.seq_len] * (hi - lo), payload=(lo, hi))

    def batch_of(self, examples: Sequence[int]) -> Batch:
        rows = np.asarray(examples, dtype=np.int64)
        ids = torch.from_numpy(self.inputs[rows])  # fancy indexing copies: the batch is writable
        return Batch({"input_ids": ids}, items=len(rows), lengths=[self.seq_len] * len(rows), payload=rows)

    def score(self, batch: Batch, logits: torch.Tensor, responses: bool = False) -> BatchScore:
        # (lo, hi) of a contiguous batch, or the row numbers of a `batch_of` batch
        rows = slice(*batch.payload) if isinstance(batch.payload, tuple) else batch.payload
        pred = logits.argmax(dim=-1).cpu().numpy()
        inputs = self.inputs[rows]
        scored, correct = score_masked(pred, inputs, self.labels[rows], self.mask_id)
        out = BatchScore(scored, correct)
        if responses:  # each window's predictions at its masked positions, int32 little-endian
            out.responses = [p[row == self.mask_id].astype("<i4").tobytes() for p, row in zip(pred, inputs)]
        return out

    def score_responses(self, responses: dict[int, bytes]) -> BatchScore:
        scored = correct = 0
        for example, data in responses.items():
            where = self.inputs[example] == self.mask_id
            pred = np.frombuffer(data, dtype="<i4")
            if len(pred) != int(where.sum()):
                raise UserError(f"the response for window {example} has {len(pred)} predictions; it has "
                                f"{int(where.sum())} masked positions (a response of another data set?)")
            scored += len(pred)
            correct += int((pred == self.labels[example][where]).sum())
        return BatchScore(scored, correct)

    def sample_inputs(self, bs: int, seq_len: int) -> dict[str, torch.Tensor]:
        """Real token ids in the shape asked for (engine builds and export checks)."""
        first = self.inputs[: -(-bs * seq_len // self.seq_len)].reshape(-1)  # only the rows needed
        return {"input_ids": torch.from_numpy(np.resize(first, (bs, seq_len)))}
