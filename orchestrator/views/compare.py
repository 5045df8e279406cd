"""`bench compare RUN_A RUN_B`: per-column deltas, each marked beyond or within noise.

Which noise estimate a column gets:
- throughput columns with a 95 % CI on both rows (runs with repeats >= 2): beyond noise when the
  intervals do not overlap;
- columns made from the infer pass's per-batch core latencies (p_infer_core, infer_time, MFU, the
  latency percentiles): the Mann-Whitney U test on the two runs' batch latencies (stats.latency_shift);
- single figures with no spread to compare against (e2e_time, mem, whole-pass throughput without
  repeats, accuracy): "n/a", because one number per run says nothing about its noise.
Every "beyond noise" also needs a relative change of at least MIN_EFFECT (3 %), so that a rerun of
the same job is not flagged however many batches it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from rich.table import Table

from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.stats import (
    MIN_EFFECT,
    NOISE_ALPHA,
    ShiftTest,
    intervals_overlap,
    latency_shift,
    relative_change,
)
from orchestrator.metrics.store import ResultsStore, RunFolder
from orchestrator.views.query import find_row

NoiseVerdict = Literal["beyond noise", "within noise", "unchanged", "n/a"]
Source = Literal["core", "whole", "latency", None]

# column, higher is better, where its noise estimate comes from
HEADLINE: tuple[tuple[str, bool, Source], ...] = (
    ("p_infer_core", True, "core"),
    ("p_infer_whole", True, "whole"),
    ("infer_time", False, "core"),
    ("MFU", True, "core"),
    ("latency_mean", False, "latency"),
    ("latency_p50", False, "latency"),
    ("latency_p90", False, "latency"),
    ("latency_p99", False, "latency"),
    ("p_val_core", True, None),
    ("p_val_whole", True, None),
    ("e2e_time", False, None),
    ("mem", False, None),
    ("acc_infer", True, None),
    ("acc_val", True, None),
)
CONFIG = ("job", "task", "model", "data", "examples", "engine", "precision", "bs", "seq_len", "workers", "nodes",
          "devices", "torch_version", "driver_version", "scoring", "prompt_format")


@dataclass(frozen=True)
class Delta:
    column: str
    a: float | None
    b: float | None
    change: float | None  # b - a, in the column's unit
    relative: float | None  # (b - a) / |a|
    higher_is_better: bool
    verdict: NoiseVerdict
    basis: str  # how the verdict was reached, for the reader

    @property
    def improved(self) -> bool | None:
        if self.change is None or self.change == 0:
            return None
        return (self.change > 0) == self.higher_is_better


def _ci(row: MetricsRow, column: str) -> tuple[float, float] | None:
    low, high = getattr(row, f"{column}_ci_low"), getattr(row, f"{column}_ci_high")
    return (low, high) if row.repeats >= 2 and low is not None and high is not None else None


def _ci_verdict(ci_a: tuple[float, float], ci_b: tuple[float, float], relative: float | None,
                min_effect: float) -> tuple[NoiseVerdict, str]:
    apart = not intervals_overlap(ci_a, ci_b) and relative is not None and abs(relative) >= min_effect
    basis = f"95% CIs [{ci_a[0]:.4g}, {ci_a[1]:.4g}] vs [{ci_b[0]:.4g}, {ci_b[1]:.4g}]"
    return ("beyond noise" if apart else "within noise"), basis


def _shift_verdict(shift: ShiftTest | None) -> tuple[NoiseVerdict, str]:
    if shift is None:
        return "n/a", "fewer than 2 batches on a side"
    verdict: NoiseVerdict = "beyond noise" if shift.beyond_noise else "within noise"
    return verdict, f"Mann-Whitney p={shift.p_value:.2g}, median latency {shift.median_change:+.1%}"


def compare(
    row_a: MetricsRow,
    row_b: MetricsRow,
    latencies_a: Sequence[float],
    latencies_b: Sequence[float],
    alpha: float = NOISE_ALPHA,
    min_effect: float = MIN_EFFECT,
) -> list[Delta]:
    """Deltas B - A of the headline columns."""
    shift = latency_shift(latencies_a, latencies_b, alpha, min_effect)
    deltas = []
    for column, higher, source in HEADLINE:
        a, b = getattr(row_a, column), getattr(row_b, column)
        change = b - a if a is not None and b is not None else None
        relative = relative_change(a, b)
        cis = (_ci(row_a, f"p_infer_{source}"), _ci(row_b, f"p_infer_{source}")) if source in ("core", "whole") else ()
        if a is None or b is None:
            verdict, basis = "n/a", "missing on a side"
        elif a == b:
            verdict, basis = "unchanged", "equal"
        elif cis and None not in cis:
            verdict, basis = _ci_verdict(*cis, relative, min_effect)
        elif source in ("core", "latency"):
            verdict, basis = _shift_verdict(shift)
        else:
            verdict, basis = "n/a", "one figure per run: no noise estimate"
        deltas.append(Delta(column, a, b, change, relative, higher, verdict, basis))
    return deltas


def config_changes(row_a: MetricsRow, row_b: MetricsRow) -> list[tuple[str, str, str]]:
    """What differs between the two runs' setups, so a delta is read next to its cause."""
    return [(c, str(getattr(row_a, c)), str(getattr(row_b, c))) for c in CONFIG
            if getattr(row_a, c) != getattr(row_b, c)]


