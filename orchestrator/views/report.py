"""Rendering rows: the seed's metrics table as rich (terminal) and Markdown (run folder)."""

from __future__ import annotations

from typing import Iterable

from rich.table import Table

from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.stats import ci_half_width

SEED_LAYOUT = (
    "config", "engine", "precision", "bs", "byte_per_batch", "e2e_time", "p_val_whole", "p_val_core",
    "p_infer_whole", "p_infer_core", "infer_time", "acc", "MFU", "mem", "verdict",
)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _with_ci(mean: float | None, low: float | None, high: float | None) -> str:
    """The mean across repeats with its 95 % interval as +- half width (repeats >= 2)."""
    half = ci_half_width(low, high)
    return _num(mean) if mean is None or half is None else f"{_num(mean)} ±{_num(half)}"


def format_seconds_per_item(seconds: float | None) -> str:
    """1/p_infer_core in the seed's units: ms, or us below one millisecond."""
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} us"


def seed_cells(row: MetricsRow) -> dict[str, str]:
    """One row as the seed prints it."""
    mem, total, precision = row.mem, row.mem_total, row.precision
    if row.precision_effective and row.precision_effective != precision:
        precision = f"{precision} (ran {row.precision_effective})"
    return {
        "config": row.devices,
        "engine": row.engine,
        "precision": precision,
        "bs": "-" if row.bs is None else str(row.bs),
        "byte_per_batch": "-" if row.byte_per_batch is None else str(row.byte_per_batch),
        "e2e_time": _num(row.e2e_time),
        "p_val_whole": _num(row.p_val_whole),
        "p_val_core": _num(row.p_val_core),
        "p_infer_whole": _with_ci(row.p_infer_whole, row.p_infer_whole_ci_low, row.p_infer_whole_ci_high),
        "p_infer_core": _with_ci(row.p_infer_core, row.p_infer_core_ci_low, row.p_infer_core_ci_high),
        "infer_time": format_seconds_per_item(row.infer_time),
        "acc": row.acc + (" (!)" if row.acc_flagged else ""),
        "MFU": "-" if row.MFU is None else f"{row.MFU * 100:.1f}%",
        "mem": "-" if mem is None else f"{mem:.2f}/{total:.1f}" if total else f"{mem:.2f}",
        "verdict": row.verdict or "-",
    } | {"_unit": row.item_unit, "_mem_source": row.mem_source}


def blank_reasons(rows: list[MetricsRow]) -> str:
    """Why a row's MFU is blank ("MFU -: <reason>"), once per distinct reason; '' when none is."""
    notes = dict.fromkeys(row.mfu_note for row in rows if row.MFU is None and row.mfu_note)
    return "".join(f" · MFU -: {note}" for note in notes)


def metrics_table(rows: Iterable[MetricsRow], title: str | None = None) -> Table:
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
            "e2e_time s" + blank_reasons(rows)
        )
    return table


def metrics_markdown(rows: Iterable[MetricsRow]) -> str:
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
            + blank_reasons(rows).replace(" · ", " ")
        )
    return "\n".join(lines) + "\n"


def print_runs(runs: list, spec, results: str, width: int | None) -> str:
    """Print the table of a submit (one row per sweep point) and what to look at; returns the
    trouble (flagged accuracy, INVALID rows) as one line, empty when there is none. `results` is
    where the store is, as the user should read it (an absolute path or a URI)."""
    from rich.console import Console

    from orchestrator.views.endpoint_view import endpoint_table, is_endpoint

    console = Console(width=width)
    rows = [r.row for r in runs]
    if all(is_endpoint(row) for row in rows):
        console.print(endpoint_table(rows, title=f"{spec.name}: endpoint"))
    else:
        console.print(metrics_table(rows, title=f"{spec.name}: {spec.task.name} · {spec.model.label}"))
    trouble = []
    for run in runs:
        row = run.row
        if row.acc_flagged:
            trouble.append(f"{row.run_id}: acc infer/val differ by {row.acc_gap:.4f} (> acc_tolerance {spec.acc_tolerance})")
        if row.verdict == "INVALID":
            trouble.append(f"{row.run_id}: INVALID ({row.verdict_reasons})")
        if row.retries:
            console.print(f"{row.run_id}: {row.retries} failed attempt(s) re-run (see {run.run_dir}/retries.parquet)")
        if is_scenario(row):
            console.print(f"{row.run_id}: {scenario_line(row)}", soft_wrap=True)
        if row.requests is not None:
            console.print(f"{row.run_id}: {generation_line(row)}", soft_wrap=True)
    if getattr(getattr(spec, "task", None), "name", "") == "mmlu":
        _print_mmlu(console, runs)
    for line in trouble:
        console.print(f"[yellow]{line}", soft_wrap=True)
    for run in runs:
        if run.timeline:
            console.print(f"{run.run_id}: {describe_timeline(run.timeline)}", soft_wrap=True, markup=False)
    for run in runs:
        console.print(f"run id: {run.run_id}", soft_wrap=True)
    console.print(f"results: {results} ({len(runs)} row(s) added); "
                  f"run folder: {runs[-1].run_dir}", soft_wrap=True)
    return "; ".join(trouble)


