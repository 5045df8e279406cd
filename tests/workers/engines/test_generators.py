"""The decode engines against an independent truth: each request's tokens equal transformers' own
greedy `model.generate` of its prompt alone (called here, not through raybench), in a static batch
of mixed lengths, with continuous batching, with EOS honoured or ignored; tokens are told as they
exist; the synthetic generator's timing is its stated cost."""

import random
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

from workers.engines import BuildContext
from workers.engines.continuous_batching import ContinuousBatching
from workers.engines.generation import GenerationRequest, Sampling
from workers.engines.synthetic_generate import SyntheticGenerator
from workers.engines.torch_generate import TorchGenerator
from workers.specs import ContinuousBatchingOptions, SyntheticEngineOptions

VOCAB = 512


@pytest.fixture(scope="module")
def model():
    config = AutoConfig.for_model("llama", vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                  initializer_range=0.2, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def context(model, bs: int = 4, context_len: int = 48) -> BuildContext:
    return BuildContext(model=lambda: model, model_files_hash=lambda: "tiny", config=model.config, signature=None,
                        sample_inputs=None, bs=bs, seq_len=context_len, precision="fp32", device=torch.device("cpu"),
                        cache_dir=Path("/nonexistent"), causal=True)


def truth(model, request: GenerationRequest) -> list[int]:
    """transformers' greedy generate of the prompt alone: EOS ignored with an empty eos list."""
    ids = torch.tensor([request.prompt_ids])
    eos = [] if request.ignore_eos else list(request.eos_ids)
    config = GenerationConfig(max_new_tokens=request.max_new_tokens, do_sample=False, pad_token_id=0, eos_token_id=eos)
    with torch.inference_mode():
        return model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)[0, ids.shape[1]:].tolist()


def mixed_requests(count: int = 8, eos: tuple[int, ...] = ()) -> list[GenerationRequest]:
    rng = random.Random(3)
    return [GenerationRequest(i, tuple(rng.randrange(2, VOCAB) for _ in range(rng.randint(1, 24))), rng.randint(1, 14),
                              ignore_eos=not eos or i % 2 == 0, eos_ids=eos) for i in range(count)]


def frequent_token(model, requests) -> int:
    """A token the model makes often: as an EOS it ends some requests early."""
    counts: dict[int, int] = {}
    for r in requests:
        for t in truth(model, GenerationRequest(r.request_id, r.prompt_ids, 12)):
            counts[t] = counts.get(t, 0) + 1
    return max(counts, key=counts.get)


class Told:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, float]] = []

    def __call__(self, request_id: int, token_id: int, time_s: float) -> None:
        self.calls.append((request_id, token_id, time_s))

    def tokens(self, request_id: int) -> list[int]:
        return [t for r, t, _ in self.calls if r == request_id]


@pytest.mark.parametrize("engine", ["torch", "continuous_batching"])
def test_tokens_equal_greedy_generate_of_each_prompt_alone(model, engine):
    generator = TorchGenerator() if engine == "torch" else ContinuousBatching(ContinuousBatchingOptions(page_size=8))
    generator.build(context(model))
    try:
        requests = mixed_requests()
        eos = frequent_token(model, requests)
        with_eos = [GenerationRequest(r.request_id, r.prompt_ids, 14, ignore_eos=r.request_id % 2 == 0, eos_ids=(eos,))
                    for r in requests]
        for batch in (requests, with_eos):
            told = Told()
            out = generator.generate(batch, told)
            assert [o.token_ids for o in out] == [truth(model, r) for r in batch]
            assert all(told.tokens(r.request_id) == o.token_ids for r, o in zip(batch, out))
            stamps = [s for _, _, s in told.calls]
            assert stamps == sorted(stamps) or engine == "continuous_batching"  # CB: each request's own order
        ended = [o for r, o in zip(with_eos, out) if not r.ignore_eos and len(o.token_ids) < 14]
        assert ended and all(o.finish_reason == "eos" and o.token_ids[-1] == eos for o in ended)
    finally:
        generator.close()


def test_a_static_batch_tells_a_step_s_tokens_at_one_instant_after_the_prefill(model):
    generator = TorchGenerator()
    generator.build(context(model))
    told = Told()
    generator.generate(mixed_requests(4), told)
    firsts = {}
    for request_id, _, stamp in told.calls:
        firsts.setdefault(request_id, stamp)
    assert len(set(firsts.values())) == 1  # one prefill: every request's first token at once


def test_continuous_batching_serves_overlapping_calls_each_its_own_tokens(model):
    generator = ContinuousBatching(ContinuousBatchingOptions(page_size=8))
    generator.build(context(model, bs=8))
    try:
        requests = mixed_requests(8)
        results: dict[int, list] = {}

        def call(part: int) -> None:
            results[part] = generator.generate(requests[part::2], Told())

        threads = [threading.Thread(target=call, args=(p,)) for p in range(2)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        for part in range(2):
            assert [o.token_ids for o in results[part]] == [truth(model, r) for r in requests[part::2]]
        assert set(generator.live()) == {"running", "waiting", "kv_blocks_used", "kv_blocks_total"}
    finally:
        generator.close()


def test_sampling_is_reproducible_from_each_requests_seed(model):
    generator = TorchGenerator()
    generator.build(context(model))
    prompt = (5, 6, 7)
    draw = [GenerationRequest(i, prompt, 10, sampling=Sampling(1.0, 0.95, 50, seed=s)) for i, s in enumerate((1, 1, 2))]
    first = [o.token_ids for o in generator.generate(draw, Told())]
    again = [o.token_ids for o in generator.generate(draw[::-1], Told())][::-1]  # other rows, same seeds
    assert first == again and first[0] == first[1] and first[0] != first[2]
    assert first[0] != truth(model, GenerationRequest(0, prompt, 10))


def test_the_synthetic_generator_costs_what_it_says():
    generator = SyntheticGenerator(SyntheticEngineOptions(prefill_ms_per_token=1.0, decode_ms_per_step=10.0))
    generator.vocab_size = 97
    requests = [GenerationRequest(0, (3,) * 20, 5), GenerationRequest(1, (4,) * 10, 3)]
    told = Told()
    start = time.perf_counter()
    out = generator.generate(requests, told)
    firsts = [min(s for r, _, s in told.calls if r == i) - start for i in (0, 1)]
    assert all(0.030 <= f < 0.045 for f in firsts)  # prefill: 30 prompt tokens x 1 ms
    last = max(s for r, _, s in told.calls if r == 0) - start
    assert 0.070 <= last < 0.090  # and 4 steps of 10 ms
    assert [o.token_ids for o in out] == [[21, 22, 23, 24, 25], [28, 29, 30]]
    assert generator.reference(requests[0]) == out[0].token_ids  # the same alone as in any batch


@pytest.mark.slow
def test_torch_compile_generator_equals_greedy_generate_after_compiling_at_build(model):
    from workers.engines.compile_generate import CompiledGenerator

    generator = CompiledGenerator()
    generator.build(context(model, bs=4, context_len=40))
    requests = mixed_requests(7)
    for lo in range(0, 7, 4):
        told = Told()
        out = generator.generate(requests[lo: lo + 4], told)
        assert [o.token_ids for o in out] == [truth(model, r) for r in requests[lo: lo + 4]]
        assert len(told.calls) == sum(len(o.token_ids) for o in out)  # the padding rows tell nothing