def prompt_warning(row_a: MetricsRow, row_b: MetricsRow) -> str | None:
    """MMLU runs whose prompts differ measure different token streams: a one-space change in a
    prompt changes predictions and token counts, so their accuracy and tokens/s do not compare."""
    if row_a.task != "mmlu" or row_b.task != "mmlu" or row_a.prompt_format == row_b.prompt_format:
        return None
    def name(row: MetricsRow) -> str:
        return row.prompt_format or "unrecorded (a run from before prompt formats were named)"

    return (f"warning: the runs used different MMLU prompts (A: {name(row_a)}; B: {name(row_b)}): "
            "accuracy and tokens/s are not comparable")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"


def _cells(d: Delta) -> list[str]:
    relative = "-" if d.relative is None else f"{d.relative:+.1%}"
    return [d.column, _fmt(d.a), _fmt(d.b), _fmt(d.change), relative, d.verdict, d.basis]


HEADERS = ("column", "A", "B", "B - A", "relative", "verdict", "basis")


def deltas_table(deltas: list[Delta], title: str | None = None) -> Table:
    """Rich table; a change beyond noise is green when it is an improvement, red when a regression."""
    table = Table(title=title)
    for h in HEADERS:
        table.add_column(h, justify="right" if h in ("A", "B", "B - A", "relative") else "left")
    for d in deltas:
        style = ("green" if d.improved else "red") if d.verdict == "beyond noise" and d.improved is not None else None
        table.add_row(*_cells(d), style=style)
    return table


def deltas_markdown(deltas: list[Delta]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(d)) + " |" for d in deltas]
    return "\n".join(lines) + "\n"


def batch_latencies(run: RunFolder) -> list[float]:
    """Per-batch core seconds of the run's headline pass (infer, else val), from shards.parquet."""
    table = run.read_table("shards.parquet", columns=["pass", "shard_id", "batch_core_seconds"])
    if table is None:
        return []
    records = table.to_pylist()
    pass_name = "infer" if any(r["pass"] == "infer" for r in records) else "val"
    chosen = sorted((r for r in records if r["pass"] == pass_name), key=lambda r: r["shard_id"])
    return [t for r in chosen for t in r["batch_core_seconds"]]


def compare_runs(
    results_dir: str | Path, run_a: str, run_b: str, alpha: float = NOISE_ALPHA, min_effect: float = MIN_EFFECT
) -> tuple[MetricsRow, MetricsRow, list[Delta]]:
    """`bench compare` in one call: both rows (ids or unique parts of them), their latencies, the deltas."""
    store = ResultsStore(results_dir)
    row_a, row_b = find_row(store, run_a), find_row(store, run_b)
    latencies = [batch_latencies(store.run(row.run_id)) for row in (row_a, row_b)]
    return row_a, row_b, compare(row_a, row_b, *latencies, alpha=alpha, min_effect=min_effect)
