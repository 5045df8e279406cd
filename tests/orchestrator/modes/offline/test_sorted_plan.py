"""The plan sorts variable-length work by cost: less padding, and not one prediction moves.

Both plans of the same data (sorted by cost, and in the data's order as before issue 31) run every
shard through a real in-process worker (a tiny random Llama, SmolLM2's tokenizer, real 5-shot MMLU
prompts of four subjects whose lengths differ): every question must get the same predicted letter,
and the sorted plan's batches must compute a smaller share of padding (the row's `padding_share`,
computed by orchestrator/metrics/passes.py from the shards' batch shapes).
"""

from __future__ import annotations

import pytest

from orchestrator.metrics.passes import padding_share
from orchestrator.modes.offline.plan import make_plan
from orchestrator.spec import validate
from tests.builders import SMOLLM2_GGUF, TEST_DATA_CACHE, TINY_LLAMA, mmlu_job, smollm2_package_dir
from workers.actor import BenchWorker
from workers.contract import DataHandle
from workers.data.dataprep import prepare_dataset

pytestmark = pytest.mark.slow  # a real worker in-process, about 15 s

SUBJECTS = ["abstract_algebra", "high_school_geography", "college_medicine", "world_religions"]


@pytest.fixture(scope="module")
def worker_and_data():
    model = {"random": dict(TINY_LLAMA, vocab_size=49152), "tokenizer": str(smollm2_package_dir() / SMOLLM2_GGUF)}
    spec = validate(mmlu_job(model, task={"name": "mmlu", "subjects": SUBJECTS, "limit": 10}, bs=4,
                             passes=["infer"], warmup=1, data_cache=str(TEST_DATA_CACHE)), "t")
    info, table = prepare_dataset(spec.worker_config())
    worker = BenchWorker(spec.worker_config())
    data = DataHandle(table)
    assert worker.setup(data).error is None
    yield worker, data, info
    worker.close()


def run_plan(worker, data, plan, warmup: int):
    results = [worker.run_shard(shard, data) for shard in plan.shards("infer", warmup=warmup)]
    assert all(r.error is None for r in results)
    return results


def test_sorting_by_cost_keeps_every_prediction_and_cuts_the_padding(worker_and_data):
    worker, data, info = worker_and_data
    sorted_plan = make_plan(info.num_examples, 4, None, info.costs)
    data_order = make_plan(info.num_examples, 4, None, info.costs, sort=False)
    assert sorted_plan.example_order is not None and data_order.example_order is None
    by_sort = run_plan(worker, data, sorted_plan, warmup=1)
    before = run_plan(worker, data, data_order, warmup=1)

    def predictions(results):
        records = [rec for r in results for rec in r.records]
        assert len(records) == info.num_examples == 40
        return {(rec["subject"], rec["question_index"]): rec for rec in records}

    new, old = predictions(by_sort), predictions(before)
    assert {k: r["predicted"] for k, r in new.items()} == {k: r["predicted"] for k, r in old.items()}
    assert len({r["predicted"] for r in new.values()}) > 1  # a model that always says "D" would prove nothing
    for key, rec in new.items():  # and the logits they were read from, up to float rounding of other shapes
        assert [rec[f"logit_{c}"] for c in "ABCD"] == pytest.approx([old[key][f"logit_{c}"] for c in "ABCD"],
                                                                    rel=1e-4, abs=1e-4)
    share_sorted, share_before = padding_share(by_sort), padding_share(before)
    # the least padding batches of 4 can carry: the prompts sorted by length, cut 4 at a time (what
    # is left is the gaps between the 40 lengths themselves)
    lengths = sorted((rec["prompt_tokens"] for rec in new.values()), reverse=True)
    floor = 1 - sum(lengths) / sum(max(lengths[i:i + 4]) * len(lengths[i:i + 4]) for i in range(0, 40, 4))
    assert share_sorted == pytest.approx(floor) and share_before > share_sorted + 0.03
    # the eager engine computed the LM head at each prompt's last token only: the FLOPs count it once
    from workers.measure.flops import flops_model_from_config
    from workers.models import load_config

    flops = flops_model_from_config(load_config(worker.config.model), causal=True)
    assert flops.head_params == 49152 * 32
    assert sum(r.flops for r in by_sort) == pytest.approx(sum(flops.sequence_flops(n, head_tokens=1) for n in lengths))
    # what it counts: every batch's rows x its longest prompt, less the prompts' own tokens
    computed = sum(rows * n for r in by_sort for rows, n in zip(r.batch_rows, r.batch_seq_lens))
    real = sum(rec["prompt_tokens"] for r in by_sort for rec in r.records)
    assert share_sorted == pytest.approx(1 - real / computed)


def test_the_sorted_plan_warms_up_on_its_cheapest_batch(worker_and_data):
    """The first shard handed out is the dearest; a worker's warm-up batches are the cheapest ones."""
    worker, data, info = worker_and_data
    fresh = BenchWorker(worker.config)  # a worker not yet warm
    assert fresh.setup(data).error is None
    try:
        plan = make_plan(info.num_examples, 4, None, info.costs)
        first = plan.shards("infer", warmup=1)[0]
        result = fresh.run_shard(first, data)
        assert result.warmup_batches == 1 and result.warmup_seconds > 0
        cheapest = min(info.costs)
        assert min(info.costs[i] for i in first.examples) > cheapest
        assert info.costs[first.warmup_examples[0]] == cheapest
    finally:
        fresh.close()
