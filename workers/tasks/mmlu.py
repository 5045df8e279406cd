"""5-shot MMLU accuracy of a causal LM, as METRICS.md "MMLU scoring" defines it.

Examples (the unit of sharding) are questions in one global order: subjects sorted by name, then
row order in the subject's file. Items (the unit of throughput) are real prompt tokens, padding
excluded, as the seed reports tokens/s. One forward pass per prompt, no generation; the choice is
read from the logits at the prompt's last token ("Answer:").

Batching: a shard's questions are sorted by prompt length (ties by position) and cut into batches
of `bs`, so padding stays small. Padding is on the right: under a causal mask a real token never
attends to the pad tokens after it and keeps positions 0..n-1, so its logits are those of the
unpadded prompt whatever the batch holds. (Left padding would need position ids derived from the
mask, an input the engines' exported graphs do not have.) A question's prediction therefore does
not depend on bs or on how its range is split into shards; tests/workers/test_mmlu.py checks it.

Variants (`task.scoring`): each is one harness's prompt and scoring, stored in every record
(`scoring`, and `prompt_format`, the versioned name of the prompt; workers/tasks/mmlu_data.py):
- lm-eval: lm-eval's default MMLU prompt (`lm-eval-mmlu-default@0.4.13`), and the argmax of the
  last-position logits over the tokens of " A", " B", " C", " D". lm-eval compares the
  log-likelihoods of the four continuations " A".." D"; each is one token after "Answer:" (checked
  here), so that is the same argmax over the same four logits;
- flagperf (the seed's harness): FlagPerf's prompt (`flagperf-llama2_7b_mmlu@26dde69`), the argmax
  over the whole vocabulary, correct only if that token is the gold letter's token. Prompts are cut
  to 2048 tokens (by dropping shots) unless max_prompt_tokens says.
Prompts longer than the limit lose shots from the front (METRICS.md), in both variants. lm-eval
itself never drops shots (it cuts the token sequence from the left to the model's length), and
FlagPerf drops `prompt.split("\n\n")[1]` until it fits, which is the oldest shot unless a field
holds a blank line (two econometrics dev rows do).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from workers.errors import UserError
from workers.models import max_positions
from workers.specs import DataSpec, MMLUTask
from workers.tasks import Batch, BatchScore, InputSignature
from workers.tasks.mmlu_data import LETTERS, MMLUData, PromptFormat, Question, build_prompt, load_mmlu, prompt_format

FLAGPERF_MAX_PROMPT_TOKENS = 2048


def choice_token_ids(tokenizer) -> tuple[int, ...]:
    """Token ids of " A".." D" as they follow "Answer:" in a prompt.

    Encoding "Answer: A" against "Answer:" (rather than " A" alone) gives the id the model sees in
    context, also for SentencePiece tokenizers that add a word-start marker to a lone " A".
    """
    context = tokenizer.encode("Answer:", add_special_tokens=False)
    ids = []
    for letter in LETTERS:
        full = tokenizer.encode(f"Answer: {letter}", add_special_tokens=False)
        if full[: len(context)] != context or len(full) != len(context) + 1:
            raise UserError(f"model.tokenizer: ' {letter}' after 'Answer:' is {len(full) - len(context)} tokens, not "
                            "one; mmlu scoring reads one token per choice")
        ids.append(full[-1])
    if len(set(ids)) != 4:
        raise UserError("model.tokenizer: ' A', ' B', ' C', ' D' do not map to four different tokens")
    return tuple(ids)


def prompt_limit(options: MMLUTask, seq_len: int, config) -> int:
    """Longest prompt in tokens: seq_len, the model's positions and max_prompt_tokens (flagperf: 2048)."""
    cap = options.max_prompt_tokens
    if cap is None and options.scoring == "flagperf":
        cap = FLAGPERF_MAX_PROMPT_TOKENS
    return min(x for x in (seq_len, max_positions(config), cap) if x is not None)


@dataclass(frozen=True)
class Encoded:
    ids: np.ndarray  # int64 token ids of the whole prompt, special tokens included
    shots_used: int
    truncated: bool  # even the 0-shot prompt was too long: cut from the left, question end kept


def _cut_left(ids: list[int], limit: int, special: set[int]) -> list[int]:
    """The last `limit` tokens, keeping a leading special token (BOS) the model expects first."""
    if ids and ids[0] in special and limit > 1:
        return ids[:1] + ids[len(ids) - limit + 1:]
    return ids[len(ids) - limit:]


