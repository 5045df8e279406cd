"""5-shot MMLU accuracy of a causal LM, as METRICS.md "MMLU scoring" defines it.

Examples (the unit of sharding) are questions in one global order: subjects sorted by name, then
row order in the subject's file. Items (the unit of throughput) are real prompt tokens, padding
excluded, as the seed reports tokens/s. One forward pass per prompt, no generation; the choice is
read from the logits at the prompt's last token ("Answer:"), the one position a batch asks the
engine for (`Batch.read_positions`: the eager engine computes the LM head there only).

Batching: the plan hands a worker questions already sorted by prompt length
(orchestrator/modes/offline/plan.py), cut into batches of `bs` in that order, so padding stays
small; a plain range of questions (`batches`) is sorted here the same way (ties by position). Padding is on the right: under a causal mask a real token never
attends to the pad tokens after it and keeps positions 0..n-1, so its logits are those of the
unpadded prompt whatever the batch holds. (Left padding would need position ids derived from the
mask, an input the engines' exported graphs do not have.) A question's prediction therefore does
not depend on bs or on how its range is split into shards; tests/workers/tasks/test_mmlu.py checks it.

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
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch

from workers.errors import UserError
from workers.models import max_positions
from workers.specs import DataSpec, MMLUTask
from workers.tasks import (
    Batch,
    BatchScore,
    InputSignature,
    logits_at,
    read_task_metadata,
    single_chunk,
    task_metadata,
)
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


def prompts_fingerprint(scoring: str, choice_ids: tuple[int, ...], answers: list[str], ids: np.ndarray) -> str:
    """Digest of what decides the scores: variant, choice tokens, gold letters, every prompt's ids."""
    digest = hashlib.sha256(repr((scoring, choice_ids, answers)).encode())
    digest.update(memoryview(np.ascontiguousarray(ids)))
    return digest.hexdigest()[:16]


