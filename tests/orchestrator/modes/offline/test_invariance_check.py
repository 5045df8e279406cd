"""The invariance check: the measured pass's examples run again at bs 1 on one worker.

A flip must be caught: the synthetic engine's `batch_dependent` option ranks near-ties by the parity
of the batch's row count (as a kernel chosen by batch size may), so MMLU predictions made in batches
of two change when the same prompts run alone. A real model in fp32 on a CPU (jobs/mmlu_tiny.yaml)
must report none.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from orchestrator.metrics.invariance import InvarianceCheck, check_examples, compared, invariance_columns
from orchestrator.driver import run_job
from orchestrator.spec import load_spec, validate
from tests.builders import TEST_DATA_CACHE, TINY_LLAMA, mmlu_job, save_bpe_tokenizer
from workers.errors import UserError


def test_the_examples_are_spread_over_the_data_and_always_the_same():
    assert check_examples(100, 4) == (12, 37, 62, 87)
    assert check_examples(3, 32) == (0, 1, 2)
    picked = check_examples(14042, 32)
    assert len(set(picked)) == 32 and picked[0] < 14042 / 32 and picked[-1] > 14042 * 31 / 32
    assert picked == check_examples(14042, 32)


def test_a_flip_is_a_prediction_that_differs_from_the_measured_passs():
    measured = [{"example": i, "predicted": "A", "subject": "s", "question_index": i} for i in range(4)]
    check = InvarianceCheck((1, 3), ({"example": 1, "predicted": "A"}, {"example": 3, "predicted": "C"}))
    assert [r["flipped"] for r in compared(measured, check)] == [False, True]
    assert invariance_columns(measured, check) == {"invariance_checked": 2, "invariance_flips": 1}
    assert invariance_columns(measured, None) == {}
    failed = InvarianceCheck((1, 3), note="the invariance check failed: worker 0 died")
    assert invariance_columns(measured, failed) == {"invariance_note": "the invariance check failed: worker 0 died"}


def test_on_by_default_for_mmlu_off_for_masked_lm_and_refused_where_it_cannot_run():
    from tests.builders import job

    assert validate(mmlu_job("m", passes=["val", "infer"]), "x").invariance_examples == 32
    assert validate(mmlu_job("m", passes=["val", "infer"], invariance_check=0), "x").invariance_examples == 0
    assert validate(mmlu_job("m"), "x").invariance_examples == 0  # no infer pass to check
    assert validate(job(), "x").invariance_examples == 0
    with pytest.raises(UserError, match="invariance_check: masked_lm keeps no per-example predictions"):
        validate(job(invariance_check=8), "x")
    with pytest.raises(UserError, match="invariance_check: it reruns examples through the infer engine"):
        validate(mmlu_job("m", invariance_check=8), "x")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return save_bpe_tokenizer(tmp_path_factory.mktemp("bpe"))


def synthetic_mmlu(tokenizer, **engine) -> dict:
    model = {"random": dict(TINY_LLAMA, vocab_size=1024), "tokenizer": str(tokenizer)}
    # shards of 8 questions (by count, not by cost, which would cut 24 long prompts into shards of one)
    return mmlu_job(model, engine={"name": "synthetic", "latency_ms": 0, **engine}, bs=2, passes=["infer"],
                    shard_size=8, task={"name": "mmlu", "subjects": ["abstract_algebra", "anatomy", "virology"],
                                        "limit": 8})


@pytest.mark.slow
def test_predictions_that_depend_on_the_batch_size_are_caught(tokenizer, tmp_path):
    spec = validate(synthetic_mmlu(tokenizer, batch_dependent=True), "t")
    result = run_job(spec, results_dir=tmp_path, in_process=True)
    row = result.row
    table = pq.read_table(result.run_dir / "invariance.parquet").to_pylist()
    assert row.invariance_checked == len(table) == 24 and {r["example"] for r in table} == set(range(24))
    assert row.invariance_flips == sum(r["flipped"] for r in table) > 0
    assert row.verdict == "INVALID" and f"invariance: {row.invariance_flips} of 24 predictions" in row.verdict_reasons
    flipped = next(r for r in table if r["flipped"])
    assert flipped["predicted_measured"] != flipped["predicted_bs1"]
    assert result.row.items_infer == sum(r.items for r in result.results)  # the check's runs are not counted
    steady = run_job(validate(synthetic_mmlu(tokenizer), "t"), results_dir=tmp_path, in_process=True).row
    assert (steady.invariance_checked, steady.invariance_flips) == (24, 0)
    assert "invariance" not in steady.verdict_reasons


@pytest.mark.slow
def test_the_tiny_mmlu_job_reports_no_flips(tmp_path):
    """jobs/mmlu_tiny.yaml (a random Llama, bs 4, fp32 on the CPU): its prompts read the same alone."""
    spec = load_spec("jobs/mmlu_tiny.yaml", ["task.limit=12", "passes=[infer]", f"data_cache={TEST_DATA_CACHE}"])
    result = run_job(spec, results_dir=tmp_path, in_process=True)
    assert (result.row.invariance_checked, result.row.invariance_flips, result.row.invariance_note) == (32, 0, None)
    assert "invariance" not in result.row.verdict_reasons
    table = pq.read_table(result.run_dir / "invariance.parquet").to_pylist()
    assert len(table) == 32 and not any(r["flipped"] for r in table)
