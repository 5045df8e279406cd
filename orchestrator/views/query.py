"""`bench results`: filter, pick columns from and render the global metrics table.

`--where` takes `COLUMN OP VALUE`, several of them ANDed:

    OP   =  !=  >  >=  <  <=   compare; numbers for numeric columns, text otherwise
         ~                      substring (text columns), e.g. job~smoke
    VALUE null (or nothing) with = / != matches a missing value: mfu=null

Text columns compare as text, so ISO timestamps order correctly: `timestamp>=2025-06-01`.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from rich.table import Table

from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.store import ResultsStore
from workers.errors import UserError, did_you_mean

Format = Literal["table", "csv", "json", "markdown"]
FORMATS = ("table", "csv", "json", "markdown")
DEFAULT_COLUMNS = (
    "run_id", "job", "engine", "precision", "bs", "seq_len", "workers", "p_infer_core", "p_infer_whole",
    "latency_p50", "latency_p99", "latency_cv", "acc", "verdict",
)
_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(!=|>=|<=|=|>|<|~)\s*(.*?)\s*$")
_COMPARE = {"=": pc.equal, "!=": pc.not_equal, ">": pc.greater, ">=": pc.greater_equal, "<": pc.less,
            "<=": pc.less_equal}
_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: str


def parse_where(text: str) -> Condition:
    match = _WHERE.match(text)
    if not match:
        raise UserError(f"--where {text!r}: expected COLUMN OP VALUE with OP one of = != > >= < <= ~ (e.g. bs>=8)")
    return Condition(*match.groups())


def check_column(table: pa.Table, column: str, option: str) -> None:
    if column not in table.column_names:
        raise UserError(f"{option}: unknown column '{column}'.{did_you_mean(column, table.column_names)}")


def _typed_value(cond: Condition, kind: pa.DataType) -> Any:
    where = f"--where {cond.column}{cond.op}{cond.value}"
    if pa.types.is_boolean(kind):
        if cond.value.lower() not in _TRUE | _FALSE:
            raise UserError(f"{where}: {cond.column} is true/false, not {cond.value!r}")
        return cond.value.lower() in _TRUE
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        try:
            return float(cond.value)
        except ValueError:
            raise UserError(f"{where}: {cond.column} is numeric and {cond.value!r} is not a number") from None
    return cond.value


def condition_mask(table: pa.Table, cond: Condition) -> pa.ChunkedArray:
    check_column(table, cond.column, "--where")
    column = table[cond.column]
    if cond.op in ("=", "!=") and cond.value.lower() in ("", "null", "none"):
        missing = pc.is_null(column)
        return missing if cond.op == "=" else pc.invert(missing)
    if cond.op == "~":
        if not pa.types.is_string(column.type):
            raise UserError(f"--where {cond.column}~{cond.value}: ~ (substring) needs a text column; "
                            f"{cond.column} is {column.type}")
        return pc.match_substring(column, cond.value)
    if cond.op not in ("=", "!=") and pa.types.is_boolean(column.type):
        raise UserError(f"--where {cond.column}{cond.op}{cond.value}: {cond.column} is true/false; use = or !=")
    return _COMPARE[cond.op](column, pa.scalar(_typed_value(cond, column.type)))


def select(
    table: pa.Table,
    where: list[str] | None = None,
    columns: list[str] | None = None,
    sort: str | None = None,
    limit: int | None = None,
) -> pa.Table:
    """Rows matching every condition, in the chosen columns (default: the headline ones present).
    `sort` is a column name, `-name` for descending; `limit` keeps the last rows (the newest)."""
    for cond in map(parse_where, where or []):
        table = table.filter(condition_mask(table, cond))
    if sort:
        name = sort.lstrip("-")
        check_column(table, name, "--sort")
        table = table.sort_by([(name, "descending" if sort.startswith("-") else "ascending")])
    if limit is not None:
        table = table.slice(max(table.num_rows - limit, 0))
    chosen = columns or [c for c in DEFAULT_COLUMNS if c in table.column_names]
    for name in chosen:
        check_column(table, name, "--columns")
    return table.select(chosen)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
    return str(value)


def render(table: pa.Table, fmt: Format) -> str | Table:
    """csv, json and markdown come back as text to print as is; table as a rich Table."""
    if fmt == "csv":
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        return buffer.getvalue().decode()
    if fmt == "json":
        return json.dumps(table.to_pylist(), indent=2) + "\n"
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    if fmt == "markdown":
        lines = ["| " + " | ".join(table.column_names) + " |", "|" + "---|" * table.num_columns]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in rows]
        return "\n".join(lines) + "\n"
    if fmt == "table":
        out = Table(caption=f"{table.num_rows} row(s)")
        for name in table.column_names:
            numeric = pa.types.is_integer(table[name].type) or pa.types.is_floating(table[name].type)
            out.add_column(name, justify="right" if numeric else "left")
        for cells in rows:
            out.add_row(*cells)
        return out
    raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")


def results(
    results_dir: str | Path,
    where: list[str] | None = None,
    columns: list[str] | None = None,
    fmt: Format = "table",
    sort: str | None = None,
    limit: int | None = None,
) -> str | Table:
    """The `bench results` command in one call: read, filter, render."""
    store = ResultsStore(results_dir)
    if not store.has_rows():
        raise UserError(f"{store.location}: no results yet (run `bench submit JOB.yaml --results {store.shown_uri}`)")
    return render(select(store.read_metrics(), where, columns, sort, limit), fmt)


def find_row(store: ResultsStore, run_id: str) -> MetricsRow:
    """The table row of a run, by its id or any unique part of it (`bench report f05415`)."""
    table = store.read_metrics()
    ids = table["run_id"].to_pylist()
    matches = [i for i in ids if i == run_id] or [i for i in ids if run_id in i]
    if not matches:
        raise UserError(f"run '{run_id}': not in {store.location} ({len(ids)} rows; see `bench results`)")
    distinct = sorted(set(matches))
    if len(distinct) > 1:
        raise UserError(f"run '{run_id}': matches {len(distinct)} runs ({', '.join(distinct[:3])}, ...); "
                        "give more of the id")
    if len(matches) > 1:
        raise UserError(f"run '{matches[0]}': {len(matches)} rows carry this id; expected one")
    return MetricsRow.from_record(table.filter(pc.equal(table["run_id"], matches[0])).to_pylist()[0])
