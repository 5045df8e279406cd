import pytest

from orchestrator.run.plan import default_shard_size, plan_resources, plan_shards
from workers.errors import UserError


@pytest.mark.parametrize("n, size, bs", [(103, 10, 1), (25_600, 40, 4), (64, 32, 8), (48, 8, 4), (7, 8, 4)])
def test_shards_cover_every_example_once(n, size, bs):
    shards = plan_shards(n, size, "val", bs=bs)
    covered = [i for s in shards for i in range(s.start, s.stop)]
    assert covered == list(range(n))
    assert [s.shard_id for s in shards] == list(range(len(shards)))
    assert all((s.stop - s.start) % bs == 0 for s in shards[:-1])  # whole batches but the very last


def test_the_tail_is_cut_into_quarter_shards():
    sizes = [s.stop - s.start for s in plan_shards(25_600, 40, "infer", bs=4)]
    assert sizes[0] == 40 and sizes[-1] == 8
    tail = sum(size for size in sizes if size < 40)
    assert 25_600 / 8 <= tail < 25_600 / 8 + 40  # about the last eighth, in 8-example shards


def test_default_shard_size_is_whole_batches():
    """(That the plan does not depend on the number of workers is checked where workers vary: the
    driver runs the same job on 1, 2 and 3 workers in tests/orchestrator/run/test_driver.py.)"""
    assert default_shard_size(10_000, 32) % 32 == 0
    assert 60 <= len(plan_shards(10_000, default_shard_size(10_000, 32), "infer", bs=32)) <= 100
    # small datasets: at least four batches per shard
    assert default_shard_size(50, 8) == 32


def test_every_pass_and_repeat_gets_the_same_ranges():
    """Shard k of the val pass, of the infer pass and of every repeat is the same examples, so their
    figures can be set side by side shard by shard."""
    bounds = [(s.shard_id, s.start, s.stop) for s in plan_shards(77, 8, "val", bs=4)]
    for pass_name, repeat in (("infer", 0), ("infer", 2)):
        shards = plan_shards(77, 8, pass_name, repeat, bs=4)
        assert [(s.shard_id, s.start, s.stop) for s in shards] == bounds
        assert {(s.pass_name, s.repeat) for s in shards} == {(pass_name, repeat)}


def test_empty_dataset_is_a_user_error():
    with pytest.raises(UserError):
        plan_shards(0, 8, "val")


def test_resources_auto_uses_every_gpu():
    res = plan_resources("auto", None, 1, cluster_gpus=16, cluster_cpus=64)
    assert (res.workers, res.gpus_per_worker) == (16, 1.0)


def test_resources_without_gpus_make_cpu_actors():
    res = plan_resources(2, None, 1, cluster_gpus=0, cluster_cpus=2)
    assert (res.workers, res.gpus_per_worker) == (2, 0.0)
    assert plan_resources("auto", None, 1, 0, 8).workers == 1


def test_resources_too_many_workers():
    with pytest.raises(UserError, match="4 workers x 1 GPU need 4 GPUs; the cluster has 2"):
        plan_resources(4, None, 1, cluster_gpus=2, cluster_cpus=8)
    with pytest.raises(UserError, match="need 3 CPUs"):
        plan_resources(3, 0, 1, cluster_gpus=0, cluster_cpus=2)
