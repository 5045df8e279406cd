"""A worker running LoadGen's samples (`run_samples`): any examples, in any order and batch size,
through the same timing loop and scorer as a shard, with the same counts."""

from orchestrator.spec import validate
from tests.builders import job
from workers.actor import BenchWorker
from workers.contract import SampleBatch, ShardTask


def test_samples_in_any_batches_score_as_the_shard_does():
    worker = BenchWorker(validate(job(passes=["infer"]), "x").worker_config())
    # once per pass, before the first query: 1 warm-up batch of bs 4, then one of each size 1..3 (LoadGen sends any)
    assert worker.warm_up("infer") == 1 + 3 and worker.warm_up("infer") == 0
    shard = worker.run_shard(ShardTask(0, 0, 12, "infer"))
    order = [7, 0, 11, 3, 5, 1, 10, 2, 9, 4, 8, 6]
    batches = [worker.run_samples(SampleBatch(i, tuple(chunk), "infer"))
               for i, chunk in enumerate((order[:1], order[1:4], order[4:8], order[8:]))]
    assert all(b.error is None and b.warmup_batches == 0 for b in batches)
    assert [b.examples for b in batches] == [1, 3, 4, 4] and [b.shard_id for b in batches] == [0, 1, 2, 3]
    assert sum(b.scored for b in batches) == shard.scored > 0
    assert sum(b.correct for b in batches) == shard.correct
    assert all(len(b.batch_core_seconds) == 1 and b.core_seconds > 0 for b in batches)
    worker.close()


def test_a_failing_batch_comes_back_as_a_value():
    worker = BenchWorker(validate(job(engine={"name": "synthetic", "latency_ms": 0, "fail_shards": [1]},
                                      passes=["infer"]), "x").worker_config())
    failed = worker.run_samples(SampleBatch(1, (0, 1), "infer", attempt=2))
    assert failed.error.kind == "crash" and "injected failure on shard 1" in failed.error.message
    assert (failed.shard_id, failed.attempt, failed.items) == (1, 2, 0)
    assert worker.run_samples(SampleBatch(2, (0, 1), "infer")).items == 2
