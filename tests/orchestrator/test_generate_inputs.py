"""Bad input to generation jobs, through the command line: one line naming the field or cause, exit 2,
nothing stored (the cases issue 28 lists). Cases that need a worker run in this process (--no-ray)."""

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.builders import TINY_BERT, job, save_tiny_llama_with_tokenizer
from tests.orchestrator.modes.offline.test_generation import TINY_LLAMA

GENERATE = {"name": "generate", "input_tokens": 16, "max_new_tokens": 8}


def generate(**overrides) -> dict:
    fields = {"task": dict(GENERATE), "model": {"random": TINY_LLAMA}, "data": {"synthetic": {"seed": 0, "size": 8}},
              "workers": 1}
    return job(**{**fields, **overrides})


CASES = {
    "encoder-only model": (generate(model={"random": dict(TINY_BERT)}, engine="torch"),
                           "model: task generate needs a decoder (a causal LM); 'bert' is an encoder-only model"),
    "max_new_tokens 0": (generate(task={**GENERATE, "max_new_tokens": 0}),
                         "task.max_new_tokens: a length must be at least 1 token, not 0"),
    "max_new_tokens negative in a range": (
        generate(task={**GENERATE, "max_new_tokens": {"distribution": "uniform", "min": -4, "max": 8}}),
        "task.max_new_tokens.min: Input should be greater than 0"),
    "beyond the positions": (generate(task={**GENERATE, "input_tokens": 100, "max_new_tokens": 60}),
                             "task.max_new_tokens: the longest prompt (100) plus the longest output (60) is 160 "
                             "tokens, above the model's maximum of 128 positions"),
    "TTFT bound on masked_lm": (job(load={"kind": "loadgen", "scenario": "server", "target_qps": 10,
                                          "ttft_latency_ms": 500}),
                                "load: ttft_latency_ms measures tokens; task masked_lm makes none"),
    "LLM mlperf_model on masked_lm": (job(load={"kind": "loadgen", "scenario": "server", "target_qps": 10,
                                                "rules": "mlperf", "mlperf_model": "llama3_1-8b-interactive"}),
                                      "load: mlperf_model llama3_1-8b-interactive is an LLM of mlperf.conf"),
    "vllm without vLLM or a GPU": (generate(engine="vllm", model="{llama}"),
                                   "engine: vllm runs on NVIDIA GPUs; this worker has none (cpu)"),
    "a forward-pass engine for generate": (generate(engine="onnxruntime"),
                                           "engine: onnxruntime runs one forward pass per batch; task generate needs"),
    "val pass for generate": (generate(passes=["val", "infer"]), "passes: task generate has no val pass"),
}


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return save_tiny_llama_with_tokenizer(tmp_path_factory.mktemp("llama"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_generation_input_is_one_line_exit_2_and_nothing_stored(tmp_path, llama_folder, case):
    raw, expected = CASES[case]
    if raw["model"] == "{llama}":  # a real folder: the worker gets as far as building its engine
        raw = dict(raw, model=str(llama_folder))
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    outcome = CliRunner().invoke(app, ["submit", str(path), "--results", str(results), "--no-ray"])
    assert outcome.exit_code == 2, outcome.output
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    stored = [p for p in results.rglob("*") if p.is_file()] if results.exists() else []
    assert stored == []


def test_the_shipped_70b_server_job_is_refused_in_one_line_naming_what_is_not_built(tmp_path):
    outcome = CliRunner().invoke(app, ["validate", "jobs/llama2_70b_server.yaml"])
    assert outcome.exit_code == 2
    (line,) = outcome.stderr.strip().splitlines()
    assert "parallel.tp=8: generation on tensor-parallel workers is not built yet" in line
