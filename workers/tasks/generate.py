"""LLM generation: requests (a prompt, how many tokens to make) decoded token by token.

Prompts come from one of three sources, chosen by the job's `data:`:
- `data: synthetic`: seeded random token ids (`data.synthetic.seed`), `data.synthetic.size` requests;
- a text file: consecutive windows of its token stream (headings and blank lines dropped, as masked_lm
  reads it), each as long as drawn, `limit` requests or as many as the text holds;
- an MMLU folder: test questions in lm-eval's prompt form, 0-shot, ending in "Answer:" (each keeps its
  own length, cut from the left to the longest `input_tokens`), `limit` of them drawn under `seed`.
Input lengths (synthetic and text) and output lengths are drawn once, here, under the job's `seed`
(`Lengths.draw`), so a run is reproducible from its job file and does not depend on how requests
are later split into shards and batches. The prepared table holds each request's prompt ids and
its `max_new_tokens`; the schema metadata the end-of-sequence ids and the fingerprint.

Items (the unit of throughput) are output tokens; examples (the unit of sharding) are requests.
There is no score: a request's record is its prompt and output token ids (predictions.parquet),
which `invariance_check` compares with plain greedy `generate` of the prompt alone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch

from workers.engines.generation import GenerationRequest, Generated, Sampling
from workers.errors import UserError
from workers.models import encoder_only, max_positions
from workers.specs import DataSpec, GenerateTask
from workers.tasks import InputSignature, read_task_metadata, single_chunk, task_metadata


def check_fits(options: GenerateTask, config: Any) -> None:
    """Refuse what the model cannot generate: an encoder-only model, or a prompt plus its output
    beyond the model's positions (the longest of each, as their distributions allow)."""
    if encoder_only(config):
        kind = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", "?")
        raise UserError(f"model: task generate needs a decoder (a causal LM); '{kind}' is an encoder-only model")
    problem = options.beyond_positions(max_positions(config))
    if problem:
        raise UserError(problem)


def _eos_ids(tokenizer: Any, config: Any) -> list[int]:
    found = getattr(config, "eos_token_id", None)
    ids = found if isinstance(found, list) else [found]
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted({int(i) for i in ids if i is not None})


