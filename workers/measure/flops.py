"""Forward-pass FLOPs of a transformer, for MFU.

FLOPs of one sequence of `length` tokens:
    2 x matmul_params x length                       (every token meets every weight once; 2 = mul + add)
  + 2 x 2 x n_layers x attn_width x context_pairs    (QK^T and attention x V)
where context_pairs = length^2 for bidirectional models (BERT) and length(length+1)/2 for causal
ones (token i attends to i+1 positions). `matmul_params` counts the weights of every linear layer,
the LM head included even when it is tied to the embeddings (it is still a matmul per token), and
excludes embedding lookups, norms and biases (no multiply-adds per token worth counting).
This is the usual 2N + attention accounting (Kaplan et al. 2020; PaLM appendix B), per item.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class FlopsModel:
    matmul_params: int
    n_layers: int
    attn_width: int
    causal: bool

    def sequence_flops(self, length: int) -> float:
        pairs = length * (length + 1) / 2 if self.causal else float(length * length)
        return 2.0 * self.matmul_params * length + 4.0 * self.n_layers * self.attn_width * pairs


def matmul_params(model: nn.Module) -> int:
    """Weights of linear layers (torch Linear and GPT-2 style Conv1D), counted once per module."""
    total = 0
    for module in model.modules():
        is_conv1d = type(module).__name__ == "Conv1D" and hasattr(module, "nf")
        if isinstance(module, nn.Linear) or is_conv1d:
            total += module.weight.numel()
    return total


def attention_shape(config) -> tuple[int, int]:
    """(layers, attention width = heads x head_dim) from a transformers config."""
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 1)
    head_dim = getattr(config, "head_dim", None) or hidden // max(heads, 1)
    return int(n_layers), int(heads * head_dim)


def flops_model(model: nn.Module, config, causal: bool) -> FlopsModel:
    n_layers, width = attention_shape(config)
    return FlopsModel(matmul_params(model), n_layers, width, causal)


def flops_model_from_config(config, causal: bool) -> FlopsModel:
    """Without instantiating weights (the synthetic engine): build the model on the meta device."""
    import torch
    import transformers

    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForMaskedLM
    with torch.device("meta"):
        model = auto.from_config(config)
    return flops_model(model, config, causal)
