"""`bench report` for a LoadGen scenario run: the per-query latency distribution and, for find_peak,
the QPS searched against p99. Read from the run folder's queries.parquet and find_peak.parquet
(orchestrator/modes/loadgen/point.py writes them); the lines drawn are the row's figures, LoadGen's own.
"""

from __future__ import annotations

from typing import Sequence

from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.store import RunFolder
from orchestrator.views.plots import Plot, new_figure, png_bytes
from orchestrator.views.report import is_scenario

# The report's LoadGen section: the row's scenario columns.
LOADGEN = ("load", "scenario", "loadgen_mode", "target_qps", "achieved_qps", "query_latency_es", "latency_percentile",
           "query_latency_p50", "query_latency_p90", "query_latency_p99", "latency_bound", "overlatency_queries",
           "overlatency_allowed", "issue_delay_p99", "loadgen_result", "loadgen_errors", "compliance_test",
           "compliance_result", "find_peak_stop", "mlperf_deviations")


def query_latency_histogram(latencies_s: Sequence[float], row: MetricsRow) -> Plot | None:
    if not latencies_s:
        return None
    fig = new_figure(7, 3.5)
    ax = fig.add_subplot()
    ax.hist([t * 1e3 for t in latencies_s], bins="auto", color="#8172b2")
    marks = ((50, row.query_latency_p50, "-"), (90, row.query_latency_p90, "--"), (99, row.query_latency_p99, ":"))
    for q, value, style in marks:
        if value is not None:
            ax.axvline(value * 1e3, color="black", linestyle=style, label=f"p{q} {value * 1e3:.3g} ms (LoadGen)")
    if row.latency_bound is not None:
        ax.axvline(row.latency_bound * 1e3, color="#c44e52", label=f"bound {row.latency_bound * 1e3:g} ms")
    ax.set(xlabel="query latency (ms)", ylabel="queries", title=f"{row.scenario}: {len(latencies_s)} queries")
    ax.legend()
    return Plot("queries", "Per-query latency (LoadGen)", png_bytes(fig))


def find_peak_plot(probes: list[dict], row: MetricsRow) -> Plot | None:
    points = [p for p in probes if p.get("query_latency_p99") is not None]
    if not points:
        return None
    fig = new_figure(7, 3.5)
    ax = fig.add_subplot()
    for result, color in (("VALID", "#55a868"), ("INVALID", "#c44e52")):
        chosen = [p for p in points if p["loadgen_result"] == result]
        ax.scatter([p["target_qps"] for p in chosen], [p["query_latency_p99"] * 1e3 for p in chosen],
                   color=color, label=result, zorder=3)
    for p in points:
        ax.annotate(str(p["run"] + 1), (p["target_qps"], p["query_latency_p99"] * 1e3), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    if row.latency_bound is not None:
        bound_ms = row.latency_bound * 1e3
        ax.axhline(bound_ms, color="black", linestyle="--", label=f"bound {bound_ms:g} ms")
    ax.set_yscale("log")
    ax.set(xlabel="target QPS (run number beside each point)", ylabel="p99 latency (ms)",
           title=f"find_peak: highest VALID {row.target_qps:g} QPS" if row.loadgen_result == "VALID" else "find_peak")
    ax.legend()
    return Plot("find_peak", "QPS searched vs p99 (find_peak)", png_bytes(fig))


def scenario_plots(run: RunFolder, row: MetricsRow) -> list[Plot]:
    if not is_scenario(row):
        return []
    plots = []
    queries = run.read_table("queries.parquet", ["latency_s"])
    if queries is not None:
        plots.append(query_latency_histogram(queries.column("latency_s").to_pylist(), row))
    probes = run.read_table("find_peak.parquet")
    if probes is not None:
        plots.append(find_peak_plot(probes.to_pylist(), row))
    return [p for p in plots if p is not None]
