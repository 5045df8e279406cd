"""The driver on a real local Ray that pretends to have 3 GPUs."""

import json

import pyarrow.parquet as pq
import pytest

from orchestrator.driver import run_job
from orchestrator.modes.offline.plan import shard_bounds
from orchestrator.spec import validate
from tests.builders import job, stored_rows

pytestmark = pytest.mark.slow


def test_same_numbers_on_1_2_and_3_workers(ray_local, tmp_path):
    spec = validate(job(data={"synthetic": {"seed": 5, "size": 60}}, shard_size=8), "x")
    rows, plans = [], []
    for n in (1, 2, 3):
        result = run_job(spec.model_copy(update={"workers": n}), results_dir=tmp_path)
        rows.append(result.row)
        shards = pq.read_table(result.run_dir / "shards.parquet").to_pylist()
        assert len({s["worker_id"] for s in shards}) == n  # every worker took shards
        assert result.row.workers == n and result.row.shards == len(shard_bounds(60, 8, 4))
        plans.append(sorted((s["pass"], s["shard_id"], s["examples"], s["items"]) for s in shards))
    assert plans[1] == plans[0] and plans[2] == plans[0]  # the shard plan does not depend on the workers
    keys = ("examples", "items_val", "items_infer", "scored_val", "scored_infer", "correct_val", "correct_infer",
            "acc_val", "acc_infer", "acc")
    assert [{k: getattr(r, k) for k in keys} for r in rows] == [{k: getattr(rows[0], k) for k in keys}] * 3
    assert rows[0].items_infer == 60
    assert len(stored_rows(tmp_path)) == 3


def test_workers_auto_takes_one_per_gpu(ray_local, tmp_path):
    spec = validate(job(engine={"name": "synthetic", "latency_ms": 1}, passes=["infer"]), "x")
    assert run_job(spec, results_dir=tmp_path).row.workers == 3


def test_too_many_workers_is_a_user_error(ray_local, tmp_path):
    from workers.errors import UserError

    with pytest.raises(UserError, match="4 workers x 1 GPU need 4 GPUs; the cluster has 3"):
        run_job(validate(job(workers=4), "x"), results_dir=tmp_path)
    assert stored_rows(tmp_path) == []


def test_a_worker_ray_gave_a_gpu_it_cannot_see_fails_in_one_line(ray_local, tmp_path):
    """Ray assigns a GPU (this machine has none: torch sees no CUDA); without the test cluster's
    RAYBENCH_FAKE_GPUS the worker refuses instead of running the GPU job on the CPU, and the run
    stops with that line, writing no row."""
    from workers.actor import BenchWorker
    from workers.measure.device import FAKE_GPUS_ENV

    config = validate(job(), "x").worker_config()
    real = ray_local.remote(num_gpus=1, runtime_env={"env_vars": {FAKE_GPUS_ENV: "0"}})(BenchWorker).remote(config)
    info = ray_local.get(real.setup.remote())
    assert info.error is not None and info.error.kind == "user", info.error
    assert info.error.message.startswith("gpus_per_worker: Ray gave this worker GPU ")
    assert "but torch sees no CUDA device" in info.error.message and "\n" not in info.error.message
    ray_local.kill(real)
    fake = ray_local.remote(num_gpus=1)(BenchWorker).remote(config)  # the test cluster's declared GPUs
    assert ray_local.get(fake.setup.remote()).error is None
    ray_local.kill(fake)


def test_repeats_run_on_fresh_workers(ray_local, tmp_path):
    spec = validate(job(engine={"name": "synthetic", "latency_ms": 1}, passes=["infer"], workers=2, repeats=2), "x")
    result = run_job(spec, results_dir=tmp_path)
    shards = pq.read_table(result.run_dir / "shards.parquet").to_pylist()
    pids = {r: {s["pid"] for s in shards if s["repeat"] == r} for r in (0, 1)}
    assert pids[0] and pids[1] and not pids[0] & pids[1]  # new actor processes for the second repeat
    assert result.row.repeats == 2 and result.row.p_infer_core_ci_low is not None
    # synthetic data: prepared by repeat 0's first worker, no process of its own; repeat 1's fresh
    # workers still map it (the driver owns the object, not the actor that made it)
    assert result.data[0].pid in pids[0]
    # where the time went: Ray joined, data, workers, the passes, the row (timeline.json and the row)
    assert result.row.ray_start_time is not None and result.row.ray_start_time >= 0
    timeline = json.loads((result.run_dir / "timeline.json").read_text())
    steps, passes = timeline["steps"], timeline["passes"]
    assert list(steps) == ["ray_started", "data_ready", "workers_ready", "row_written"]
    assert steps["ray_started"] <= steps["data_ready"] <= steps["workers_ready"] <= passes["infer"][0]
    assert passes["infer"][1] <= passes["infer-r1"][0] <= passes["infer-r1"][1] <= steps["row_written"]


