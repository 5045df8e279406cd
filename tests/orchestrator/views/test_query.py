"""`bench results` backend on a results folder written by the real store and merge code."""

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

from orchestrator.metrics.merge import merge
from orchestrator.views.query import find_row, parse_where, render, results, select
from orchestrator.spec import dump_spec, validate
from orchestrator.metrics.store import ResultsStore
from tests.builders import job
from workers.contract import BuildInfo, ShardResult, WorkerInfo
from workers.errors import UserError

GIB = 1 << 30


def worker_info(worker: int) -> WorkerInfo:
    return WorkerInfo(
        worker_id=worker, node_id=f"node{worker % 2}", hostname="h", pid=100 + worker, device="cpu",
        device_name="CPU test", device_count_visible=1, num_examples=0, dataset_fingerprint="f", load_seconds=1.0,
        data_seconds=0.5, build=BuildInfo("torch"), precision_effective="fp32", peak_flops=None,
        mem_total_bytes=8 * GIB, item_unit="seq", versions={"torch": "2.13.0", "python": "3.11"},
    )


def shard_results(pass_name: str, latencies: np.ndarray, bs: int, workers: int, shards: int) -> list[ShardResult]:
    """Contiguous slices of `latencies` as shards, round-robin over workers, back to back in time."""
    out, clock = [], {w: 1000.0 for w in range(workers)}
    for shard_id, batches in enumerate(np.array_split(latencies, shards)):
        w = shard_id % workers
        core = float(batches.sum())
        items = bs * len(batches)
        out.append(ShardResult(
            shard_id=shard_id, pass_name=pass_name, attempt=1, worker_id=w, node_id=f"node{w % 2}",
            device_name="CPU test", pid=100 + w, examples=items, items=items, scored=items, correct=items // 2,
            core_seconds=core, wall_seconds=core * 1.1, start_ts=clock[w], end_ts=clock[w] + core * 1.1,
            warmup_batches=1, batch_core_seconds=[float(t) for t in batches], bytes_per_batch=bs * 512,
            peak_mem_bytes=GIB, mem_total_bytes=8 * GIB, mem_source="cpu-rss-peak",
            records=[{"subject": f"subject_{i % 3}", "correct": i % (2 + i % 3) == 0} for i in range(items)],
        ))
        clock[w] += core * 1.1
    return out


def write_run(root: Path, *, name: str = "t", engine: str = "torch", bs: int = 8, latency_s: float = 0.01,
              seed: int = 0, batches: int = 200, workers: int = 2, shards: int = 8) -> dict:
    """One finished run on disk (job.yaml, shards/workers/predictions tables, a metrics row), as the
    driver writes it; batch latencies are seeded lognormal draws around `latency_s`. Returns its row."""
    store = ResultsStore(root)
    spec = validate(job(name=name, engine=engine, bs=bs), "test")
    rng = np.random.default_rng(seed)
    results = [r for p in ("val", "infer") for r in shard_results(p, rng.lognormal(math.log(latency_s), 0.1, batches),
                                                            bs, workers, shards)]
    infos = [worker_info(w) for w in range(workers)]
    run_id = f"20250101-000000-{name}-{seed:06x}"
    row = merge(spec=spec, run_id=run_id, results=results, infos=infos, e2e_seconds=9.0, retries=0, item_unit="seq")
    run = store.run(run_id)
    run.create(dump_spec(spec), started_at=990.0)
    run.write_shards_table(results, infos)
    run.write_workers_table(infos)
    run.write_records("predictions.parquet", [dict(rec, **{"pass": r.pass_name}) for r in results for rec in r.records])
    store.append_rows([row])
    return row.model_dump()


@pytest.fixture()
def folder(tmp_path):
    write_run(tmp_path, name="smoke-a", engine="torch", bs=8, seed=1, batches=20)
    write_run(tmp_path, name="smoke-b", engine="synthetic", bs=16, seed=2, batches=20)
    write_run(tmp_path, name="large", engine="torch", bs=32, seed=3, batches=20)
    return tmp_path


def _table(folder):
    return ResultsStore(folder).read_metrics()