def is_scenario(row: MetricsRow) -> bool:
    """A row a LoadGen test made (LoadGen's Offline included), as opposed to raybench's sharded Offline."""
    return row.load == "loadgen" or row.scenario not in (None, "offline")


def scenario_line(row: MetricsRow) -> str:
    """A LoadGen run in one line: what was offered, what LoadGen measured, and its verdict."""
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e3:.3g} ms"

    offered = f" at {row.target_qps:g} QPS" if row.target_qps is not None else ""
    achieved = f", achieved {row.achieved_qps:,.2f} QPS" if row.achieved_qps is not None else ""
    bound = f" (bound {ms(row.latency_bound)})" if row.latency_bound is not None else ""
    result = row.loadgen_result or "no verdict in accuracy mode"
    estimate = (f"; MLPerf's p{row.latency_percentile:g} early-stopping estimate {ms(row.query_latency_es)}"
                if row.query_latency_es is not None and row.latency_percentile is not None else "")
    tail = (f"; {row.overlatency_queries} over the bound ({row.overlatency_allowed} allowed)"
            if row.overlatency_queries is not None else "")
    errors = f", {row.loadgen_errors} error(s)" if row.loadgen_errors else ""
    return (f"LoadGen {row.scenario} {row.loadgen_mode}{offered}{achieved}; query latency p50 "
            f"{ms(row.query_latency_p50)}, p90 {ms(row.query_latency_p90)}, p99 {ms(row.query_latency_p99)}{bound}"
            f"{estimate}{tail}; LoadGen {result}{errors}")


def generation_line(row: MetricsRow) -> str:
    """A generate run's latencies and rates in one line (docs/measurement.md defines each)."""
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e3:.4g}"

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.3g}"

    tokens = f"LoadGen {row.loadgen_tokens_per_s:,.1f} tok/s; " if row.loadgen_tokens_per_s is not None else ""
    return (f"{row.requests} requests ({row.input_tokens_mean or 0:.1f} prompt / {row.output_tokens_mean or 0:.1f} "
            f"output tokens on average, {row.sampling}); TTFT p50/p90/p99 {ms(row.ttft_p50)}/{ms(row.ttft_p90)}/"
            f"{ms(row.ttft_p99)} ms; TPOT p50/p99 {ms(row.tpot_p50)}/{ms(row.tpot_p99)} ms; ITL p50 {ms(row.itl_p50)} ms; "
            f"{tokens}{_num(row.requests_per_s, 2)} requests/s; MBU {share(row.MBU)}, MBU_measured "
            f"{share(row.MBU_measured)}; tokens checked against greedy generate: "
            f"{'-' if row.invariance_checked is None else f'{row.invariance_flips} of {row.invariance_checked} differ'}")


def _print_mmlu(console, runs: list) -> None:
    """Per-subject accuracy (57 rows and the four groups) and what happened to the prompts."""
    from orchestrator.metrics.subjects import subjects_rich

    for run in runs:
        row = run.row
        console.print(subjects_rich(run.predictions,
                                    title=f"{row.run_id}: accuracy by subject (scoring: {row.scoring}, {row.shots}-shot)"))
        console.print(f"questions/s (core): {row.questions_per_s:,.2f} · prompts that lost shots to fit "
                      f"seq_len {row.seq_len}: {row.prompts_short_of_shots} · cut even at 0 shots: {row.prompts_truncated}",
                      soft_wrap=True)


def describe_timeline(record: dict) -> str:
    """A run's timeline.json (orchestrator/timeline.py) in one line: each step's end and each pass's
    and driver step's span, in seconds since the start; then what setup spent off those spans."""
    steps = record.get("steps", {})
    parts = [f"{name.replace('_', ' ')} {seconds:.1f} s" for name, seconds in steps.items() if name != "row_written"]
    parts += [f"{name} {low:.1f}-{high:.1f} s" for name, (low, high) in record.get("passes", {}).items()]
    parts += [f"{name} check {low:.1f}-{high:.1f} s" for name, (low, high) in record.get("spans", {}).items()]
    if "row_written" in steps:
        parts.append(f"row written {steps['row_written']:.1f} s")
    line = "time since submit: " + ", ".join(parts)
    setup = record.get("setup")
    if setup is None:  # a timeline written before issue 31
        return line
    peak = setup.get("peak_seconds")
    costs = ["measured peak " + ("not taken" if peak is None else "0.0 s (cached)" if peak == 0 else f"{peak:.1f} s")]
    costs += [f"{name} warm-up {seconds:.1f} s" for name, seconds in setup.get("warmup_seconds", {}).items()]
    return f"{line}; setup: {', '.join(costs)}"
