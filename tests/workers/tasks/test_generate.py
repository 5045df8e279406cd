"""The generate task's preparation: prompts from synthetic ids, a text file or MMLU; lengths drawn
under the seed (the same whatever else changes); refusals of what a model cannot generate."""

import numpy as np
import pytest
from transformers import AutoConfig, AutoTokenizer

from tests.builders import MMLU_DIR, TINY_BERT, WIKITEXT, save_bpe_tokenizer
from workers.errors import UserError
from workers.specs import DataSpec, GenerateTask
from workers.tasks.generate import Generate


def llama_config(vocab_size: int = 1024, positions: int = 256):
    return AutoConfig.for_model("llama", vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=positions, eos_token_id=2)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return AutoTokenizer.from_pretrained(save_bpe_tokenizer(tmp_path_factory.mktemp("tok")))


def prepared(options: dict, data, tokenizer=None, config=None, seed: int = 0) -> Generate:
    return Generate(Generate.prepare(GenerateTask(**options), data, tokenizer, config or llama_config(), 128, seed))


def test_synthetic_prompts_have_the_drawn_lengths_and_the_same_draws_on_every_run():
    options = {"input_tokens": {"distribution": "uniform", "min": 4, "max": 40},
               "max_new_tokens": {"distribution": "normal", "mean": 20, "std": 5, "min": 2, "max": 30}}
    data = DataSpec(synthetic={"seed": 7, "size": 200})
    task = prepared(options, data)
    again = prepared(options, data)
    lengths = [task.length(i) for i in range(task.num_examples())]
    outputs = [task.request(i).max_new_tokens for i in range(task.num_examples())]
    assert task.num_examples() == 200 and min(lengths) >= 4 and max(lengths) <= 40 and len(set(lengths)) > 20
    assert 2 <= min(outputs) and max(outputs) <= 30 and abs(np.mean(outputs) - 20) < 1.5
    assert task.fingerprint() == again.fingerprint()
    assert [list(task.prompt(i)) for i in (0, 99)] == [list(again.prompt(i)) for i in (0, 99)]
    assert prepared(options, data, seed=1).fingerprint() != task.fingerprint()  # the job's seed draws the lengths
    assert task.max_context() == max(lengths) + max(outputs)


def test_fixed_lengths_and_the_request_a_worker_builds():
    task = prepared({"input_tokens": 16, "max_new_tokens": 8, "ignore_eos": False},
                    DataSpec(synthetic={"seed": 0, "size": 5}))
    request = task.request(3)
    assert len(request.prompt_ids) == 16 and request.max_new_tokens == 8
    assert request.ignore_eos is False and request.eos_ids == (2,) and request.sampling is None
    assert request.ends_with(2, 3) and not request.ends_with(5, 3) and request.ends_with(5, 8)
    sampled = prepared({"temperature": 0.7, "top_k": 5}, DataSpec(synthetic={"seed": 0, "size": 3})).request(2)
    assert sampled.sampling.temperature == 0.7 and sampled.sampling.top_k == 5 and sampled.sampling.seed == 2


def test_text_prompts_are_consecutive_windows_of_the_text(tokenizer):
    task = prepared({"input_tokens": {"distribution": "uniform", "min": 8, "max": 24}, "limit": 10},
                    DataSpec(path=str(WIKITEXT)), tokenizer, llama_config(len(tokenizer)))
    assert task.num_examples() == 10
    joined = np.concatenate([task.prompt(i) for i in range(10)])
    from workers.tasks.masked_lm import read_text

    stream = tokenizer(read_text(WIKITEXT, skip_headings=True), add_special_tokens=False)["input_ids"]
    assert list(joined) == stream[: len(joined)]


def test_mmlu_questions_as_prompts_end_in_answer_and_are_cut_from_the_left(tokenizer):
    task = prepared({"input_tokens": 40, "limit": 6}, DataSpec(path=str(MMLU_DIR)), tokenizer,
                    llama_config(len(tokenizer), positions=512))
    assert task.num_examples() == 6
    for i in range(6):
        text = tokenizer.decode(task.prompt(i))
        assert text.endswith("Answer:") and task.length(i) <= 40


def test_a_generation_task_on_an_encoder_only_model_is_refused():
    bert = AutoConfig.for_model(**TINY_BERT)
    with pytest.raises(UserError, match="encoder-only"):
        prepared({}, DataSpec(synthetic={"seed": 0, "size": 2}), config=bert)


def test_a_prompt_and_its_output_beyond_the_models_positions_are_refused():
    with pytest.raises(UserError, match=r"task.max_new_tokens: .* 200 tokens, above the model's maximum of 128"):
        prepared({"input_tokens": 100, "max_new_tokens": {"distribution": "uniform", "min": 1, "max": 100}},
                 DataSpec(synthetic={"seed": 0, "size": 2}), config=llama_config(positions=128))


def test_static_waves_are_batches_of_similar_prompts_and_a_continuous_one_takes_all():
    task = prepared({"input_tokens": {"distribution": "uniform", "min": 2, "max": 60}},
                    DataSpec(synthetic={"seed": 1, "size": 20}))
    waves = task.waves(0, 20, 8, continuous=False)
    assert [len(w) for w in waves] == [8, 8, 4]
    assert sorted(r.request_id for w in waves for r in w) == list(range(20))
    lengths = [len(r.prompt_ids) for w in waves for r in w]
    assert lengths == sorted(lengths)
    assert [len(w) for w in task.waves(3, 11, 8, continuous=True)] == [8]
