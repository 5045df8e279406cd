"""The invariance check: the measured pass's examples run again at bs 1, dealt over the workers.

A flip must be caught: the synthetic engine's `batch_dependent` option ranks near-ties by the parity
of the batch's row count (as a kernel chosen by batch size may), so MMLU predictions made in batches
of two change when the same prompts run alone. A real model in fp32 on a CPU (jobs/mmlu_tiny.yaml)
must report none.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from orchestrator.metrics.invariance import InvarianceCheck, check_examples, compared, dealt, invariance_columns
from orchestrator.modes.offline.invariance_check import check_tasks
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
    check = InvarianceCheck((1, 3), ({"example": 1, "predicted": "A"}, {"example": 3, "predicted": "C"}),
                            seconds=1.5)
    assert [r["flipped"] for r in compared(measured, check)] == [False, True]
    assert invariance_columns(measured, check) == {"invariance_checked": 2, "invariance_flips": 1,
                                                   "invariance_time": 1.5}
    assert invariance_columns(measured, None) == {}
    failed = InvarianceCheck((1, 3), note="the invariance check failed: worker 0 died", seconds=0.5)
    assert invariance_columns(measured, failed) == {"invariance_note": "the invariance check failed: worker 0 died",
                                                    "invariance_time": 0.5}


def test_on_by_default_for_mmlu_at_a_bounded_share_off_for_masked_lm_and_refused_where_it_cannot_run():
    from tests.builders import job

    default = validate(mmlu_job("m", passes=["val", "infer"]), "x")
    # 3 % of the measured pass's examples, rounded up, at least 4, never more than there are
    assert [default.invariance_examples(n) for n in (3, 20, 120, 134, 1000, 14042)] == [3, 4, 4, 5, 30, 422]
    assert all(default.invariance_examples(n) <= max(4, 0.03 * n + 1) for n in range(1, 3000))
    assert validate(mmlu_job("m", passes=["val", "infer"], invariance_check=0), "x").invariance_examples(120) == 0
    asked = validate(mmlu_job("m", passes=["val", "infer"], invariance_check=50), "x")
    assert (asked.invariance_examples(120), asked.invariance_examples(20)) == (50, 20)
    assert validate(mmlu_job("m"), "x").invariance_examples(120) == 0  # no infer pass to check
    assert validate(job(), "x").invariance_examples(120) == 0
    with pytest.raises(UserError, match="invariance_check: masked_lm keeps no per-example predictions"):
        validate(job(invariance_check=8), "x")
    with pytest.raises(UserError, match="invariance_check: it reruns examples through the infer engine"):
        validate(mmlu_job("m", invariance_check=8), "x")


def test_the_checked_examples_are_dealt_into_one_bs1_task_per_worker():
    examples = check_examples(1000, 30)
    parts = dealt(examples, 4)
    assert len(parts) == 4 and sorted(e for p in parts for e in p) == list(examples)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert dealt((5, 9), 8) == [(5,), (9,)]  # never an empty part
    tasks = check_tasks(examples, 2)
    assert [t.shard_id for t in tasks] == [-1, -2] and all(t.check and t.pass_name == "infer" for t in tasks)
    assert sorted(e for t in tasks for e in t.examples) == list(examples)


def test_the_check_runs_its_parts_side_by_side_on_every_worker():
    """Through the real dispatcher over a simulated pool of 4 workers whose every task takes 1
    (simulated) second: one part per worker, each handed to an idle one, all done in 1 s, not 4."""
    from orchestrator.modes.offline.invariance_check import run_invariance_check
    from tests.fakes.simulated_pool import SimulatedPool

    spec = validate(mmlu_job("m", passes=["infer"]), "x")
    pool = SimulatedPool(4, latency=lambda rng: 1.0)
    check = run_invariance_check(spec, pool, 1000)
    assert len(check.examples) == 30 and check.workers == 4 and check.note is None
    assert sorted(worker for worker, _, _ in pool.log) == [0, 1, 2, 3]
    assert all(load == 0 and shard.check for _, shard, load in pool.log)
    assert sorted(e for _, shard, _ in pool.log for e in shard.examples) == list(check.examples)
    assert pool.now == pytest.approx(1.0) and check.seconds is not None
    one = SimulatedPool(1, latency=lambda rng: 1.0)
    assert run_invariance_check(spec, one, 1000).workers == 1 and one.now == pytest.approx(1.0)


def test_in_a_sorted_plan_the_check_spans_the_lengths_and_costs_its_share():
    """Spread over the plan's length order, the checked prompts are its length quantiles: their
    tokens are about their share of the examples (spread over the data's order they can all fall on
    long subjects)."""
    import numpy as np

    from orchestrator.modes.offline.invariance_check import run_invariance_check
    from orchestrator.modes.offline.plan import make_plan
    from tests.fakes.simulated_pool import SimulatedPool

    rng = np.random.default_rng(3)
    tokens = np.repeat(rng.integers(250, 1400, size=40), 25) + rng.integers(0, 100, size=1000)  # 40 "subjects"
    plan = make_plan(1000, 8, None, list(tokens * 1.0))
    check = run_invariance_check(validate(mmlu_job("m", passes=["infer"]), "x"), SimulatedPool(2), 1000,
                                 plan.example_order)
    assert check.examples == tuple(plan.example_order[i] for i in check_examples(1000, 30))
    share = tokens[list(check.examples)].sum() / tokens.sum()
    assert 0.027 < share < 0.033  # 30 of 1,000 examples: 3 %


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return save_bpe_tokenizer(tmp_path_factory.mktemp("bpe"))


def synthetic_mmlu(tokenizer, **engine) -> dict:
    model = {"random": dict(TINY_LLAMA, vocab_size=1024), "tokenizer": str(tokenizer)}
    # shards of 8 questions (by count, not by cost, which would cut 24 long prompts into shards of one);
    # every question checked (the default would check 4 of 24)
    return mmlu_job(model, engine={"name": "synthetic", "latency_ms": 0, **engine}, bs=2, passes=["infer"],
                    shard_size=8, task={"name": "mmlu", "subjects": ["abstract_algebra", "anatomy", "virology"],
                                        "limit": 8}, invariance_check=24)


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
    assert row.invariance_time > 0
    steady = run_job(validate(synthetic_mmlu(tokenizer), "t"), results_dir=tmp_path, in_process=True).row
    assert (steady.invariance_checked, steady.invariance_flips) == (24, 0)
    assert "invariance" not in steady.verdict_reasons


@pytest.mark.slow
def test_the_tiny_mmlu_job_reports_no_flips(tmp_path):
    """jobs/mmlu_tiny.yaml (a random Llama, bs 4, fp32 on the CPU): its prompts read the same alone.
    At the default 36 questions it checks 4 (3 % rounded up is 2; at least 4), in a span of its own."""
    spec = load_spec("jobs/mmlu_tiny.yaml", ["task.limit=12", "passes=[infer]", f"data_cache={TEST_DATA_CACHE}"])
    result = run_job(spec, results_dir=tmp_path, in_process=True)
    assert (result.row.invariance_checked, result.row.invariance_flips, result.row.invariance_note) == (4, 0, None)
    assert "invariance" not in result.row.verdict_reasons
    table = pq.read_table(result.run_dir / "invariance.parquet").to_pylist()
    assert len(table) == 4 and not any(r["flipped"] for r in table)
    (start, end), infer_end = result.timeline["spans"]["invariance"], result.timeline["passes"]["infer"][1]
    assert infer_end <= start < end <= result.timeline["steps"]["row_written"]
    assert result.row.invariance_time == pytest.approx(end - start, abs=0.05)
