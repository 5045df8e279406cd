"""The eager engine's second precision: a cast copy of the loaded model, made without a whole second
copy on the model's device (a 7B fp32 val + fp16 infer would otherwise peak at 28 + 28 + 14 GB)."""

from __future__ import annotations

import torch

from tests.workers.engines.test_onnx_export import NewStorage, bf16_llama
from workers.engines.torch_eager import model_at


def test_a_second_precision_allocates_only_the_cast_copy_on_the_models_device():
    """Before: `copy.deepcopy(model).to(dtype)` allocated 1.5x the fp32 weights (a whole fp32 copy,
    then its fp16 cast); now only the fp16 copy, 0.5x. Counted with a dispatch mode on the model's
    device (the CPU here; on a GPU the same ops allocate on the GPU)."""
    model = bf16_llama().float()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with NewStorage(torch.device("cpu")) as allocated:
        half = model_at(model, "fp16")
    assert allocated.bytes < 0.55 * weight_bytes, allocated.bytes / weight_bytes
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the loaded model is left as it was
    ids = {"input_ids": torch.tensor([[1, 5, 9, 2]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.inference_mode():
        want, got = model(**ids, use_cache=False).logits, half(**ids, use_cache=False).logits.float()
    assert torch.allclose(got, want, atol=0.02 * want.abs().max().item())
    assert model_at(model, "fp32") is model  # already at the precision: no copy


def test_tied_weights_stay_tied_in_the_cast_copy():
    model = bf16_llama().float()
    model.config.tie_word_embeddings = True
    model.tie_weights()
    half = model_at(model, "fp16")
    assert half.lm_head.weight is half.model.embed_tokens.weight
