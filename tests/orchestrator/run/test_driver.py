"""The driver on a real local Ray that pretends to have 3 GPUs."""

import pyarrow.parquet as pq
import pytest

from orchestrator.run.driver import run_job
from orchestrator.run.plan import shard_bounds
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


def test_repeats_run_on_fresh_workers(ray_local, tmp_path):
    spec = validate(job(engine={"name": "synthetic", "latency_ms": 1}, passes=["infer"], workers=2, repeats=2), "x")
    result = run_job(spec, results_dir=tmp_path)
    shards = pq.read_table(result.run_dir / "shards.parquet").to_pylist()
    pids = {r: {s["pid"] for s in shards if s["repeat"] == r} for r in (0, 1)}
    assert pids[0] and pids[1] and not pids[0] & pids[1]  # new actor processes for the second repeat
    assert result.row.repeats == 2 and result.row.p_infer_core_ci_low is not None
