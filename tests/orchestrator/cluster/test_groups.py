"""Tensor-parallel workers: the group plan (pure), and groups of Ray actors on a local Ray.

The Ray runs use CPU ranks over gloo (`gpus_per_worker: 0`); the two-node placement on fake GPUs
is in test_cluster.py, and killing a rank mid-run in test_reliability.py.
"""

import pyarrow.parquet as pq
import pytest

from orchestrator.driver import run_job
from orchestrator.cluster.groups import NodeCapacity, plan_groups, spread
from orchestrator.spec import validate
from tests.builders import save_bpe_tokenizer, tp_llama_job
from workers.contract import RankInfo
from workers.errors import UserError
from workers.parallel.reports import group_peak_flops


def nodes(*shape):
    return [NodeCapacity(f"n{i}", f"10.0.0.{i}", gpus, cpus) for i, (gpus, cpus) in enumerate(shape)]


def test_auto_is_the_cluster_gpus_over_tp_spread_over_nodes():
    plan = plan_groups("auto", 4, None, 2, nodes((8, 64), (8, 64)))
    assert (plan.groups, plan.gpus_per_rank, plan.cpus_per_rank) == (4, 1.0, 2)
    assert plan.bundle == {"GPU": 1.0, "CPU": 2}
    assert sorted(plan.targets) == ["n0", "n0", "n1", "n1"] and plan.targets[:2] in (("n0", "n1"), ("n1", "n0"))
    assert plan_groups(2, 8, None, 1, nodes((8, 96), (8, 96))).targets == ("n0", "n1")


def test_tp_must_divide_every_gpu_node():
    with pytest.raises(UserError, match=r"^parallel.tp: 3 does not divide the 8 GPUs of node 10.0.0.1;"):
        plan_groups("auto", 3, None, 1, nodes((0, 16), (8, 64)))  # the GPU-less head is not counted


def test_a_group_must_fit_on_one_node():
    with pytest.raises(UserError, match=r"a group of 16 ranks x \(1 GPU \+ 1 CPU\) must fit on one node; the largest "
                                        r"node has 8 GPUs"):
        plan_groups("auto", 16, None, 1, nodes((8, 64), (8, 64)))
    with pytest.raises(UserError, match=r"^parallel.tp: a group of 4 ranks x \(1 CPU\) must fit on one node"):
        plan_groups("auto", 4, 0, 1, nodes((0, 2), (0, 2)))  # CPU ranks: STRICT_PACK would never place it


def test_cpu_ranks_and_explicit_worker_counts():
    plan = plan_groups(2, 2, 0, 1, nodes((0, 2), (0, 2)))
    assert (plan.groups, plan.bundle, sorted(plan.targets)) == (2, {"CPU": 1}, ["n0", "n1"])
    assert plan_groups("auto", 2, None, 1, nodes((0, 8))).groups == 1  # no GPUs: one group
    with pytest.raises(UserError, match=r"^workers: 3 groups of 2 ranks x \(1 CPU\) do not fit: the nodes hold 2"):
        plan_groups(3, 2, 0, 1, nodes((0, 2), (0, 2)))
    with pytest.raises(UserError, match=r"^workers: 2 groups of 2 ranks x \(1 GPU \+ 1 CPU\) do not fit: the nodes hold 1"):
        plan_groups("auto", 2, None, 1, nodes((2, 4), (2, 1)))  # the second node lacks the CPUs


def test_a_rank_owns_one_whole_gpu_or_none():
    with pytest.raises(UserError, match=r"^gpus_per_worker: with parallel.tp 2 each rank owns one whole GPU"):
        plan_groups("auto", 2, 0.5, 1, nodes((8, 64)))


def test_spread_fills_the_emptiest_node_first():
    assert spread(3, ["a", "b"], [2, 2]) == ("a", "b", "a")
    assert spread(2, ["a", "b"], [0, 2]) == ("b", "b")


def test_the_group_peak_is_every_rank_or_unknown():
    def rank(peak):
        return RankInfo(0, "n", 1, "cuda:0", "NVIDIA A100-SXM4-40GB", peak)

    assert group_peak_flops([rank(312e12)] * 4) == 4 * 312e12
    assert group_peak_flops([rank(312e12), rank(None)]) is None


