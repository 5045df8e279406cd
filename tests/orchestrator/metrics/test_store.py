"""The results store: one file per run and no lock, the old single-file table read as one more
fragment, and the very same code on a real S3 API (moto's server on loopback)."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.metrics.store import ResultsStore, row_schema
from orchestrator.modes.offline.plan import shard_bounds
from tests.builders import metrics_row, stored_rows, write_run
from workers.errors import UserError

BENCH = [sys.executable, "-m", "orchestrator.cli"]
SHARDS_3200 = len(shard_bounds(3200, 80, 4))  # jobs/synthetic.yaml with data.synthetic.size=3200
QUICK = ["--no-ray", "--set", "data.synthetic.size=320", "--set", "engine.latency_ms=2"]


def _append_at_once(root: str, run_id: str, barrier) -> None:
    barrier.wait()
    ResultsStore(root).append_rows([metrics_row(run_id=run_id)])


def test_concurrent_appends_from_many_processes_all_land_without_a_lock(tmp_path):
    ids = [f"run-{i}" for i in range(6)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(ids))
    procs = [ctx.Process(target=_append_at_once, args=(str(tmp_path), i, barrier)) for i in ids]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(r["run_id"] for r in stored_rows(tmp_path)) == ids
    assert len(list((tmp_path / "metrics").glob("*.parquet"))) == len(ids)  # one file per run, nothing else


def test_rows_read_back_in_the_order_they_were_added(tmp_path):
    store = ResultsStore(tmp_path)
    for run_id in ("zz", "aa", "mm"):  # names that sort differently from the order of writing
        store.append_rows([metrics_row(run_id=run_id)])
    assert [r["run_id"] for r in stored_rows(tmp_path)] == ["zz", "aa", "mm"]


def test_an_old_metrics_parquet_is_read_as_the_first_fragment_and_never_rewritten(tmp_path):
    """Stores written before the per-run layout: rows of an older schema (a column missing) come
    back with nulls there, new rows follow them, and the old file keeps its bytes."""
    old_rows = [metrics_row(run_id=f"old-{i}", latency_cv=0.5).model_dump() for i in range(2)]
    old = pa.Table.from_pylist(old_rows, schema=row_schema()).drop_columns(["latency_cv"])
    pq.write_table(old, tmp_path / "metrics.parquet")
    before = (tmp_path / "metrics.parquet").read_bytes()
    write_run(tmp_path, name="new", batches=20)
    rows = stored_rows(tmp_path)
    assert [r["run_id"] for r in rows][:2] == ["old-0", "old-1"] and rows[2]["job"] == "new"
    assert [r["latency_cv"] for r in rows[:2]] == [None, None]
    assert (tmp_path / "metrics.parquet").read_bytes() == before
    listed = CliRunner().invoke(app, ["results", "--results", str(tmp_path), "--format", "csv", "--columns", "run_id"])
    assert listed.exit_code == 0 and listed.stdout.split()[1:3] == ['"old-0"', '"old-1"']


def test_a_row_an_older_raybench_wrote_reads_back_with_the_defaults_of_later_columns(tmp_path):
    """An older version's row lacks columns added since (here `workers_lost`, which cannot be null):
    the table reads it back with their defaults, so `bench results/compare/report` still work."""
    from orchestrator.metrics.row import MetricsRow
    from orchestrator.views.query import find_row

    store = ResultsStore(tmp_path)
    store.append_rows([metrics_row(run_id="new")])
    old = pa.Table.from_pylist([metrics_row(run_id="old").model_dump()], schema=row_schema())
    pq.write_table(old.drop_columns(["workers_lost"]), tmp_path / "metrics" / "20250101T000000000000Z-old.parquet")
    rows = {r["run_id"]: MetricsRow.from_record(r) for r in store.read_metrics().to_pylist()}
    assert rows["old"].workers_lost == 0 and rows["new"].workers_lost == 0
    assert find_row(store, "old").run_id == "old"


def test_a_file_that_is_not_parquet_in_the_table_is_named_in_one_line(tmp_path):
    ResultsStore(tmp_path).append_rows([metrics_row(run_id="good")])
    (tmp_path / "metrics" / "stray.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match=r"metrics/stray\.parquet is not a readable metrics file"):
        ResultsStore(tmp_path).read_metrics()


def test_a_uri_pyarrow_cannot_open_is_one_line_and_creates_no_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(app, ["results", "--results", "nosuch://bucket/x"])
    assert out.exit_code == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: --results nosuch://bucket/x: cannot open it")
    assert list(tmp_path.iterdir()) == []


def test_a_secret_in_the_uri_is_not_shown(tmp_path):
    with pytest.raises(UserError) as err:
        ResultsStore("nosuch://KEY:SECRET@bucket/x")
    assert "SECRET" not in str(err.value) and "KEY:***@bucket" in str(err.value)


# -- on a real S3 API

@pytest.fixture()
def s3(moto_s3, monkeypatch):
    """A fresh bucket; this process and the `bench` processes reach it through the AWS variables."""
    for key, value in moto_s3.env().items():
        monkeypatch.setenv(key, value)
    return moto_s3, f"s3://{moto_s3.new_bucket()}/team-results"


def _bench(*args, env=None, cwd=None, timeout=180):
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=timeout, env=env or dict(os.environ),
                          cwd=cwd)


def _s3_names(uri: str, under: str) -> list[str]:
    fs, path = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(f"{path}/{under}", allow_not_found=True, recursive=True))
    return sorted(i.path.removeprefix(path + "/") for i in infos if i.type == pafs.FileType.File)


@pytest.mark.slow
def test_two_runs_append_to_s3_at_once_and_a_third_process_reads_both(s3, tmp_path):
    moto, uri = s3
    env = dict(os.environ, COLUMNS="240")
    procs = [subprocess.Popen([*BENCH, "submit", "jobs/synthetic.yaml", *QUICK, "--results", uri, "--run-id", f"s3-run-{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    assert f"results: {uri} (1 row(s) added)" in out
    listed = _bench("results", "--results", uri, "--format", "json", "--columns", "run_id,items_infer", env=env,
                    cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert sorted((r["run_id"], r["items_infer"]) for r in json.loads(listed.stdout)) == [("s3-run-0", 320),
                                                                                        ("s3-run-1", 320)]
    names = _s3_names(uri, "")
    assert len([n for n in names if n.startswith("metrics/")]) == 2
    assert {"runs/s3-run-0/job.yaml", "runs/s3-run-0/shards.parquet", "runs/s3-run-0/metrics.md"} <= set(names)
    assert not (tmp_path / "s3:").exists()  # the old bug: a local folder named after the scheme

    report = _bench("report", "s3-run-1", "--results", uri, env=env, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report-s3-run-1" / "report.html").read_text().count("data:image/png;base64,") >= 2
    compared = _bench("compare", "s3-run-0", "s3-run-1", "--results", uri, "--format", "markdown", env=env, cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    assert "| p_infer_core |" in compared.stdout


@pytest.mark.slow
def test_a_killed_run_on_s3_leaves_no_row_and_resumes_from_s3(s3, tmp_path):
    moto, uri = s3
    env = dict(os.environ)
    run_id = "s3-killed"
    proc = subprocess.Popen([*BENCH, "submit", "jobs/synthetic.yaml", "--no-ray", "--workers", "1", "--results", uri,
                             "--run-id", run_id, "--set", "data.synthetic.size=3200", "--set", "engine.latency_ms=5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while len(_s3_names(uri, f"runs/{run_id}/shards")) < 3 and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    shards = _s3_names(uri, f"runs/{run_id}/shards")
    assert 3 <= len(shards) < SHARDS_3200
    assert ResultsStore(uri).read_metrics().num_rows == 0  # no partial row
    resumed = _bench("submit", "--resume", run_id, "--no-ray", "--results", uri, env=env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    (row,) = stored_rows(uri)
    assert row["run_id"] == run_id and row["resumed"] and row["items_infer"] == 3200
    assert len(_s3_names(uri, f"runs/{run_id}/shards")) == SHARDS_3200


def test_the_endpoint_can_travel_in_the_uri(moto_s3, monkeypatch):
    """No AWS_ENDPOINT_URL here: pyarrow's URI options carry it (what --as-job sends to the head)."""
    for key, value in moto_s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    uri = moto_s3.uri_with_endpoint(moto_s3.new_bucket(), "r")
    store = ResultsStore(uri)
    store.append_rows([metrics_row(run_id="via-uri")])
    assert store.location.startswith("s3://") and "endpoint_override" not in store.location
    assert [r["run_id"] for r in ResultsStore(uri).read_metrics().to_pylist()] == ["via-uri"]


