"""`bench results` backend on a results folder written by the real store and merge code."""

import csv
import io
import json

import pytest
from rich.console import Console
from rich.table import Table

from orchestrator.metrics.store import ResultsStore
from orchestrator.views.query import find_row, parse_where, render, results, select
from tests.builders import write_run
from workers.errors import UserError


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
    assert find_row(ResultsStore(folder), "large").bs == 32  # a unique part of the id
    with pytest.raises(UserError, match="matches 2 runs"):
        find_row(ResultsStore(folder), "smoke")
    with pytest.raises(UserError, match="not in"):
        find_row(ResultsStore(folder), "nope")
    with pytest.raises(UserError, match="no results yet"):
        results(tmp_path_factory.mktemp("empty"))
