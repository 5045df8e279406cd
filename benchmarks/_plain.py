"""The plain side of gpu_check: the simplest correct loop over the bench's batches, and the
offline tokenizer its MMLU case needs. Nothing here imports Ray or raybench's timing code.
"""

from __future__ import annotations

import csv
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import torch

LETTERS = "ABCD"


@dataclass(frozen=True)
class PlainFigures:
    items: int
    core_seconds: float  # model calls alone, the device synchronised before and after each
    whole_seconds: float  # the whole loop: batching, copies, model calls, argmax, compare
    scored: int
    correct: int

    @property
    def core_items_per_s(self) -> float:
        return self.items / self.core_seconds

    @property
    def whole_items_per_s(self) -> float:
        return self.items / self.whole_seconds

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None


def plain_model(config, causal: bool, dtype: torch.dtype, device: torch.device, seed: int) -> torch.nn.Module:
    """Random weights from the config under the seed, as `model: {random: ...}` draws them."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    torch.manual_seed(seed)
    auto = AutoModelForCausalLM if causal else AutoModelForMaskedLM
    return auto.from_config(config).to(dtype).to(device).eval()


def score(task, batch, logits: torch.Tensor, causal: bool) -> tuple[int, int]:
    """(scored, correct): masked positions for masked LM, questions for MMLU (letters only)."""
    if not causal:
        lo, hi = batch.payload
        predicted = logits.argmax(-1).cpu().numpy()
        masked = task.inputs[lo:hi] == task.mask_id
        return int(masked.sum()), int((predicted[masked] == task.labels[lo:hi][masked]).sum())
    last = logits[torch.arange(len(batch.lengths)), torch.tensor(batch.lengths) - 1]
    picked = last[:, list(task.choice_ids)].argmax(-1).cpu().tolist()
    gold = [task.gold(i) for i in batch.payload]
    return len(gold), sum(LETTERS[k] == g for k, g in zip(picked, gold))


def plain_loop(model, task, bs: int, warmup: int, device: torch.device, causal: bool) -> PlainFigures:
    """Every example once in `bs` batches (warm-up batches first, untimed), timed two ways."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    extra = {"use_cache": False} if causal else {}
    n = task.num_examples()
    items = scored = correct = 0
    core = 0.0
    with torch.inference_mode():
        for batch in itertools.islice(task.batches(0, n, bs), warmup):
            model(**{k: v.to(device) for k, v in batch.inputs.items()}, **extra)
        sync()
        t0 = time.perf_counter()
        for batch in task.batches(0, n, bs):
            inputs = {k: v.to(device, non_blocking=True) for k, v in batch.inputs.items()}
            sync()
            c0 = time.perf_counter()
            logits = model(**inputs, **extra).logits
            sync()
            core += time.perf_counter() - c0
            s, c = score(task, batch, logits, causal)
            items, scored, correct = items + batch.items, scored + s, correct + c
        whole = time.perf_counter() - t0
    return PlainFigures(items, core, whole, scored, correct)


def train_tokenizer(folder: Path, mmlu: Path, subjects: list[str], vocab_size: int) -> Path:
    """A byte-level BPE trained on the subjects' MMLU rows (no hub download), saved as a transformers
    tokenizer that prepends <s> like Llama's. "Answer: A".."D" lines make " A".." D" single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines = [f"Answer: {letter}" for letter in LETTERS for _ in range(200)]
    for subject in subjects:
        for split in ("dev", "test"):
            with open(mmlu / split / f"{subject}_{split}.csv", encoding="utf-8", newline="") as fh:
                lines += [" ".join(row) for row in csv.reader(fh)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>").save_pretrained(folder)
    return folder
