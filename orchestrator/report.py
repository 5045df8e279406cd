"""Rendering rows: the seed's metrics table as rich (terminal) and Markdown (run folder)."""

from __future__ import annotations

from typing import Any, Iterable

from rich.table import Table

SEED_LAYOUT = (
    "config", "engine", "precision", "bs", "byte_per_batch", "e2e_time", "p_val_whole", "p_val_core",
    "p_infer_whole", "p_infer_core", "infer_time", "acc", "MFU", "mem",
)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_seconds_per_item(seconds: float | None) -> str:
    """1/p_infer_core in the seed's units: ms, or us below one millisecond."""
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} us"


def seed_cells(row: Any) -> dict[str, str]:
    """One row as the seed prints it. `row` is a MetricsRow or a dict with the same keys."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
    unit = get("item_unit")
    mem = get("mem")
    total = get("mem_total")
    precision = get("precision")
    if get("precision_effective") and get("precision_effective") != precision:
        precision = f"{precision} (ran {get('precision_effective')})"
    return {
        "config": get("devices"),
        "engine": get("engine"),
        "precision": precision,
        "bs": str(get("bs")),
        "byte_per_batch": str(get("byte_per_batch")),
        "e2e_time": _num(get("e2e_time")),
        "p_val_whole": _num(get("p_val_whole")),
        "p_val_core": _num(get("p_val_core")),
        "p_infer_whole": _num(get("p_infer_whole")),
        "p_infer_core": _num(get("p_infer_core")),
        "infer_time": format_seconds_per_item(get("infer_time")),
        "acc": get("acc") + (" (!)" if get("acc_flagged") else ""),
        "MFU": "-" if get("MFU") is None else f"{get('MFU') * 100:.1f}%",
        "mem": "-" if mem is None else f"{mem:.2f}/{total:.1f}" if total else f"{mem:.2f}",
    } | {"_unit": unit, "_mem_source": get("mem_source")}


def metrics_table(rows: Iterable[Any], title: str | None = None) -> Table:
    rows = list(rows)
    table = Table(title=title, show_lines=False)
    for column in SEED_LAYOUT:
        table.add_column(column, justify="left" if column in ("config", "acc", "precision") else "right")
    for row in rows:
        cells = seed_cells(row)
        table.add_row(*(cells[c] for c in SEED_LAYOUT))
    if rows:
        cells = seed_cells(rows[0])
        table.caption = (
            f"p_* in {cells['_unit']}/s · acc = infer/val · mem = peak/total GiB ({cells['_mem_source']}) · "
            "e2e_time s"
        )
    return table


def metrics_markdown(rows: Iterable[Any]) -> str:
    rows = list(rows)
    lines = ["| " + " | ".join(SEED_LAYOUT) + " |", "|" + "---|" * len(SEED_LAYOUT)]
    for row in rows:
        cells = seed_cells(row)
        lines.append("| " + " | ".join(cells[c] for c in SEED_LAYOUT) + " |")
    if rows:
        cells = seed_cells(rows[0])
        lines.append("")
        lines.append(
            f"p_* in {cells['_unit']}/s; acc = infer/val; mem = peak/total GiB ({cells['_mem_source']}); e2e_time in s."
        )
    return "\n".join(lines) + "\n"
