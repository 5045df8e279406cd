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
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from workers.errors import UserError
from workers.specs import DataSpec, MaskedLMTask
from workers.tasks import Batch, BatchScore, InputSignature

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


class MaskedLM:
    model_kind = "masked_lm"
    item_unit = "seq"
    signature = InputSignature({"input_ids": {0: "batch", 1: "sequence"}})

    def __init__(self, options: MaskedLMTask, data: DataSpec, tokenizer, config, seq_len: int, seed: int) -> None:
        self.seq_len = seq_len
        self.vocab_size = int(config.vocab_size)
        if tokenizer is None:
            specials = SYNTHETIC_SPECIALS
        else:
            if tokenizer.mask_token_id is None:
                raise UserError("model.tokenizer: this tokenizer has no mask token; masked_lm needs one")
            specials = {
                "pad": tokenizer.pad_token_id or 0,
                "cls": tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id,
                "sep": tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id,
                "mask": tokenizer.mask_token_id,
            }
        self.mask_id = specials["mask"]
        tokens = self._tokens(options, data, tokenizer)
        inputs, labels = mask_stream(tokens, self.mask_id, specials["cls"], specials["sep"], options.mask_prob, seed)
        n_windows = len(inputs) // seq_len
        if options.limit is not None:
            n_windows = min(n_windows, options.limit)
        if n_windows == 0:
            raise UserError(f"seq_len: {seq_len} is longer than the whole tokenised text ({len(inputs)} tokens)")
        self.inputs = inputs[: n_windows * seq_len].reshape(n_windows, seq_len)
        self.labels = labels[: n_windows * seq_len].reshape(n_windows, seq_len)

    def _tokens(self, options: MaskedLMTask, data: DataSpec, tokenizer) -> np.ndarray:
        if data.synthetic is not None:
            return self._synthetic_tokens(data, tokenizer)
        if tokenizer is None:
            raise UserError("model.tokenizer: masked_lm on a text file needs a tokenizer (a hub id, folder or vocab.txt)")
        text = read_text(Path(data.path).expanduser(), options.skip_headings)
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        tokens = np.asarray(ids, dtype=np.int64)
        if tokens.max(initial=0) >= self.vocab_size:
            raise UserError(
                f"model.tokenizer: token id {int(tokens.max())} is outside the model's vocabulary "
                f"({self.vocab_size}); the tokenizer does not match the model"
            )
        return tokens

    def _synthetic_tokens(self, data: DataSpec, tokenizer) -> np.ndarray:
        """Uniform random ids over the ordinary (non-special) vocabulary, sized to `size` windows."""
        special = set(SYNTHETIC_SPECIALS.values()) if tokenizer is None else set(tokenizer.all_special_ids)
        ordinary = np.setdiff1d(np.arange(self.vocab_size), np.fromiter(special, dtype=np.int64))
        rng = np.random.default_rng(data.synthetic.seed)
        return rng.choice(ordinary, size=data.synthetic.size * self.seq_len - 2)

    def num_examples(self) -> int:
        return len(self.inputs)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.inputs.tobytes())
        digest.update(self.labels.tobytes())
        return digest.hexdigest()[:16]

    def batches(self, start: int, stop: int, bs: int) -> Iterator[Batch]:
        for lo in range(start, stop, bs):
            hi = min(lo + bs, stop)
            ids = torch.from_numpy(self.inputs[lo:hi])
            yield Batch({"input_ids": ids}, items=hi - lo, lengths=[self.seq_len] * (hi - lo), payload=(lo, hi))

    def score(self, batch: Batch, logits: torch.Tensor) -> BatchScore:
        lo, hi = batch.payload
        pred = logits.argmax(dim=-1).cpu().numpy()
        scored, correct = score_masked(pred, self.inputs[lo:hi], self.labels[lo:hi], self.mask_id)
        return BatchScore(scored, correct)

    def sample_inputs(self, bs: int, seq_len: int) -> dict[str, torch.Tensor]:
        """Real token ids in the shape asked for (engine builds and export checks)."""
        return {"input_ids": torch.from_numpy(np.resize(self.inputs.reshape(-1), (bs, seq_len)))}
