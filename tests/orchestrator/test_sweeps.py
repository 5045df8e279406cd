"""Sweeps, repeats and comparisons end to end (in-process workers; the Ray path is in test_driver)."""

import pyarrow.parquet as pq
import pytest

from orchestrator.driver import run_all
from orchestrator.spec import load_spec, validate
from orchestrator.views.compare import compare_runs
from tests.builders import job, stored_rows
from workers.errors import UserError


def test_a_2x2_sweep_writes_four_rows_sharing_a_sweep_id(tmp_path):
    spec = validate(job(sweep={"bs": [2, 4], "engine": ["torch", {"name": "synthetic", "latency_ms": 1}]},
                        passes=["infer"]), "x")
    runs = run_all(spec, results_dir=tmp_path, in_process=True)
    rows = stored_rows(tmp_path)
    assert [(r["bs"], r["engine"]) for r in rows] == [(2, "torch"), (2, "synthetic"), (4, "torch"), (4, "synthetic")]
    assert len({r["run_id"] for r in rows}) == 4 and len({r["sweep_id"] for r in rows}) == 1
    assert rows[0]["sweep_id"] is not None
    assert all(r["items_infer"] == 48 for r in rows)
    assert [r.row.run_id for r in runs] == [r["run_id"] for r in rows]


def test_sweep_points_are_validated_at_load():
    with pytest.raises(UserError, match=r"sweep point\): bs: Input should be greater than 0"):
        validate(job(sweep={"bs": [2, 0]}), "job.yaml")
    with pytest.raises(UserError, match="cannot sweep 'seed'"):
        validate(job(sweep={"seed": [1, 2]}), "job.yaml")


def test_repeats_give_a_confidence_interval_and_identical_counts(tmp_path):
    spec = load_spec("jobs/synthetic.yaml", ["workers=1", "repeats=3", "data.synthetic.size=160",
                                             "engine.latency_ms=2"])
    (run,) = run_all(spec, results_dir=tmp_path, in_process=True)
    row = run.row
    assert row.repeats == 3
    assert row.p_infer_core_ci_low < row.p_infer_core < row.p_infer_core_ci_high
    assert row.items_infer == 160 and row.measured_batches == 3 * 40  # latencies of all repeats pooled
    shards = pq.read_table(run.run_dir / "shards.parquet").to_pylist()
    per_repeat = {r: [(s["shard_id"], s["items"], s["correct"]) for s in shards if s["repeat"] == r] for r in range(3)}
    assert per_repeat[0] == per_repeat[1] == per_repeat[2]


def test_compare_flags_a_planted_slowdown_end_to_end(tmp_path):
    """Real runs through the driver and the store. The slowdown is 4x (10 ms -> 40 ms per batch), so
    no load on a shared 2-core machine can hide it. That a rerun is *not* flagged is checked on runs
    with seeded latencies (tests/orchestrator/views/test_compare.py): two real 10 ms runs on a loaded
    machine can differ by more than the 3 % floor, and such a test would fail for the wrong reason."""
    def synthetic(latency_ms: float):
        spec = load_spec("jobs/synthetic.yaml", ["workers=1", "data.synthetic.size=240",
                                                 f"engine.latency_ms={latency_ms}", "shard_size=40"])
        return run_all(spec, results_dir=tmp_path, in_process=True)[0].run_id

    base, slow = synthetic(10), synthetic(40)
    _, _, planted = compare_runs(tmp_path, base, slow)
    core = next(d for d in planted if d.column == "p_infer_core")
    assert core.verdict == "beyond noise" and core.improved is False and core.relative < -0.5