def questions_table(questions: list[Question], encoded: list[Encoded], meta: dict[str, Any]) -> pa.Table:
    """One row per question; the prompts as one list column: a flat id array plus offsets."""
    lengths = np.fromiter((len(e.ids) for e in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.concatenate([e.ids for e in encoded]) if encoded else np.zeros(0, dtype=np.int64)
    subjects = sorted({q.subject for q in questions})
    code = {name: i for i, name in enumerate(subjects)}
    return pa.table({
        "input_ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids)),
        "subject": pa.DictionaryArray.from_arrays(pa.array([code[q.subject] for q in questions], pa.int32()),
                                                  pa.array(subjects, pa.string())),
        "question_index": pa.array([q.index for q in questions], pa.int64()),
        "answer": pa.array([LETTERS.index(q.answer) for q in questions], pa.uint8()),
        "shots_used": pa.array([e.shots_used for e in encoded], pa.int32()),
        "truncated": pa.array([int(e.truncated) for e in encoded], pa.uint8()),
    }, metadata=task_metadata(meta))


class MMLU:
    """The worker's view of the prepared questions: numpy views of the table's columns, read-only.

    `prepare` reads the CSVs and builds and tokenises every prompt once per run
    (workers/data/dataprep.py decides where, and caches the table); a worker reads only the prompts of
    the shards it is given, from one flat id array and its offsets.
    """

    model_kind = "causal_lm"
    item_unit = "tok"
    signature = InputSignature(
        {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    )

    @staticmethod
    def prepare(options: MMLUTask, data: DataSpec, tokenizer, config, seq_len: int, seed: int) -> pa.Table:
        if data.synthetic is not None:
            raise UserError("data.synthetic: the mmlu task reads an MMLU folder; give data: path/to/mmlu")
        if tokenizer is None:
            raise UserError("model.tokenizer: mmlu needs a tokenizer (a hub id or folder) to build its prompts")
        fmt = prompt_format(options.scoring)
        limit = prompt_limit(options, seq_len, config)
        choice_ids = choice_token_ids(tokenizer)
        pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
        mmlu = load_mmlu(Path(data.path).expanduser(), options.split, options.subjects, options.limit, options.shots)
        encoded = encode_prompts(mmlu, tokenizer, options.shots, limit, fmt)
        _check_vocab(encoded, choice_ids, int(config.vocab_size))
        answers = [q.answer for q in mmlu.questions]
        ids = np.concatenate([e.ids for e in encoded]) if encoded else np.zeros(0, dtype=np.int64)
        meta = {"scoring": options.scoring, "prompt_format": fmt.id, "choice_ids": list(choice_ids),
                "pad_id": int(pad_id), "fingerprint": prompts_fingerprint(options.scoring, choice_ids, answers, ids)}
        return questions_table(mmlu.questions, encoded, meta)

    @staticmethod
    def costs(table: pa.Table, config) -> np.ndarray:
        """FLOPs of each prompt's forward pass (workers/measure/flops.py: weights x tokens + causal attention)."""
        from workers.measure.flops import flops_model_from_config

        offsets = single_chunk(table, "input_ids").offsets.to_numpy()
        flops = flops_model_from_config(config, causal=True)
        return np.array([flops.sequence_flops(int(n)) for n in np.diff(offsets)], dtype=np.float64)

    def __init__(self, table: pa.Table) -> None:
        meta = read_task_metadata(table)
        self.scoring = meta["scoring"]
        self.prompt_format = meta["prompt_format"]  # the versioned prompt variant (mmlu_data.PROMPT_FORMATS)
        self.choice_ids = tuple(meta["choice_ids"])
        self.pad_id = meta["pad_id"]
        self._fingerprint = meta["fingerprint"]
        prompts = single_chunk(table, "input_ids")
        self._ids = prompts.values.to_numpy(zero_copy_only=True)
        self._offsets = prompts.offsets.to_numpy(zero_copy_only=True)
        subject = single_chunk(table, "subject")
        self._subject_names = subject.dictionary.to_pylist()
        self._subject = subject.indices.to_numpy(zero_copy_only=True)
        self._index = single_chunk(table, "question_index").to_numpy(zero_copy_only=True)
        self._answer = single_chunk(table, "answer").to_numpy(zero_copy_only=True)
        self._shots_used = single_chunk(table, "shots_used").to_numpy(zero_copy_only=True)
        self._truncated = single_chunk(table, "truncated").to_numpy(zero_copy_only=True)

    def num_examples(self) -> int:
        return len(self._offsets) - 1

    def fingerprint(self) -> str:
        return self._fingerprint

    def length(self, example: int) -> int:
        return int(self._offsets[example + 1] - self._offsets[example])

    def median_length(self) -> int:
        """The median prompt's tokens over the whole prepared set (the same on every worker): what
        TensorRT's profile tunes its kernels for (~540 for 5-shot MMLU with a Llama tokenizer)."""
        lengths = np.diff(self._offsets)
        return int(np.median(lengths)) if len(lengths) else 1

    def prompt(self, example: int) -> np.ndarray:
        """The prompt's token ids (a read-only view of the shared array)."""
        return self._ids[self._offsets[example]: self._offsets[example + 1]]

    def gold(self, example: int) -> str:
        return LETTERS[self._answer[example]]

    def batches(self, start: int, stop: int, bs: int) -> Iterator[Batch]:
        """Length-sorted, right-padded batches of the questions start..stop-1."""
        order = sorted(range(start, stop), key=lambda i: (self.length(i), i))
        for lo in range(0, len(order), bs):
            yield self.batch_of(order[lo: lo + bs])

    def batch_of(self, examples: Sequence[int]) -> Batch:
        """These questions, right-padded to the longest (each read at its own last token)."""
        chosen = [int(i) for i in examples]
        lengths = [self.length(i) for i in chosen]
        ids = np.full((len(chosen), max(lengths)), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, i in enumerate(chosen):
            ids[row, : lengths[row]] = self.prompt(i)
            mask[row, : lengths[row]] = 1
        inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        return Batch(inputs, items=sum(lengths), lengths=lengths, payload=chosen,
                     read_positions=[n - 1 for n in lengths])

    def score(self, batch: Batch, logits: torch.Tensor, responses: bool = False) -> BatchScore:
        last_pos = batch.read_positions or [n - 1 for n in batch.lengths]
        last = logits_at(logits, last_pos).float()  # (batch, vocab): the logits after "Answer:"
        choice = last[:, list(self.choice_ids)]
        if self.scoring == "lm-eval":
            picked = [LETTERS[int(k)] for k in choice.argmax(dim=-1).cpu()]
        else:
            by_id = dict(zip(self.choice_ids, LETTERS))
            picked = [by_id.get(int(t)) for t in last.argmax(dim=-1).cpu()]
        values = choice.cpu().tolist()
        records = [self._record(i, letter, v) for i, letter, v in zip(batch.payload, picked, values)]
        out = BatchScore(scored=len(records), correct=sum(r["correct"] for r in records), records=records)
        if responses:  # the chosen letter's index (A = 0 .. D = 3; -1: none), int32 little-endian
            out.responses = [_choice_bytes(letter) for letter in picked]
        return out

    def score_responses(self, responses: dict[int, bytes]) -> BatchScore:
        correct = 0
        for example, data in responses.items():
            choice = int(np.frombuffer(data, dtype="<i4")[0])
            correct += choice >= 0 and LETTERS[choice] == self.gold(example)
        return BatchScore(scored=len(responses), correct=int(correct))

    def _record(self, example: int, predicted: str | None, choice_logits: list[float]) -> dict[str, Any]:
        gold = self.gold(example)
        return {
            "example": example, "subject": self._subject_names[self._subject[example]],
            "question_index": int(self._index[example]), "gold": gold,
            "predicted": predicted, "correct": predicted == gold,
            **{f"logit_{letter}": value for letter, value in zip(LETTERS, choice_logits)},
            "prompt_tokens": self.length(example), "shots_used": int(self._shots_used[example]),
            "truncated": bool(self._truncated[example]), "scoring": self.scoring,
            "prompt_format": self.prompt_format,
        }

    def sample_inputs(self, bs: int, seq_len: int) -> dict[str, torch.Tensor]:
        """Real prompt tokens in the shape asked for (engine builds and export checks)."""
        ids = torch.from_numpy(np.resize(self.prompt(0), (bs, seq_len)))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _choice_bytes(letter: str | None) -> bytes:
    return np.asarray([LETTERS.index(letter) if letter in LETTERS else -1], dtype="<i4").tobytes()


def _check_vocab(encoded: list[Encoded], choice_ids: tuple[int, ...], vocab_size: int) -> None:
    top = max([int(e.ids.max()) for e in encoded] + list(choice_ids), default=0)
    if top >= vocab_size:
        raise UserError(f"model.tokenizer: token id {top} is outside the model's vocabulary ({vocab_size}); "
                        "the tokenizer does not match the model")