def encode_prompts(data: MMLUData, tokenizer, shots: int, limit: int, fmt: PromptFormat) -> list[Encoded]:
    """Tokenised prompts; shots are dropped from the front (the earliest first) until one fits."""
    prompts = [build_prompt(q, data.dev[q.subject][:shots], fmt) for q in data.questions]
    first_pass = tokenizer(prompts, add_special_tokens=True, verbose=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    encoded = []
    for q, ids in zip(data.questions, first_pass):
        used = shots
        while len(ids) > limit and used > 0:
            used -= 1
            shown = data.dev[q.subject][shots - used: shots]
            ids = tokenizer.encode(build_prompt(q, shown, fmt), add_special_tokens=True)
        truncated = len(ids) > limit
        if truncated:
            ids = _cut_left(ids, limit, special)
        encoded.append(Encoded(np.asarray(ids, dtype=np.int64), used, truncated))
    if encoded and int(encoded[0].ids[-1]) in special:
        raise UserError("model.tokenizer: it appends a special token to every text; mmlu prompts must end in 'Answer:'")
    return encoded


class MMLU:
    model_kind = "causal_lm"
    item_unit = "tok"
    signature = InputSignature(
        {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    )

    def __init__(self, options: MMLUTask, data: DataSpec, tokenizer, config, seq_len: int, seed: int) -> None:
        if data.synthetic is not None:
            raise UserError("data.synthetic: the mmlu task reads an MMLU folder; give data: path/to/mmlu")
        if tokenizer is None:
            raise UserError("model.tokenizer: mmlu needs a tokenizer (a hub id or folder) to build its prompts")
        self.scoring = options.scoring
        self.prompt_format = prompt_format(options.scoring)
        self.limit = prompt_limit(options, seq_len, config)
        self.choice_ids = choice_token_ids(tokenizer)
        self.pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
        mmlu = load_mmlu(Path(data.path).expanduser(), options.split, options.subjects, options.limit, options.shots)
        self.questions: list[Question] = mmlu.questions
        self.encoded = encode_prompts(mmlu, tokenizer, options.shots, self.limit, self.prompt_format)
        self.lengths = np.array([len(e.ids) for e in self.encoded], dtype=np.int64)
        self._check_vocab(int(config.vocab_size))

    def _check_vocab(self, vocab_size: int) -> None:
        top = max([int(e.ids.max()) for e in self.encoded] + list(self.choice_ids), default=0)
        if top >= vocab_size:
            raise UserError(f"model.tokenizer: token id {top} is outside the model's vocabulary ({vocab_size}); "
                            "the tokenizer does not match the model")

    def num_examples(self) -> int:
        return len(self.questions)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(repr((self.scoring, self.choice_ids, [q.answer for q in self.questions])).encode())
        for e in self.encoded:
            digest.update(e.ids.tobytes())
        return digest.hexdigest()[:16]

    def batches(self, start: int, stop: int, bs: int) -> Iterator[Batch]:
        """Length-sorted, right-padded batches of the questions start..stop-1."""
        order = sorted(range(start, stop), key=lambda i: (self.lengths[i], i))
        for lo in range(0, len(order), bs):
            chosen = order[lo: lo + bs]
            lengths = [int(self.lengths[i]) for i in chosen]
            ids = torch.full((len(chosen), max(lengths)), self.pad_id, dtype=torch.int64)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(chosen):
                ids[row, : lengths[row]] = torch.from_numpy(self.encoded[i].ids)
                mask[row, : lengths[row]] = 1
            yield Batch({"input_ids": ids, "attention_mask": mask}, items=sum(lengths), lengths=lengths, payload=chosen)

    def score(self, batch: Batch, logits: torch.Tensor) -> BatchScore:
        rows = torch.arange(len(batch.lengths), device=logits.device)
        last_pos = torch.tensor(batch.lengths, device=logits.device) - 1
        last = logits[rows, last_pos].float()  # (batch, vocab): the logits after "Answer:"
        choice = last[:, list(self.choice_ids)]
        if self.scoring == "lm-eval":
            picked = [LETTERS[int(k)] for k in choice.argmax(dim=-1).cpu()]
        else:
            by_id = dict(zip(self.choice_ids, LETTERS))
            picked = [by_id.get(int(t)) for t in last.argmax(dim=-1).cpu()]
        values = choice.cpu().tolist()
        records = [self._record(i, letter, v) for i, letter, v in zip(batch.payload, picked, values)]
        return BatchScore(scored=len(records), correct=sum(r["correct"] for r in records), records=records)

    def _record(self, example: int, predicted: str | None, choice_logits: list[float]) -> dict[str, Any]:
        q, e = self.questions[example], self.encoded[example]
        return {
            "example": example, "subject": q.subject, "question_index": q.index, "gold": q.answer,
            "predicted": predicted, "correct": predicted == q.answer,
            **{f"logit_{letter}": value for letter, value in zip(LETTERS, choice_logits)},
            "prompt_tokens": len(e.ids), "shots_used": e.shots_used, "truncated": e.truncated, "scoring": self.scoring,
            "prompt_format": self.prompt_format.id,
        }

    def sample_inputs(self, bs: int, seq_len: int) -> dict[str, torch.Tensor]:
        """Real prompt tokens in the shape asked for (engine builds and export checks)."""
        ids = torch.from_numpy(np.resize(self.encoded[0].ids, (bs, seq_len)))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