# ------------------------------------------- data prepared once: the same results on any layout
BERT_30522 = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}
COUNTS = ("examples", "items_val", "items_infer", "scored_val", "scored_infer", "correct_val", "correct_infer", "acc")


def shard_layout(result) -> list[tuple]:
    rows = pq.read_table(result.run_dir / "shards.parquet").to_pylist()
    return sorted((r["pass"], r["shard_id"], r["examples"], r["items"], r["scored"], r["correct"]) for r in rows)


def test_real_wikitext_prepared_once_gives_the_same_numbers_on_1_and_2_workers_and_in_process(ray_local, tmp_path):
    from tests.builders import WIKITEXT, bert_vocab

    raw = job(model={"random": BERT_30522, "tokenizer": str(bert_vocab())}, data=str(WIKITEXT), seq_len=128,
              task={"name": "masked_lm", "limit": 64}, bs=8, data_cache=str(tmp_path / "cache"))
    spec = validate(raw, "x")
    one = run_job(spec.model_copy(update={"workers": 1}), results_dir=tmp_path)
    two = run_job(spec.model_copy(update={"workers": 2}), results_dir=tmp_path)
    alone = run_job(spec.model_copy(update={"workers": 1}), results_dir=tmp_path, in_process=True)
    assert (one.row.data_cache_hit, two.row.data_cache_hit, alone.row.data_cache_hit) == (False, True, True)
    assert one.row.data_prepared_on == two.row.data_prepared_on == "127.0.0.2"
    assert len(one.data) == len(two.data) == 1 and one.data[0].cache_key == two.data[0].cache_key  # made, then read back
    assert all(getattr(r.row, k) == getattr(one.row, k) for r in (two, alone) for k in COUNTS)
    assert shard_layout(one) == shard_layout(two) == shard_layout(alone)
    assert one.row.scored_infer > 0.08 * 64 * 128 and len({i.dataset_fingerprint for i in two.infos}) == 1
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [f"data-{one.data[0].cache_key}"]


def test_mmlu_prepared_once_gives_the_same_predictions_on_1_and_2_workers_any_bs_and_in_process(ray_local, tmp_path):
    from tests.builders import mmlu_job, save_tiny_llama_with_tokenizer

    llama = save_tiny_llama_with_tokenizer(tmp_path / "llama")
    spec = validate(mmlu_job(str(llama), bs=4, passes=["val", "infer"], data_cache=str(tmp_path / "cache")), "x")
    runs = {
        "1 worker": run_job(spec.model_copy(update={"workers": 1}), results_dir=tmp_path),
        "2 workers": run_job(spec.model_copy(update={"workers": 2}), results_dir=tmp_path),
        "2 workers bs 1": run_job(spec.model_copy(update={"workers": 2, "bs": 1}), results_dir=tmp_path),
        "in-process": run_job(spec.model_copy(update={"workers": 1}), results_dir=tmp_path, in_process=True),
    }
    first = runs["1 worker"]
    assert [r.row.data_cache_hit for r in runs.values()] == [False, True, True, True]
    assert first.data[0].costs is not None and len(first.data[0].costs) == 12
    assert shard_layout(first) == shard_layout(runs["2 workers"]) == shard_layout(runs["in-process"])
    by_example = {name: {p["example"]: p for p in r.predictions} for name, r in runs.items()}
    assert sorted(by_example["1 worker"]) == list(range(12))
    assert len({p["predicted"] for p in by_example["1 worker"].values()}) > 1
    for name, predictions in by_example.items():
        assert {k: getattr(runs[name].row, k) for k in COUNTS} == {k: getattr(first.row, k) for k in COUNTS}, name
        for i, p in predictions.items():
            reference = by_example["1 worker"][i]
            assert (p["predicted"], p["prompt_tokens"], p["shots_used"]) == (
                reference["predicted"], reference["prompt_tokens"], reference["shots_used"]), (name, i)
            assert p["logit_A"] == pytest.approx(reference["logit_A"], abs=1e-4)
