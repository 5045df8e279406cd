"""The vllm generator without vLLM (no CPU wheel exists): its logic around the library, driven by a fake
`vllm` module at the boundary (tests/fakes/fake_vllm.py), and its one-line refusals. Nothing here
shows that real vLLM runs these requests; docs/BENCHMARKS.md says what has run on a GPU."""

import sys
import threading
from pathlib import Path

import pytest
import torch

from tests.fakes import fake_vllm
from workers.engines import BuildContext
from workers.engines.generation import GenerationRequest, Sampling
from workers.engines.vllm_generate import Vllm
from workers.errors import UserError
from workers.specs import ModelSpec, VllmOptions


def context(device: str = "cuda", source: str | None = "org/some-llm", bs: int = 4) -> BuildContext:
    spec = ModelSpec(source=source) if source else ModelSpec(random={"model_type": "llama"})
    return BuildContext(model=lambda: pytest.fail("vllm loads its own weights"), model_files_hash=lambda: "x",
                        config=None, signature=None, sample_inputs=None, bs=bs, seq_len=96, precision="fp16",
                        device=torch.device(device), cache_dir=Path("/nonexistent"), causal=True, model_spec=spec)


@pytest.fixture
def vllm(monkeypatch):
    fake = fake_vllm.module()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    return fake


def test_without_vllm_installed_the_build_says_so_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(UserError, match=r"^engine: vllm needs the Python package 'vllm', which is not installed"):
        Vllm().build(context())


def test_on_a_worker_without_a_gpu_it_is_refused_before_vllm_is_imported(vllm):
    with pytest.raises(UserError, match=r"^engine: vllm runs on NVIDIA GPUs; this worker has none \(cpu\)"):
        Vllm().build(context(device="cpu"))
    assert not vllm.LLMEngine.made


def test_a_random_model_is_refused_vllm_loads_its_own_weights(vllm):
    with pytest.raises(UserError, match="model.source"):
        Vllm().build(context(source=None))


def test_engine_args_and_sampling_params_follow_the_job(vllm):
    generator = Vllm(VllmOptions(gpu_memory_utilization=0.5))
    generator.build(context(bs=6))
    try:
        args = vllm.LLMEngine.made[0].args.kwargs
        assert (args["model"], args["dtype"], args["max_model_len"], args["max_num_seqs"]) == ("org/some-llm",
                                                                                               "float16", 96, 6)
        assert args["gpu_memory_utilization"] == 0.5
        generator.generate([GenerationRequest(0, (5,), 3), GenerationRequest(1, (5,), 3, ignore_eos=False,
                                                                             eos_ids=(2,),
                                                                             sampling=Sampling(0.8, 0.9, 4, 11))],
                           lambda *_: None)
        (_, prompt, greedy), (_, _, sampled) = vllm.LLMEngine.made[0].added
        assert prompt == {"prompt_token_ids": [5]}
        assert greedy.kwargs == {"max_tokens": 3, "ignore_eos": True, "stop_token_ids": [], "detokenize": False,
                                 "temperature": 0.0}
        assert sampled.kwargs["stop_token_ids"] == [2] and sampled.kwargs["top_k"] == 4 and sampled.kwargs["seed"] == 11
    finally:
        generator.close()


def test_tokens_are_told_step_by_step_and_overlapping_calls_share_the_engine(vllm):
    generator = Vllm()
    generator.build(context())
    try:
        told: list[tuple[int, int]] = []
        out = generator.generate([GenerationRequest(0, (10,), 4), GenerationRequest(1, (20,), 4, ignore_eos=False,
                                                                                    eos_ids=(21,))],
                                 lambda r, t, s: told.append((r, t)))
        assert [o.token_ids for o in out] == [[10, 11, 12, 13], [20, 21]]
        assert [o.finish_reason for o in out] == ["length", "eos"]
        assert told == [(0, 10), (1, 20), (0, 11), (1, 21), (0, 12), (0, 13)]
        results = {}

        def call(k: int) -> None:
            results[k] = generator.generate([GenerationRequest(k, (100 * k,), 5)], lambda *_: None)

        threads = [threading.Thread(target=call, args=(k,)) for k in (1, 2, 3)]
        [t.start() for t in threads]
        [t.join(10) for t in threads]
        assert {k: r[0].token_ids for k, r in results.items()} == {k: [100 * k + i for i in range(5)] for k in (1, 2, 3)}
        assert generator.reference(GenerationRequest(0, (10,), 4)) == [10, 11, 12, 13]
    finally:
        generator.close()
