import numpy as np
import pytest

from orchestrator.cluster.resources import plan_resources
from orchestrator.modes.offline.plan import cost_bounds, default_shard_size, dispatch_order, make_plan, plan_bounds, plan_shards, TAPER_FRACTION, TARGET_COST_SHARDS
from tests.builders import MMLU_DIR
from workers.errors import UserError
from workers.tasks.mmlu_data import PROMPT_FORMATS, build_prompt, load_mmlu


def plan(n, size, pass_name, bs=1):
    return plan_shards(plan_bounds(n, bs, size), pass_name)


@pytest.mark.parametrize("n, size, bs", [(103, 10, 1), (25_600, 40, 4), (64, 32, 8), (48, 8, 4), (7, 8, 4)])
def test_shards_cover_every_example_once(n, size, bs):
    shards = plan(n, size, "val", bs=bs)
    covered = [i for s in shards for i in range(s.start, s.stop)]
    assert covered == list(range(n))
    assert [s.shard_id for s in shards] == list(range(len(shards)))
    assert all((s.stop - s.start) % bs == 0 for s in shards[:-1])  # whole batches but the very last


def test_the_tail_is_cut_into_quarter_shards():
    sizes = [s.stop - s.start for s in plan(25_600, 40, "infer", bs=4)]
    assert sizes[0] == 40 and sizes[-1] == 8
    tail = sum(size for size in sizes if size < 40)
    assert 25_600 / 8 <= tail < 25_600 / 8 + 40  # about the last eighth, in 8-example shards


def test_default_shard_size_is_whole_batches():
    """(That the plan does not depend on the number of workers is checked where workers vary: the
    driver runs the same job on 1, 2 and 3 workers in tests/orchestrator/test_driver.py.)"""
    assert default_shard_size(10_000, 32) % 32 == 0
    assert 60 <= len(plan(10_000, default_shard_size(10_000, 32), "infer", bs=32)) <= 100
    assert plan_bounds(10_000, 32) == plan_bounds(10_000, 32, default_shard_size(10_000, 32))
    # small datasets: at least four batches per shard
    assert default_shard_size(50, 8) == 32


def test_every_pass_and_repeat_gets_the_same_ranges():
    """Shard k of the val pass, of the infer pass and of every repeat is the same examples, so their
    figures can be set side by side shard by shard."""
    bounds = plan_bounds(77, 4, 8)
    expected = [(s.shard_id, s.start, s.stop) for s in plan_shards(bounds, "val")]
    for pass_name, repeat in (("infer", 0), ("infer", 2)):
        shards = plan_shards(bounds, pass_name, repeat)
        assert [(s.shard_id, s.start, s.stop) for s in shards] == expected
        assert {(s.pass_name, s.repeat) for s in shards} == {(pass_name, repeat)}


def test_empty_dataset_is_a_user_error():
    with pytest.raises(UserError):
        plan_bounds(0, 8, 8)
    with pytest.raises(UserError):
        plan_bounds(0, 8, None, [])


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


