"""Engines on a tiny random Llama fed {input_ids, attention_mask} with right padding (the MMLU shape).

Engine level, against torch eager on the same batches: top-1 agreement over the real (unpadded)
positions >= 99 %, and the last real token's argmax (what MMLU scores) identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workers.engines import BuildContext
from workers.tasks import InputSignature

LLAMA = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=64, max_position_embeddings=128)
SIGNATURE = InputSignature({"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}})
PAD = 0
AGREEMENT = 0.99


def right_padded(bs: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random prompts of mixed lengths, padded on the right with PAD and masked out; one is full length."""
    rng = np.random.default_rng(seed + 1000 * bs + seq_len)
    lengths = rng.integers(max(1, seq_len // 2), seq_len + 1, size=bs)
    lengths[0] = seq_len
    mask = np.arange(seq_len)[None, :] < lengths[:, None]
    ids = np.where(mask, rng.integers(1, LLAMA["vocab_size"], size=(bs, seq_len)), PAD)
    return {"input_ids": torch.from_numpy(ids.astype(np.int64)), "attention_mask": torch.from_numpy(mask.astype(np.int64))}


def tiny_llama() -> tuple[torch.nn.Module, object]:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", **LLAMA)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval(), config


def llama_context(cache_dir: Path, precision: str = "fp32", bs: int = 4, seq_len: int = 24) -> BuildContext:
    model, config = tiny_llama()
    return BuildContext(
        model=lambda: model, model_files_hash=lambda: "tiny-llama-seed0", config=config, signature=SIGNATURE,
        sample_inputs=right_padded, bs=bs, seq_len=seq_len, precision=precision, device=torch.device("cpu"),
        cache_dir=cache_dir, causal=True,
    )


def assert_matches_eager(engine, ctx: BuildContext, shapes: list[tuple[int, int]]) -> None:
    model = ctx.model()
    for bs, seq_len in shapes:
        batch = right_padded(bs, seq_len, seed=7)
        got = engine.forward(engine.to_device(batch)).float().cpu()
        with torch.inference_mode():
            want = model(**batch, use_cache=False).logits.float()
        assert got.shape == want.shape == (bs, seq_len, LLAMA["vocab_size"])
        real = batch["attention_mask"].bool()
        agree = (got.argmax(-1) == want.argmax(-1))[real].float().mean().item()
        assert agree >= AGREEMENT, (bs, seq_len, agree)
        last = batch["attention_mask"].sum(1) - 1
        rows = torch.arange(bs)
        assert torch.equal(got[rows, last].argmax(-1), want[rows, last].argmax(-1))


def test_eager_engine_builds_no_kv_cache(tmp_path):
    """The val pass and `engine: torch` do the work the other engines do: no KV cache (use_cache=False)."""
    from workers.engines.torch_eager import TorchEager

    ctx = llama_context(tmp_path)
    calls = []
    ctx.model().register_forward_hook(
        lambda module, args, kwargs, out: calls.append((kwargs.get("use_cache"), out.past_key_values)), with_kwargs=True)
    engine = TorchEager()
    engine.build(ctx)
    engine.forward(engine.to_device(right_padded(2, 8)))
    assert calls == [(False, None)]


def test_eager_forward_at_computes_the_head_at_the_read_positions_only(tmp_path):
    """MMLU reads each prompt's last token: the eager engine applies the LM head there alone, and the
    logits are the whole forward pass's at those positions (up to the rounding of a matmul of
    another shape: the same argmax)."""
    from workers.engines.torch_eager import TorchEager

    ctx = llama_context(tmp_path)
    engine = TorchEager()
    engine.build(ctx)
    assert engine.head_at_read_positions
    head_rows = []
    ctx.model().lm_head.register_forward_hook(lambda module, args, out: head_rows.append(args[0].shape[:2]))
    for bs, seq_len in [(4, 24), (3, 9), (1, 5)]:
        batch = right_padded(bs, seq_len, seed=3)
        last = (batch["attention_mask"].sum(1) - 1).tolist()
        head_rows.clear()
        got = engine.forward_at(engine.to_device(batch), last)
        assert head_rows == [(bs, len(set(last)))]  # the head ran on the distinct read positions, not seq_len
        whole = engine.forward(engine.to_device(batch))
        want = whole[torch.arange(bs), torch.tensor(last)]
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-6)
        assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_engines_without_a_cheaper_path_pick_the_read_positions_from_every_position(tmp_path):
    from workers.engines import EngineBase

    class Whole(EngineBase):
        def forward(self, device_inputs):
            ids = device_inputs["input_ids"]
            return (ids[..., None] * 10 + torch.arange(ids.shape[1])[None, :, None]).float()

    logits = Whole().forward_at({"input_ids": torch.tensor([[1, 2, 3], [4, 5, 6]])}, [2, 0])
    assert logits.tolist() == [[32.0], [40.0]] and not Whole.head_at_read_positions


def test_onnxruntime_llama_with_attention_mask(tmp_path):
    from workers.engines.onnxruntime import OnnxRuntime

    ctx = llama_context(tmp_path)
    engine = OnnxRuntime()
    info = engine.build(ctx)
    assert info.cache_hit is False and info.engine_bytes > 0
    # the full shape, a short last batch, shorter buckets: one export with dynamic axes serves all
    assert_matches_eager(engine, ctx, [(4, 24), (3, 24), (2, 9), (1, 5)])
    engine.close()


@pytest.mark.slow
def test_torch_compile_llama_compiles_in_build_only(tmp_path):
    """All compiling happens in build(): later batches of other shapes add no graph."""
    from torch._dynamo.utils import counters

    from workers.engines.torch_compile import TorchCompile

    torch._dynamo.reset()
    ctx = llama_context(tmp_path)
    engine = TorchCompile()
    built = engine.build(ctx)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0 and built.cache_hit is False and built.engine_bytes > 0  # inductor's portable artifacts
    assert_matches_eager(engine, ctx, [(4, 24), (3, 24), (2, 9), (1, 5)])
    assert counters["stats"]["unique_graphs"] == graphs
    engine.close()
    again = TorchCompile()
    loaded = again.build(ctx)  # the artifacts are loaded from the cache, then the model compiles from them
    assert loaded.cache_hit is True and (loaded.cache_key, loaded.engine_hash) == (built.cache_key, built.engine_hash)
    assert_matches_eager(again, ctx, [(4, 24)])
    again.close()
