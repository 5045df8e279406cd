"""The ONNX export's memory: no second copy of the model's weights on the model's device.

On this CPU-only machine the model's device and the host are the same memory, so the test moves
the export's host to the meta device (tensors with shapes and no storage) and records, with a
TorchDispatchMode, every tensor an export build allocates on the model's device. The export and
its check are replaced by recorders (a meta model cannot be exported); what is under test is what
the build does to the weights before it hands them over. tests/gpu/ has the same check on a GPU.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tests.workers.engines.test_engines_llama import SIGNATURE, right_padded
from workers.engines import BuildContext, onnx_export

# Big enough that the weights dwarf the sample batch the build also makes (2 x 16 ids and mask).
LLAMA = dict(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=128, max_position_embeddings=128)


class NewStorage(TorchDispatchMode):
    """Bytes of new storage allocated on `device` by the ops run inside the mode (views not counted)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device, self.bytes = device, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        seen = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0]
                if isinstance(a, torch.Tensor) and a.device == self.device}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device == self.device and t.untyped_storage().data_ptr() not in seen:
                self.bytes += t.untyped_storage().nbytes()
        return out


def bf16_llama() -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **LLAMA)).to(torch.bfloat16).eval()


def context(model, cache_dir, precision: str) -> BuildContext:
    return BuildContext(
        model=lambda: model, model_files_hash=lambda: "bf16-llama", config=model.config, signature=SIGNATURE,
        sample_inputs=right_padded, bs=2, seq_len=16, precision=precision, device=torch.device("cpu"),
        cache_dir=cache_dir, causal=True,
    )


def test_export_makes_no_copy_of_the_weights_on_the_models_device(tmp_path, monkeypatch):
    """A bf16 model exported at fp32 (TensorRT 10's weakly typed build): the fp32 copy is made on the
    host, and no tensor of the weights' size is allocated on the model's device on the way."""
    model = bf16_llama()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    handed: list[torch.nn.Module] = []
    monkeypatch.setattr(onnx_export, "HOST", torch.device("meta"))
    monkeypatch.setattr(onnx_export, "export_model", lambda m, sample, *a: (handed.append(m), a[-2].write_bytes(b"x")))
    monkeypatch.setattr(onnx_export, "check_export", lambda *a: "not checked (recorded)")
    with NewStorage(torch.device("cpu")) as allocated:
        onnx_export.exported_onnx(context(model, tmp_path, "fp32"), onnx_export.EngineCache(tmp_path), "fp32", 18)
    assert allocated.bytes < 0.02 * weight_bytes, (allocated.bytes, weight_bytes)
    (exported,) = handed
    assert {(p.device.type, p.dtype) for p in exported.parameters()} == {("meta", torch.float32)}
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cpu", torch.bfloat16)}  # left as it was


def test_host_copy_casts_keeps_ties_and_shares_what_needs_no_copy():
    model = bf16_llama()
    model.config.tie_word_embeddings = True
    model.tie_weights()
    host = onnx_export.host_copy(model, "fp32")
    assert host.lm_head.weight is host.model.embed_tokens.weight  # one tensor, as in the model
    assert all(p.dtype == torch.float32 for p in host.parameters())
    ids = right_padded(2, 8)
    with torch.inference_mode():
        want = model(**ids, use_cache=False).logits.float()
        got = host(**ids, use_cache=False).logits
    assert torch.allclose(got, want, atol=0.05 * want.abs().max().item())
    same = onnx_export.host_copy(host, "fp32")  # already on the host at fp32: the tensors are shared
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(host.parameters(), same.parameters()))