def mmlu_like_costs(n=4000, seed=0):
    """Prompt FLOPs shaped like MMLU's: runs of similar prompts (a subject's), 250 to 2,800 tokens apart.
    A 135M-class causal model: 2 x 1.6e8 weights per token plus the causal attention term."""
    rng = np.random.default_rng(seed)
    tokens = np.repeat(rng.integers(250, 2400, size=n // 100), 100) + rng.integers(0, 400, size=n)
    return 2 * 1.6e8 * tokens + 4 * 30 * 576 * tokens * (tokens + 1) / 2


def real_mmlu_costs(limit: int | None) -> np.ndarray:
    """Costs of the real MMLU 5-shot prompts (the first `limit` questions of every subject): about
    4 characters a token, weights plus the attention term of a width-256 model."""
    data = load_mmlu(MMLU_DIR, "test", None, limit, 5)
    chars = np.array([len(build_prompt(q, data.dev[q.subject][:5], PROMPT_FORMATS['lm-eval'])) for q in data.questions], dtype=float)
    return chars * (1 + chars / (4 * 12 * 256))


def greedy_finish_times(costs, bounds, workers):
    """Each worker takes the next shard when it finishes one (the dispatcher's tail behaviour)."""
    free = np.zeros(workers)
    for start, stop in bounds:
        w = int(np.argmin(free))
        free[w] += costs[start:stop].sum()
    return free


def busy_fraction(costs, bounds, workers) -> float:
    finish = greedy_finish_times(costs, bounds, workers)
    return float(finish.sum() / (workers * finish.max()))


@pytest.mark.parametrize("bs", [1, 4, 8])
def test_cost_plan_covers_every_example_once_in_order(bs):
    costs = mmlu_like_costs()
    bounds = cost_bounds(costs, bs)
    assert [i for start, stop in bounds for i in range(start, stop)] == list(range(len(costs)))
    assert plan_bounds(len(costs), bs, None, list(costs)) == bounds == cost_bounds(costs.copy(), bs)  # deterministic


def test_cost_plan_cuts_equal_costs_with_a_tapered_tail():
    costs = mmlu_like_costs()
    total = costs.sum()
    bounds = cost_bounds(costs, 4)
    shard_costs = np.array([costs[a:b].sum() for a, b in bounds])
    bulk = shard_costs[np.cumsum(shard_costs) - shard_costs < total * (1 - TAPER_FRACTION)]
    target = total / TARGET_COST_SHARDS
    batch = 4 * costs.max()  # a shard ends at the batch boundary nearest its goal: within one batch of it
    assert np.all(bulk >= target - batch) and np.all(bulk <= target + batch)  # equal cost, not equal count
    counts = np.array([b - a for a, b in bounds])[: len(bulk)]
    assert counts.min() >= 4 and counts.max() > 2 * counts.min()
    tail = shard_costs[len(bulk):]
    assert len(tail) > 0 and tail.max() <= target / 4 + batch


def partial_batches(bounds, bs):
    """Batches of fewer than bs rows the plan makes (each shard is batched on its own)."""
    return sum(1 for start, stop in bounds if (stop - start) % bs)


@pytest.fixture(scope="module")
def all_mmlu_costs():
    """Every one of the 14,042 MMLU test questions, costed from its real 5-shot prompt."""
    costs = real_mmlu_costs(limit=None)
    assert len(costs) == 14_042
    return costs


@pytest.mark.parametrize("bs", [32, 8, 1])
def test_cost_plan_of_all_of_mmlu_is_whole_batches_but_the_last(all_mmlu_costs, bs):
    """The issue's case: before, at bs 32, 117 of 313 shards were smaller than one batch and 43 % of
    the batches were partial. Now every shard but the last of the pass is whole batches, the tapered
    tail included, so at most one batch of the pass is partial."""
    costs = all_mmlu_costs
    bounds = cost_bounds(costs, bs)
    assert [i for start, stop in bounds for i in range(start, stop)] == list(range(len(costs)))
    assert all((stop - start) % bs == 0 for start, stop in bounds[:-1])
    assert partial_batches(bounds, bs) <= 1
    tail = [b for b in bounds if costs[:b[0]].sum() >= costs.sum() * (1 - TAPER_FRACTION)]
    assert len(tail) > 8 and all((stop - start) % bs == 0 for start, stop in tail[:-1])
    assert cost_bounds(costs.copy(), bs) == bounds  # deterministic; no worker count goes in


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bs", [1, 3, 4, 8, 32])
def test_cost_plan_is_whole_batches_on_synthetic_costs(seed, bs):
    """Random costs of every shape: long runs of cheap or dear examples, single huge outliers."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    costs = rng.lognormal(0, 1 + seed % 3, size=n) * rng.choice([1, 1, 1, 1000], size=n)
    bounds = cost_bounds(costs, bs)
    assert [i for start, stop in bounds for i in range(start, stop)] == list(range(n))
    assert all((stop - start) % bs == 0 for start, stop in bounds[:-1])


def test_an_explicit_shard_size_is_rounded_up_to_whole_batches():
    bounds = plan_bounds(1000, 32, 50)
    assert bounds[0] == (0, 64)
    assert all((stop - start) % 32 == 0 for start, stop in bounds[:-1])


def in_order(bounds, order):
    return [bounds[i] for i in order]


@pytest.mark.parametrize("workers", [8, 32])
def test_the_cost_plan_keeps_workers_busy_on_all_of_mmlu(all_mmlu_costs, workers):
    """Whole batches make the tail's shards unequal; handed out dearest first, the workers still
    finish together (greedy dispatch, as the dispatcher's tail does it). In example order 32
    workers would be busy only ~92 % of the span. (439 batches cannot keep 64 workers busy to 95 %.)"""
    costs = all_mmlu_costs
    bounds = cost_bounds(costs, 32)
    assert busy_fraction(costs, in_order(bounds, dispatch_order(bounds, costs)), workers) >= 0.95


def ordered(plan, costs) -> np.ndarray:
    """The costs in the plan's order of the examples (its bounds are positions in that order)."""
    return np.asarray(costs)[list(plan.example_order)] if plan.example_order is not None else np.asarray(costs)


@pytest.mark.parametrize("workers", [8, 32, 64])
def test_the_sorted_plan_keeps_workers_busy_on_all_of_mmlu(all_mmlu_costs, workers):
    """The plan as made (examples dearest first, so the tapered tail is the cheapest prompts): the
    workers finish together, as in the data's order (sorted cheapest first, 32 workers: 94 %)."""
    plan = make_plan(len(all_mmlu_costs), 32, None, list(all_mmlu_costs))
    costs = ordered(plan, all_mmlu_costs)
    assert busy_fraction(costs, in_order(plan.bounds, plan.order), workers) >= 0.95


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_the_sorted_plan_keeps_a_few_workers_busy_on_real_prompts(workers):
    plan = make_plan(len(costs := real_mmlu_costs(limit=8)), 8, None, list(costs))
    assert busy_fraction(ordered(plan, costs), in_order(plan.bounds, plan.order), workers) >= 0.95


def test_variable_costs_are_planned_dearest_first_and_uniform_work_in_data_order():
    costs = mmlu_like_costs(n=400)
    plan = make_plan(len(costs), 4, None, list(costs))
    assert sorted(plan.example_order) == list(range(400))
    assert list(ordered(plan, costs)) == sorted(costs, reverse=True)
    ties = make_plan(6, 2, None, [3.0, 1.0, 3.0, 1.0, 2.0, 2.0])
    assert ties.example_order == (0, 2, 4, 5, 1, 3)  # ties keep the data's order
    shards = {s.shard_id: s for s in plan.shards("infer", warmup=2)}
    assert all(s.examples == plan.example_order[s.start:s.stop] for s in shards.values())
    # every shard carries the plan's 2 x bs cheapest examples, cheapest first, to warm up on
    warm = shards[0].warmup_examples
    assert list(costs[list(warm)]) == list(np.sort(costs)[:8])
    assert all(s.warmup_examples == warm for s in shards.values()) and plan.shards("infer")[0].warmup_examples is None
    assert plan.identity()["order"] == "cost" and plan.to_dict()["order"] == "cost"
    unsorted = make_plan(len(costs), 4, None, list(costs), sort=False)
    assert unsorted.example_order is None and all(s.examples is None and s.warmup_examples is None
                                                  for s in unsorted.shards("infer", warmup=2))
    uniform = make_plan(100, 4)
    assert uniform.example_order is None and uniform.identity()["order"] == "data"
    assert make_plan(100, 4, 10, list(mmlu_like_costs(n=100))).example_order is not None  # count shards, still sorted


def test_the_plan_hands_out_the_bulk_in_order_then_the_tail_dearest_first():
    plan = make_plan(len(mmlu_like_costs()), 4, None, list(mmlu_like_costs()))
    costs = ordered(plan, mmlu_like_costs())
    assert sorted(plan.order) == list(range(len(plan.bounds)))
    shards = plan.shards("infer", repeat=1)
    assert [s.shard_id for s in shards] == list(plan.order)
    assert all((s.start, s.stop) == plan.bounds[s.shard_id] and s.repeat == 1 for s in shards)
    tail_from = next(i for i, k in enumerate(plan.order) if k != i)
    tail_costs = [costs[plan.bounds[k][0]:plan.bounds[k][1]].sum() for k in plan.order[tail_from:]]
    assert tail_costs == sorted(tail_costs, reverse=True) and plan.order[:tail_from] == tuple(range(tail_from))
    assert sum(plan.shares) == pytest.approx(1.0)
    assert plan.shares[0] == pytest.approx(costs[:plan.bounds[0][1]].sum() / costs.sum())
    by_count = make_plan(100, 4, 8)
    assert by_count.order == tuple(range(len(by_count.bounds))) and not by_count.by_cost  # equal shards keep their order


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_cost_plan_keeps_workers_busy_where_a_count_plan_does_not(workers):
    """The real MMLU prompts (the first 8 of every subject), bs 8: the same plan for any number of
    workers; dealt to them greedily, they finish within a few percent of each other. (With the
    first 2 of every subject, 15 batches in all, whole batches cannot be dealt evenly to 4 workers.)"""
    costs = real_mmlu_costs(limit=8)
    bounds = cost_bounds(costs, 8)
    by_cost = busy_fraction(costs, in_order(bounds, dispatch_order(bounds, costs)), workers)
    by_count = busy_fraction(costs, plan_bounds(len(costs), 8, default_shard_size(len(costs), 8)), workers)
    assert by_cost >= 0.95
    assert by_cost > by_count


def test_an_explicit_shard_size_or_uniform_work_plans_by_count():
    costs = list(mmlu_like_costs(n=100))
    assert plan_bounds(100, 4, 10, costs) == plan_bounds(100, 4, 10)
    assert plan_bounds(100, 4, None, None) == plan_bounds(100, 4, default_shard_size(100, 4))
