"""Forward-pass FLOPs of a transformer, for MFU.

FLOPs of one sequence of `length` tokens:
    2 x matmul_params x length                       (every token meets every weight once; 2 = mul + add)
  + 2 x 2 x n_layers x attn_width x context_pairs    (QK^T and attention x V)
where context_pairs = length^2 for bidirectional models (BERT) and length(length+1)/2 for causal
ones (token i attends to i+1 positions). `matmul_params` counts the weights of every linear layer,
the LM head included even when it is tied to the embeddings (it is still a matmul per token), and
excludes embedding lookups, norms and biases (no multiply-adds per token worth counting).
This is the usual 2N + attention accounting (Kaplan et al. 2020; PaLM appendix B), per item.

The LM head is counted at the tokens whose logits the engine computed: every token of a whole
forward pass; one per prompt where the task reads only the last position (MMLU) and the engine
computes the head there alone (the eager engine: workers/engines/torch_eager.py), so MFU never
counts FLOPs that did not run. `head_params` is the output embedding's weights (0 when the model
has none to name).
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
    head_params: int = 0  # of matmul_params, the LM head's (the output embedding)

    def sequence_flops(self, length: int, head_tokens: int | None = None) -> float:
        """One sequence's forward pass; its LM head at `head_tokens` tokens (default: all `length`)."""
        pairs = length * (length + 1) / 2 if self.causal else float(length * length)
        head = length if head_tokens is None else head_tokens
        body = self.matmul_params - self.head_params
        return 2.0 * (body * length + self.head_params * head) + 4.0 * self.n_layers * self.attn_width * pairs


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


def head_params(model: nn.Module) -> int:
    """Weights of the LM head (the output embedding) when the model names one and it is a linear layer."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    return int(head.weight.numel()) if isinstance(head, nn.Linear) else 0


def flops_model(model: nn.Module, config, causal: bool) -> FlopsModel:
    n_layers, width = attention_shape(config)
    return FlopsModel(matmul_params(model), n_layers, width, causal, head_params(model))


def flops_model_from_config(config, causal: bool) -> FlopsModel:
    """Without instantiating weights (the synthetic engine): build the model on the meta device."""
    import torch
    import transformers

    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForMaskedLM
    with torch.device("meta"):
        model = auto.from_config(config)
    return flops_model(model, config, causal)