def test_spec_refuses_engines_and_modes_that_cannot_shard(tmp_path):
    base = {"name": "t", "model": "random:x", "data": "synthetic", "parallel": {"tp": 2}}
    for engine in ("onnxruntime", "tensorrt"):
        with pytest.raises(UserError, match=rf"^x: parallel: tp=2: engine {engine} runs a whole model on one device"):
            validate({**base, "engine": engine}, "x")
    with pytest.raises(UserError, match=r"^x: parallel: tp=2: val_precision \(fp32\) must equal precision \(bf16\)"):
        validate({**base, "precision": "bf16", "val_precision": "fp32"}, "x")
    sweep = validate({**base, "parallel": {"tp": 1}, "sweep": {"parallel": [{"tp": 1}, {"tp": 4}]}}, "x")
    assert [p.parallel.tp for p in sweep.points()] == [1, 4]  # one row per tp: the speed-up, measured
    with pytest.raises(UserError, match=r"^x \(sweep point\): parallel: tp=2: engine onnxruntime"):
        validate({**base, "engine": "onnxruntime", "parallel": {"tp": 1}, "sweep": {"parallel": [{"tp": 2}]}}, "x")
    with pytest.raises(UserError, match=r"^parallel.tp: in-process mode \(--no-ray\) is one process"):
        run_job(validate(base, "x"), results_dir=tmp_path, in_process=True)
    assert not (tmp_path / "metrics.parquet").exists()


# ------------------------------------------------------------------------------------ on Ray
COUNTS = ("examples", "items_val", "items_infer", "scored_val", "scored_infer", "correct_val", "correct_infer",
          "acc", "shards", "flops_per_item")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return save_bpe_tokenizer(tmp_path_factory.mktemp("tp-tokenizer"))


@pytest.mark.slow
def test_a_group_of_two_cpu_ranks_gives_the_single_process_numbers(ray_local, tokenizer, tmp_path):
    raw = tp_llama_job(tokenizer, gpus_per_worker=0, workers="auto", shard_size=4)
    result = run_job(validate(raw, "t"), results_dir=tmp_path)
    single = run_job(validate(dict(raw, parallel={"tp": 1}, workers=1), "t"), results_dir=tmp_path, in_process=True)
    row = result.row
    assert {k: getattr(row, k) for k in COUNTS} == {k: getattr(single.row, k) for k in COUNTS}
    assert (row.tp, row.workers, row.nodes, single.row.tp) == (2, 1, 1, 1)
    assert row.devices.startswith("1x CPU")  # two CPU ranks share the node's one CPU (a physical device)
    predictions = {r["example"]: r for r in result.predictions}
    assert sorted(predictions) == list(range(12))
    for reference in single.predictions:
        got = predictions[reference["example"]]
        assert got["predicted"] == reference["predicted"]
        for letter in "ABCD":
            assert got[f"logit_{letter}"] == pytest.approx(reference[f"logit_{letter}"], abs=1e-4)
    shards = pq.read_table(result.run_dir / "shards.parquet").to_pylist()
    assert sorted((s["pass"], s["shard_id"]) for s in shards) == sorted((p, i) for p in ("val", "infer")
                                                                         for i in range(row.shards))
    (group,) = pq.read_table(result.run_dir / "workers.parquet").to_pylist()
    assert group["tp"] == 2 and len(set(group["rank_pids"])) == 2 and len(set(group["rank_nodes"])) == 1
    assert all(s["pid"] == group["rank_pids"][0] for s in shards)  # rank 0 reports every shard


@pytest.mark.slow
def test_a_model_without_a_tp_plan_fails_in_one_line_and_writes_no_row(ray_local, tmp_path):
    from tests.builders import job

    spec = validate(job(parallel={"tp": 2}, gpus_per_worker=0, workers=1), "t")  # the tiny random BERT
    with pytest.raises(UserError) as err:
        run_job(spec, results_dir=tmp_path)
    assert str(err.value).startswith("parallel.tp: BertForMaskedLM has no tensor-parallel plan in transformers")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "metrics.parquet").exists()