def synthetic_prompts(data: DataSpec, lengths: np.ndarray, vocab_size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(data.synthetic.seed)
    return [rng.integers(0, vocab_size, size=int(n), dtype=np.int64) for n in lengths]


def text_prompts(options: GenerateTask, data: DataSpec, tokenizer: Any, seed: int) -> list[np.ndarray]:
    """Consecutive windows of the text's token stream, each as long as drawn."""
    from workers.tasks.masked_lm import read_text

    if tokenizer is None:
        raise UserError("model.tokenizer: task generate on a text file needs a tokenizer (a hub id, folder or .gguf)")
    text = read_text(Path(data.path).expanduser(), skip_headings=True)
    stream = np.asarray(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64)
    most = options.limit or len(stream)
    lengths = options.input_tokens.draw(np.random.default_rng([seed, 1]), most)
    ends = np.cumsum(lengths)
    count = int(np.searchsorted(ends, len(stream), side="right"))
    if count == 0:
        raise UserError(f"data.path: '{data.path}' has {len(stream)} tokens, fewer than one prompt of "
                        f"{int(lengths[0])}")
    return [stream[end - n: end] for n, end in zip(lengths[:count], ends[:count])]


def mmlu_prompts(options: GenerateTask, data: DataSpec, tokenizer: Any, seed: int) -> list[np.ndarray]:
    """MMLU test questions, 0-shot in lm-eval's form, drawn under `seed`, cut from the left to fit."""
    from workers.tasks.mmlu_data import build_prompt, load_mmlu, prompt_format

    if tokenizer is None:
        raise UserError("model.tokenizer: task generate on MMLU needs a tokenizer (a hub id, folder or .gguf)")
    questions = load_mmlu(Path(data.path).expanduser(), "test", None, None, 0).questions
    order = np.random.default_rng([seed, 3]).permutation(len(questions))[: options.limit or len(questions)]
    fmt = prompt_format("lm-eval")
    texts = [build_prompt(questions[i], [], fmt) for i in order]
    longest = options.input_tokens.longest
    encoded = tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    return [np.asarray(ids[-longest:], dtype=np.int64) for ids in encoded]


def prompts_of(options: GenerateTask, data: DataSpec, tokenizer: Any, config: Any, seed: int) -> tuple[str, list]:
    if data.synthetic is not None:
        lengths = options.input_tokens.draw(np.random.default_rng([seed, 1]), data.synthetic.size)
        return "synthetic", synthetic_prompts(data, lengths, int(config.vocab_size))
    if Path(data.path).expanduser().is_dir():
        return "mmlu", mmlu_prompts(options, data, tokenizer, seed)
    return "text", text_prompts(options, data, tokenizer, seed)


class Generate:
    """The worker's view of the prepared requests: numpy views of the table, read-only."""

    model_kind = "causal_lm"
    item_unit = "tok"  # output tokens
    generates = True
    signature = InputSignature({"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}})

    @staticmethod
    def prepare(options: GenerateTask, data: DataSpec, tokenizer: Any, config: Any, seq_len: int,
                seed: int) -> pa.Table:
        check_fits(options, config)
        source, prompts = prompts_of(options, data, tokenizer, config, seed)
        new_tokens = options.max_new_tokens.draw(np.random.default_rng([seed, 2]), len(prompts))
        lengths = np.fromiter((len(p) for p in prompts), dtype=np.int64, count=len(prompts))
        ids = np.concatenate(prompts) if prompts else np.zeros(0, dtype=np.int64)
        if ids.size and int(ids.max()) >= int(config.vocab_size):
            raise UserError(f"model.tokenizer: token id {int(ids.max())} is outside the model's vocabulary "
                            f"({config.vocab_size}); the tokenizer does not match the model")
        digest = hashlib.sha256(repr((source, options.ignore_eos, options.sampling_label)).encode())
        for array in (lengths, ids, new_tokens):
            digest.update(memoryview(np.ascontiguousarray(array)))
        meta = {"source": source, "eos_ids": _eos_ids(tokenizer, config), "ignore_eos": options.ignore_eos,
                "sampling": [options.temperature, options.top_p, options.top_k] if not options.greedy else None,
                "seed": seed, "fingerprint": digest.hexdigest()[:16]}
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return pa.table({
            "prompt_ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids)),
            "max_new_tokens": pa.array(new_tokens, pa.int32()),
        }, metadata=task_metadata(meta))

    @staticmethod
    def costs(table: pa.Table, config: Any) -> np.ndarray:
        """FLOPs of each request: its prompt and every output token but the last run through the model."""
        from workers.measure.flops import flops_model_from_config

        lengths = np.diff(single_chunk(table, "prompt_ids").offsets.to_numpy())
        new = single_chunk(table, "max_new_tokens").to_numpy()
        flops = flops_model_from_config(config, causal=True)
        return np.array([flops.sequence_flops(int(n + m - 1)) for n, m in zip(lengths, new)], dtype=np.float64)

    def __init__(self, table: pa.Table) -> None:
        meta = read_task_metadata(table)
        self.source = meta["source"]
        self.eos_ids = tuple(meta["eos_ids"])
        self.ignore_eos = bool(meta["ignore_eos"])
        self.seed = int(meta["seed"])
        self.sampling = meta["sampling"]
        self._fingerprint = meta["fingerprint"]
        prompts = single_chunk(table, "prompt_ids")
        self._ids = prompts.values.to_numpy(zero_copy_only=True)
        self._offsets = prompts.offsets.to_numpy(zero_copy_only=True)
        self._new = single_chunk(table, "max_new_tokens").to_numpy(zero_copy_only=True)

    def num_examples(self) -> int:
        return len(self._offsets) - 1

    def fingerprint(self) -> str:
        return self._fingerprint

    def length(self, example: int) -> int:
        return int(self._offsets[example + 1] - self._offsets[example])

    def median_length(self) -> int:
        lengths = np.diff(self._offsets)
        return int(np.median(lengths)) if len(lengths) else 1

    def max_context(self) -> int:
        """The longest prompt plus the longest output: what a KV cache must hold for any request."""
        if not self.num_examples():
            return 1
        return int(np.diff(self._offsets).max()) + int(self._new.max())

    def prompt(self, example: int) -> np.ndarray:
        return self._ids[self._offsets[example]: self._offsets[example + 1]]

    def request(self, example: int) -> GenerationRequest:
        sampling = None
        if self.sampling is not None:
            temperature, top_p, top_k = self.sampling
            sampling = Sampling(temperature, top_p, int(top_k), seed=self.seed + example)
        return GenerationRequest(example, tuple(int(t) for t in self.prompt(example)), int(self._new[example]),
                                 self.ignore_eos, self.eos_ids, sampling)

    def requests(self, examples: Sequence[int]) -> list[GenerationRequest]:
        return [self.request(int(i)) for i in examples]

    def waves(self, start: int, stop: int, bs: int, continuous: bool) -> list[list[GenerationRequest]]:
        """The requests of a shard as the decode loop hands them to a generator: all at once to a
        continuous one; else batches of bs, each of prompts of similar length (little padding)."""
        if continuous:
            return [self.requests(range(start, stop))]
        order = sorted(range(start, stop), key=lambda i: (self.length(i), i))
        return [self.requests(order[lo: lo + bs]) for lo in range(0, len(order), bs)]

    def record(self, generated: Generated) -> dict[str, Any]:
        """What predictions.parquet keeps of a request: its prompt and output token ids."""
        example = generated.request_id
        return {"example": example, "prompt_tokens": self.length(example),
                "prompt_ids": [int(t) for t in self.prompt(example)], "output_tokens": len(generated.token_ids),
                "output_ids": list(generated.token_ids), "finish_reason": generated.finish_reason}

    def sample_inputs(self, bs: int, seq_len: int) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.resize(self.prompt(0), (bs, seq_len)).astype(np.int64))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
