"""The command line, end to end: the smoke job through a real `bench` process, and bad input."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.metrics.row import SEED_COLUMNS
from tests.builders import job, save_tiny_bert, stored_rows
from tests.conftest import LOOPBACK

BENCH = [sys.executable, "-m", "orchestrator.cli"]


def bench(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="240")
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_smoke_job_end_to_end(tmp_path):
    results = tmp_path / "results"
    first = bench("submit", "jobs/smoke.yaml", "--results", str(results), "--node-ip", LOOPBACK)
    assert first.returncode == 0, first.stderr
    assert "Token authentication is enabled" not in first.stderr  # our own local Ray: no notice about it
    for header in ("p_infer_core", "p_val_whole", "byte_per_batch", "acc", "MFU", "mem"):
        assert header in first.stdout
    assert "run id: " in first.stdout
    (row,) = stored_rows(results)
    assert set(SEED_COLUMNS) <= set(row)
    assert row["job"] == "smoke" and row["workers"] == 2 and row["items_infer"] == 2048
    assert row["p_infer_core"] > 0 and row["e2e_time"] > 0
    run_dir = results / "runs" / row["run_id"]
    for name in ("job.yaml", "shards.parquet", "metrics.md", "workers.parquet"):
        assert (run_dir / name).exists(), name
    shards = pq.read_table(run_dir / "shards.parquet").to_pylist()
    assert sum(s["items"] for s in shards if s["pass"] == "infer") == 2048
    assert {s["worker_id"] for s in shards} == {0, 1}
    assert yaml.safe_load((run_dir / "job.yaml").read_text())["bs"] == 8  # the resolved spec

    second = bench("submit", "jobs/smoke.yaml", "--results", str(results), "--node-ip", LOOPBACK,
                   "--set", "bs=4", "--workers", "1")
    assert second.returncode == 0, second.stderr
    rows = stored_rows(results)
    assert [r["bs"] for r in rows] == [8, 4] and rows[1]["workers"] == 1
    assert rows[0]["correct_infer"] == rows[1]["correct_infer"]  # same data, same model: bs does not matter


def test_help_is_instant_and_imports_no_heavy_modules():
    code = "import sys; from orchestrator import cli; print(sorted(m for m in ('ray','torch','transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def write_job(tmp_path: Path, raw: dict | str | bytes) -> Path:
    path = tmp_path / "job.yaml"
    if isinstance(raw, bytes):
        path.write_bytes(raw)
    else:
        path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("model") / "tiny-bert")


def bad_inputs(tmp_path: Path, tiny_bert_dir: Path) -> dict[str, tuple[str | dict, str]]:
    local = {"model": str(tiny_bert_dir)}
    return {
        "malformed yaml": ("name: x\nbs: [1, 2\n", "malformed YAML"),
        "unknown key": (job(batch=4), "batch: unknown field"),
        "wrong type": (job(bs="many"), "bs: Input should be a valid integer"),
        "bs <= 0": (job(bs=0), "bs: Input should be greater than 0"),
        "seq_len too long": (job(seq_len=512, **local), "seq_len: 512 is above the model's maximum of 64"),
        "missing data file": (job(data=str(tmp_path / "nope.txt")), f"data.path: '{tmp_path / 'nope.txt'}' does not exist"),
        "missing model path": (job(model=str(tmp_path / "no-model")), "model.source: "),
        "not utf-8 text": (gzip.compress(Path("jobs/smoke.yaml").read_bytes()), "not a text file"),
        "model_type typo": (job(model={"random": {"model_type": "bertt", "hidden_size": 32}}),
                            "model.random.model_type: unknown transformers model type 'bertt'. Did you mean: bert?"),
    }


@pytest.mark.parametrize("case", ["malformed yaml", "unknown key", "wrong type", "bs <= 0", "seq_len too long",
                                  "missing data file", "missing model path", "not utf-8 text", "model_type typo"])
def test_bad_input_exits_nonzero_with_one_line_and_stores_nothing(tmp_path, tiny_bert_dir, case):
    raw, expected = bad_inputs(tmp_path, tiny_bert_dir)[case]
    results = tmp_path / "results"
    results.mkdir()
    (results / "metrics.parquet").write_bytes(b"existing table stays as it was")
    before = sorted((p.name, p.read_bytes()) for p in results.rglob("*") if p.is_file())
    outcome = CliRunner().invoke(app, ["submit", str(write_job(tmp_path, raw)), "--results", str(results)])
    assert outcome.exit_code == 2, outcome.output
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert sorted((p.name, p.read_bytes()) for p in results.rglob("*") if p.is_file()) == before


def test_validate_command(tmp_path):
    ok = CliRunner().invoke(app, ["validate", "jobs/smoke.yaml"])
    assert ok.exit_code == 0 and "ok" in ok.stdout
    bad = CliRunner().invoke(app, ["validate", str(write_job(tmp_path, job(bs=-1)))])
    assert bad.exit_code == 2 and "bs:" in bad.stderr
    typo = CliRunner().invoke(app, ["validate", str(write_job(tmp_path, job(model={"random": {"model_type": "llamma"}})))])
    assert typo.exit_code == 2 and typo.stderr.strip().splitlines() == [
        "error: model.random.model_type: unknown transformers model type 'llamma'. Did you mean: llama?"]


def test_accuracy_gap_is_flagged_and_strict_exits_nonzero(tmp_path):
    """The synthetic engine's outputs differ from the model's, so infer and val accuracies differ."""
    args = ["submit", "jobs/smoke.yaml", "--no-ray", "--results", str(tmp_path), "--set", "engine=synthetic",
            "--set", "engine.latency_ms=0", "--set", "data.synthetic.size=64", "--set", "acc_tolerance=0"]
    loose = CliRunner().invoke(app, args)
    assert loose.exit_code == 0, loose.output
    assert "acc infer/val differ by" in loose.stdout
    strict = CliRunner().invoke(app, [*args, "--strict"])
    assert strict.exit_code == 1
    assert strict.stderr.startswith("error: --strict: ") and "acc infer/val differ by" in strict.stderr
    rows = stored_rows(tmp_path)
    assert [r["acc_flagged"] for r in rows] == [True, True]


def test_validate_plan_prints_the_runs_plan_without_running_it(tmp_path):
    """MMLU (cost plan) on the real data: one JSON object a script can read, and the table form.
    The data is prepared here, into the job's data cache, which the run then reads."""
    import json

    from tests.builders import MMLU_DIR

    sets = ["--set", f"data={MMLU_DIR}", "--set", "bs=4",
            "--set", "task.limit=10", "--set", f"data_cache={tmp_path / 'cache'}", "--set", "workers=3"]
    out = CliRunner().invoke(app, ["validate", "jobs/mmlu_tiny.yaml", "--plan", "--format", "json", *sets])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.output)
    assert plan["bs"] == 4 and plan["num_examples"] == 30 and plan["by"] == "cost" and plan["order"] == "cost"
    assert plan["workers"]["count"] == 3 and plan["workers"]["asks"] == {"GPU": 1.0, "CPU": 1.0}
    for pass_name in ("val", "infer"):
        shards = [s for s in plan["shards"] if s["pass"] == pass_name]
        assert [s["shard_id"] for s in shards] == list(range(len(shards)))
        assert [i for s in shards for i in range(s["start"], s["stop"])] == list(range(30))
        assert all((s["stop"] - s["start"]) % 4 == 0 for s in shards[:-1])
        assert sum(s["share"] for s in shards) == pytest.approx(1.0)
    assert sorted(plan["dispatch_order"]) == list(range(len(plan["shards"]) // 2))
    assert plan["data"]["cache_hit"] is False and "first worker" in plan["data"]["where"]  # the run will hit the cache
    shown = CliRunner().invoke(app, ["validate", "jobs/mmlu_tiny.yaml", "--plan", *sets])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"mmlu_tiny: mmlu, 30 examples (tok), bs 4, {len(plan['shards']) // 2} shards per pass by cost"
    assert lines[1].startswith("data: read from the driver node's data cache") and "here: read from the cache" in lines[1]
    assert lines[2] == ("workers: 3 worker(s), each asks Ray for {GPU: 1, CPU: 1} on a cluster with GPUs, "
                        "{CPU: 1} on one without")
    assert "│ infer │" in shown.output
    assert "examples sorted by cost (prompt length), dearest first" in shown.output


def test_validate_plan_explains_auto_workers_and_refuses_a_bad_format(tmp_path):
    out = CliRunner().invoke(app, ["validate", "jobs/smoke.yaml", "--plan", "--set", "workers=auto"])
    assert out.exit_code == 0, out.output
    assert "workers: auto: one worker per 1 GPU of the cluster (on a cluster without GPUs: one CPU worker)" in out.output
    bad = CliRunner().invoke(app, ["validate", "jobs/synthetic.yaml", "--plan", "--format", "yaml"])
    assert bad.exit_code == 2 and "--format: 'yaml' is not one of table, json" in bad.output


@pytest.mark.parametrize("job_file", ["jobs/smoke.yaml", "jobs/synthetic_server.yaml"])
def test_a_results_location_that_cannot_be_written_is_one_line_before_any_work(job_file):
    """`--results /proc/raybench` was a 70-line traceback after the data was prepared, on every kind
    of run; now one line naming the location, exit 2, before anything runs."""
    out = bench("submit", job_file, "--results", "/proc/raybench", "--no-ray", timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "/proc/raybench" in lines[0], out.stderr
    assert "preparing" not in out.stdout.lower() and "warming" not in out.stdout.lower()
