"""What each request asks: the job's `prompts:` made into texts, and each scheduled request into the
JSON body a client sends.

- synthetic: seeded random words (common English words, about one token each in the usual BPE
  vocabularies: the server's `usage` gives the exact count), or, with `endpoint.tokenizer`, seeded
  random token ids decoded to text and cut to exactly `input_tokens` tokens (vLLM's random dataset);
- text: a text file cut into consecutive prompts of `input_tokens` words (tokens with a tokenizer);
- mmlu: the mmlu task's own 5-shot prompts (workers/tasks/mmlu_data.py), lm-eval's format.
Requests take the prompts in turn (request i gets prompt i mod count, so prompts are reused in the
same order on every run); a trace's input length replaces the prompt's (synthetic words) and its
output length replaces `max_tokens`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.modes.endpoint.arrivals import Scheduled
from orchestrator.spec.job import EndpointJob
from workers.errors import UserError

# About one token each for the BPE tokenizers of Llama, Mistral, Qwen, GPT-2 (a leading space + a word).
WORDS = ("the of and to in is was for on that with as by at from his an were are which this be or had not but "
         "one their first new after two also who they her she been has all other its time may city year over "
         "into most only world part some when school about could would there more these many such later war "
         "music county team people made game then during three both state under known season while where "
         "film series found united album being through").split()


@dataclass(frozen=True)
class Prompt:
    text: str
    tokens: int  # the prompt's length in tokens where a tokenizer counted it, else 0 (the server's usage says)


def load_tokenizer(name: str | None):
    """`endpoint.tokenizer` on the driver (None without one)."""
    if name is None:
        return None
    from workers.data.package_files import resolve
    from workers.models import load_tokenizer as load
    from workers.specs import ModelSpec

    try:
        return load(ModelSpec(source=resolve(name, "endpoint.tokenizer")))
    except UserError as exc:
        raise UserError(str(exc).replace("model.tokenizer", "endpoint.tokenizer")) from None


def make_prompts(spec: EndpointJob, tokenizer=None) -> list[Prompt]:
    p = spec.prompts
    if p.source == "synthetic":
        return [synthetic_prompt(p.input_tokens, p.seed * 1_000_003 + i, tokenizer) for i in range(p.count)]
    if p.source == "text":
        return _text_prompts(Path(p.path), p.input_tokens, p.count, tokenizer)
    return _mmlu_prompts(Path(p.path), p.shots, p.count, tokenizer)


def synthetic_prompt(tokens: int, seed: int, tokenizer=None) -> Prompt:
    rng = np.random.default_rng(seed)
    if tokenizer is None:
        return Prompt(" ".join(WORDS[i] for i in rng.integers(0, len(WORDS), tokens)), 0)
    special = set(tokenizer.all_special_ids)
    ids = [int(i) for i in rng.integers(0, tokenizer.vocab_size, tokens * 2) if int(i) not in special]
    return _cut(tokenizer, tokenizer.decode(ids, skip_special_tokens=True), tokens)


def _cut(tokenizer, text: str, tokens: int) -> Prompt:
    """`text` cut to `tokens` tokens as the server will count them (decoding then encoding again can
    merge pieces, so the count is taken from the final text)."""
    ids = tokenizer.encode(text, add_special_tokens=False)[:tokens]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return Prompt(text, len(tokenizer.encode(text, add_special_tokens=False)))


def _text_prompts(path: Path, length: int, count: int, tokenizer) -> list[Prompt]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"prompts.path: cannot read '{path}' ({exc.strerror})") from None
    if tokenizer is not None:
        ids = tokenizer.encode(text, add_special_tokens=False)
        windows = [ids[i:i + length] for i in range(0, len(ids) - length + 1, length)][:count]
        prompts = [Prompt(tokenizer.decode(w, skip_special_tokens=True), len(w)) for w in windows]
    else:
        words = text.split()
        prompts = [Prompt(" ".join(words[i:i + length]), 0) for i in range(0, len(words) - length + 1, length)][:count]
    if not prompts:
        raise UserError(f"prompts.path: '{path}' holds less than one prompt of {length} "
                        f"{'tokens' if tokenizer is not None else 'words'} (prompts.input_tokens)")
    return prompts


def _mmlu_prompts(folder: Path, shots: int, count: int, tokenizer) -> list[Prompt]:
    from workers.tasks.mmlu_data import build_prompt, load_mmlu, prompt_format

    data = load_mmlu(folder, "test", None, None, shots)
    fmt = prompt_format("lm-eval")
    # spread over the subjects: every len/count-th question, so a short count is not one subject's
    step = max(1, len(data.questions) // count)
    chosen = data.questions[::step][:count]
    texts = [build_prompt(q, data.dev[q.subject][:shots], fmt) for q in chosen]
    return [Prompt(t, len(tokenizer.encode(t)) if tokenizer is not None else 0) for t in texts]


def request_body(spec: EndpointJob, prompt: Prompt, max_tokens: int) -> bytes:
    """One request's JSON, as the server's API wants it: streamed, with the usage chunk asked for."""
    body: dict[str, Any] = {"model": spec.endpoint.model, "max_tokens": max_tokens, "stream": True,
                            "stream_options": {"include_usage": True}}
    if spec.endpoint.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.text
    if spec.prompts.ignore_eos:
        body["ignore_eos"] = True
    body.update(spec.endpoint.extra_body)
    return json.dumps(body).encode()


def bodies(spec: EndpointJob, prompts: list[Prompt], schedule: list[Scheduled], tokenizer=None,
           offset: int = 0) -> dict[int, tuple[bytes, int]]:
    """Each scheduled request's body and known prompt length: prompt (offset + id) mod count, or a
    prompt of the trace's length; max_tokens, or the trace's output length."""
    out = {}
    for s in schedule:
        prompt = prompts[(offset + s.request_id) % len(prompts)]
        if s.input_tokens is not None:
            prompt = synthetic_prompt(s.input_tokens, spec.prompts.seed * 1_000_003 + s.request_id, tokenizer)
        out[s.request_id] = (request_body(spec, prompt, s.output_tokens or spec.prompts.max_tokens), prompt.tokens)
    return out
