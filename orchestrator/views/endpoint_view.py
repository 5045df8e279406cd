"""Endpoint rows as a table (terminal and Markdown): what the server gave, and whether the clients kept up.

The seed's table has no place for a server's latencies (its columns are an engine's), so endpoint
rows get their own: the load asked for, requests/s, tokens/s, TTFT / TPOT / ITL / E2E percentiles
(TTFT and E2E from the scheduled send, and TTFT from the actual send beside it), goodput, errors,
the schedule lag and the verdict.
"""

from __future__ import annotations

from typing import Iterable

from rich.table import Table

from orchestrator.metrics.row import MetricsRow

LAYOUT = ("load", "req/s", "tok/s", "TTFT p50/p99 ms", "TTFT sent p99 ms", "TPOT p50/p99 ms", "ITL p99 ms",
          "E2E p50/p99 ms", "goodput req/s", "errors", "lag p99 ms", "verdict")


def is_endpoint(row: MetricsRow) -> bool:
    """A row of a running server's, whatever drove it (its own schedule, or LoadGen)."""
    return row.endpoint_url is not None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.3g}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def offered(row: MetricsRow) -> str:
    if row.load == "loadgen":
        return f"LoadGen {row.scenario}" + (f" {row.target_qps:g} QPS" if row.target_qps is not None else "")
    if row.concurrency is not None:
        return f"{row.concurrency} in flight"
    rate = f"{row.offered_rate:g} req/s" if row.offered_rate is not None else "?"
    return f"{rate} {row.arrival}"


def cells(row: MetricsRow) -> dict[str, str]:
    return {
        "load": offered(row) + (f" x{row.clients} clients" if row.clients and row.clients > 1 else ""),
        "req/s": _num(row.requests_per_s),
        "tok/s": _num(row.output_tokens_per_s, 1),
        "TTFT p50/p99 ms": f"{_ms(row.ttft_p50)}/{_ms(row.ttft_p99)}",
        "TTFT sent p99 ms": _ms(row.ttft_sent_p99),
        "TPOT p50/p99 ms": f"{_ms(row.tpot_p50)}/{_ms(row.tpot_p99)}",
        "ITL p99 ms": _ms(row.itl_p99),
        "E2E p50/p99 ms": f"{_ms(row.e2e_p50)}/{_ms(row.e2e_p99)}",
        "goodput req/s": _num(row.goodput_per_s),
        "errors": f"{row.request_errors}/{row.requests}" if row.requests is not None else "-",
        "lag p99 ms": _ms(row.schedule_lag_p99),
        "verdict": row.verdict or "-",
    }


def caption(rows: list[MetricsRow]) -> str:
    first = rows[0]
    return (f"{first.model} at {first.endpoint_url} ({first.endpoint_api}) · TTFT/E2E from the scheduled send; "
            "'sent': from the actual send · lag: actual minus scheduled send")


def endpoint_table(rows: Iterable[MetricsRow], title: str | None = None) -> Table:
    rows = list(rows)
    table = Table(title=title)
    for column in LAYOUT:
        table.add_column(column, justify="left" if column in ("load", "verdict") else "right")
    for row in rows:
        shown = cells(row)
        table.add_row(*(shown[c] for c in LAYOUT))
    if rows:
        table.caption = caption(rows)
    return table


def endpoint_markdown(rows: Iterable[MetricsRow]) -> str:
    rows = list(rows)
    lines = ["| " + " | ".join(LAYOUT) + " |", "|" + "---|" * len(LAYOUT)]
    lines += ["| " + " | ".join(cells(row)[c] for c in LAYOUT) + " |" for row in rows]
    if rows:
        lines += ["", caption(rows)]
    return "\n".join(lines) + "\n"