def test_the_table_never_holds_two_rows_of_one_run(tmp_path):
    """A second append of a run's row is refused; two drivers of one run that both got their row
    onto an object store (no lock there) still read back as one row, the first written."""
    store = ResultsStore(tmp_path)
    store.append_rows([metrics_row(run_id="run-a", bs=8)])
    with pytest.raises(UserError, match="run run-a already has its row in .*: a run has one row; nothing added"):
        store.append_rows([metrics_row(run_id="run-a", bs=16), metrics_row(run_id="run-b")])
    assert store.read_metrics().column("run_id").to_pylist() == ["run-a"]  # run-b was not half-added either
    assert store.has_row("run-a") and not store.has_row("run") and not store.has_row("a")
    race = tmp_path / "metrics" / "29991231T235959000000Z-run-a.parquet"  # the other driver's file, written later
    pq.write_table(pa.Table.from_pylist([metrics_row(run_id="run-a", bs=16).model_dump()], schema=row_schema()), race)
    store.append_rows([metrics_row(run_id="run-b")])
    table = store.read_metrics()
    assert table.column("run_id").to_pylist() == ["run-a", "run-b"] and table.column("bs").to_pylist()[0] == 8
def test_a_saved_shard_comes_back_with_its_gpu_figures_and_old_shards_without_them(tmp_path):
    """What a resumed run merges: the NVML figures of each saved shard (workers/measure/device_watch.py), and
    shards saved before those figures existed load with none."""
    import dataclasses

    from workers.contract import DeviceHealth, ShardResult

    run = ResultsStore(tmp_path).run("r")
    health = DeviceHealth(samples=4, sm_clock_mhz_min=1410, clock_events=["hw_thermal"], xid_errors=[79],
                          ecc_errors=0, other_pids=[4242], note="power: Not Supported")
    shard = ShardResult(shard_id=3, pass_name="infer", attempt=1, worker_id=0, node_id="n", device_name="d", pid=1,
                        health=health)
    run.save_shard(shard)
    old = dataclasses.asdict(dataclasses.replace(shard, shard_id=4, health=None))
    del old["health"]
    run.file("shards/infer-00004.json").write_text(json.dumps(old))
    loaded = {r.shard_id: r for r in run.load_shards()}
    assert loaded[3].health == health and loaded[4].health is None


def test_a_shard_file_a_crash_left_empty_is_left_out_so_a_resume_runs_it_again(tmp_path):
    """Shard files are not synced (the driver keeps up with thousands a second); after a machine
    crash one may read empty: loading leaves it out instead of failing the resume."""
    from workers.contract import ShardResult

    run = ResultsStore(tmp_path).run("r")
    for shard_id in (1, 2):
        run.save_shard(ShardResult(shard_id=shard_id, pass_name="infer", attempt=1, worker_id=0, node_id="n",
                                   device_name="d", pid=1))
    (tmp_path / "runs" / "r" / "shards" / "infer-00002.json").write_text("")
    assert [r.shard_id for r in run.load_shards()] == [1]