def test_where_compares_numbers_text_and_substrings(folder):
    table = _table(folder)
    assert select(table, ["engine=torch"], ["job"])["job"].to_pylist() == ["smoke-a", "large"]
    assert select(table, ["bs>=16"], ["bs"])["bs"].to_pylist() == [16, 32]
    assert select(table, ["bs > 8", "bs<32"], ["bs"])["bs"].to_pylist() == [16]
    assert select(table, ["bs<=8"], ["bs"])["bs"].to_pylist() == [8]
    assert select(table, ["job~smoke", "engine!=torch"], ["job"])["job"].to_pylist() == ["smoke-b"]
    assert select(table, ["p_infer_core>0", "acc_flagged=false"]).num_rows == 3
    assert select(table, ["MFU=null"]).num_rows == 3  # CPU runs: no peak, no MFU
    assert select(table, ["MFU!=null"]).num_rows == 0


def test_numeric_compare_is_numeric_not_lexicographic(folder):
    # as text "8" > "16"; as numbers it is not
    assert select(_table(folder), ["bs>9"], ["bs"])["bs"].to_pylist() == [16, 32]


def test_columns_sort_and_limit(folder):
    table = select(_table(folder), columns=["job", "bs"], sort="-bs", limit=2)
    assert table.column_names == ["job", "bs"]
    assert table["bs"].to_pylist() == [16, 8]  # sorted 32, 16, 8; the last two kept
    default = select(_table(folder))
    assert default.column_names[:3] == ["run_id", "job", "engine"] and "p_infer_core" in default.column_names


@pytest.mark.parametrize("where, message", [
    ("engin=torch", "unknown column 'engin'. Did you mean: engine?"),
    ("bs>=eight", "bs is numeric and 'eight' is not a number"),
    ("bs~8", "~ (substring) needs a text column"),
    ("acc_flagged=maybe", "acc_flagged is true/false"),
    ("bs", "expected COLUMN OP VALUE"),
])
def test_bad_where_is_a_user_error_naming_the_column(folder, where, message):
    with pytest.raises(UserError, match=message.replace("?", r"\?").replace("(", r"\(").replace(")", r"\)")):
        select(_table(folder), [where])


def test_bad_column_and_sort_are_user_errors(folder):
    with pytest.raises(UserError, match="--columns: unknown column 'p_infer'"):
        select(_table(folder), columns=["job", "p_infer"])
    with pytest.raises(UserError, match="--sort: unknown column 'bss'"):
        select(_table(folder), sort="bss")


def test_parse_where_takes_the_longest_operator():
    assert (parse_where("bs>=8").op, parse_where("bs!=8").op, parse_where(" job ~ a=b ").value) == (">=", "!=", "a=b")


def test_formats(folder):
    table = select(_table(folder), ["engine=torch"], ["job", "bs", "p_infer_core"])
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert [(r["job"], int(r["bs"])) for r in rows] == [("smoke-a", 8), ("large", 32)]
    assert float(rows[0]["p_infer_core"]) == pytest.approx(table["p_infer_core"][0].as_py())
    data = json.loads(render(table, "json"))
    assert [d["job"] for d in data] == ["smoke-a", "large"] and isinstance(data[0]["p_infer_core"], float)
    markdown = render(table, "markdown").splitlines()
    assert markdown[0] == "| job | bs | p_infer_core |" and markdown[2].startswith("| smoke-a | 8 | ")
    rich_table = render(table, "table")
    assert isinstance(rich_table, Table) and rich_table.row_count == 2
    console = Console(record=True, width=200)
    console.print(rich_table)
    assert "smoke-a" in console.export_text()
    with pytest.raises(UserError, match="--format 'xml'"):
        render(table, "xml")


def test_results_reads_the_folder_and_finds_rows(folder, tmp_path_factory):
    text = results(folder, ["bs=32"], ["job"], "csv")
    assert text.splitlines() == ['"job"', '"large"']
    assert find_row(folder, "large")["bs"] == 32  # a unique part of the id
    with pytest.raises(UserError, match="matches 2 runs"):
        find_row(folder, "smoke")
    with pytest.raises(UserError, match="not in"):
        find_row(folder, "nope")
    with pytest.raises(UserError, match="no results yet"):
        results(tmp_path_factory.mktemp("empty"))
