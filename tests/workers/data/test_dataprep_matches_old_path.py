"""The data prepared once per run is the data every worker prepared for itself before (issue 13).

The expected values were printed by the per-worker path itself, main at 16d6cd6 (each worker read,
tokenised, masked and built prompts in its constructor), from `BenchWorker(config).setup()` and an
in-process run. Here the same jobs go through the shared preparation (workers/data/dataprep.py, and
the in-process dataset of orchestrator/cluster/data.py): same example counts, same fingerprints (a digest of every masked window and label, or of every
prompt's token ids, choice ids and gold letters) and, for MMLU, the same predictions.
"""

import hashlib

import pytest

from orchestrator.driver import run_all
from orchestrator.spec import load_spec, validate
from tests.builders import MMLU_DIR, SMOLLM2_GGUF, WIKITEXT, bert_vocab, smollm2_package_dir
from workers.actor import BenchWorker

BERT = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}
LLAMA = {"model_type": "llama", "vocab_size": 49152, "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096}

# (examples, fingerprint) from the per-worker path
OLD_PATH = {
    "smoke": (2048, "df0f9a088c6ed4ad"),
    "wikitext": (2089, "93ef1f691514ce62"),
    "mmlu-lm-eval": (114, "510bb98844d1d19c"),
    "mmlu-flagperf": (114, "addbbeb81d82f461"),
}
# MMLU predictions of the per-worker path, by example (random 2-layer Llama, seed 0, SmolLM2's tokenizer)
OLD_LM_EVAL_PREDICTIONS = ("AAAAAABBABBBBBAAAAAAAAAAAABBDDDDBABAAABBAAAAAABAAAAAAAAAAAAAAAAABBAABBAAAAAAABAABBBBAAAAAAAAAA"
                           "DBBBAAAAAAAABBAAAABB")
OLD_LM_EVAL_PREDICTIONS_DIGEST = "5252f9cd75bd7d49"  # sha256 of repr(sorted((example, predicted)))[:16]


def mmlu(scoring: str, cache) -> dict:
    return {"name": "m", "task": {"name": "mmlu", "limit": 2, "shots": 5, "scoring": scoring}, "data": str(MMLU_DIR),
            "seq_len": 1024, "bs": 4, "engine": "torch", "passes": ["infer"], "warmup": 0, "data_cache": str(cache),
            "model": {"random": LLAMA, "tokenizer": str(smollm2_package_dir() / SMOLLM2_GGUF)}}


def specs(cache):
    smoke = load_spec("jobs/smoke.yaml")
    wikitext = validate({"name": "w", "task": {"name": "masked_lm"}, "data": str(WIKITEXT), "seq_len": 128, "bs": 8,
                         "engine": "torch", "data_cache": str(cache),
                         "model": {"random": BERT, "tokenizer": str(bert_vocab())}}, "w")
    return {"smoke": smoke, "wikitext": wikitext,
            **{f"mmlu-{s}": validate(mmlu(s, cache), s) for s in ("lm-eval", "flagperf")}}


@pytest.mark.slow
def test_shared_preparation_gives_the_per_worker_paths_examples_and_fingerprints(tmp_path):
    for name, spec in specs(tmp_path / "cache").items():
        for attempt in ("made", "cached"):  # the second setup reads the disk cache (smoke: generated again)
            info = BenchWorker(spec.worker_config()).setup()
            assert info.error is None, info.error
            assert (info.num_examples, info.dataset_fingerprint) == OLD_PATH[name], (name, attempt)


@pytest.mark.slow
def test_mmlu_predictions_equal_the_per_worker_paths(tmp_path):
    # invariance_check=0: the bs-1 rerun is not what this test compares (tests/orchestrator/modes/offline/test_invariance_check.py)
    spec = specs(tmp_path / "cache")["mmlu-lm-eval"].model_copy(update={"invariance_check": 0})
    (run,) = run_all(spec, results_dir=tmp_path / "results", in_process=True)
    predictions = sorted((p["example"], p["predicted"]) for p in run.predictions)
    assert "".join(p for _, p in predictions) == OLD_LM_EVAL_PREDICTIONS
    assert hashlib.sha256(repr(predictions).encode()).hexdigest()[:16] == OLD_LM_EVAL_PREDICTIONS_DIGEST
    assert run.row.data_cache_hit is False and run.row.prompt_format == "lm-eval-mmlu-default@0.4.13"
