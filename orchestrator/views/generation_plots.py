"""`bench report` for a generate run: the TTFT and TPOT distributions and output tokens per second
over the run, read from the run folder's requests.parquet (every request's times and latencies);
the percentile lines drawn are the row's own figures (orchestrator/metrics/requests.py made both)."""

from __future__ import annotations

from typing import Sequence

from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.store import RunFolder
from orchestrator.views.plots import Plot, new_figure, png_bytes

# The report's generation section: the row's generation columns.
GENERATION = ("requests", "requests_per_s", "input_tokens_mean", "output_tokens_mean", "prefill_tokens_per_s",
              "ttft_p50", "ttft_p90", "ttft_p99", "tpot_p50", "tpot_p90", "tpot_p99", "itl_p50", "itl_p99",
              "e2e_p50", "e2e_p99", "MFU_prefill", "MFU_decode", "MFU_prefill_measured", "MFU_decode_measured",
              "MBU", "MBU_measured", "mbu_note", "sampling", "ignore_eos", "input_tokens", "max_new_tokens",
              "loadgen_ttft_p99", "loadgen_tpot_p99", "loadgen_tokens_per_s", "ttft_bound", "tpot_bound")


def is_generation(row: MetricsRow) -> bool:
    return row.requests is not None


def latency_histogram(values_s: Sequence[float], row: MetricsRow, name: str, title: str) -> Plot | None:
    """Per-request TTFT or TPOT, with the row's p50/p90/p99 (and LoadGen's bound, where there is one)."""
    if not values_s:
        return None
    fig = new_figure(7, 3.5)
    ax = fig.add_subplot()
    ax.hist([v * 1e3 for v in values_s], bins="auto", color="#4c72b0" if name == "ttft" else "#55a868")
    for q, style in ((50, "-"), (90, "--"), (99, ":")):
        value = getattr(row, f"{name}_p{q}")
        if value is not None:
            ax.axvline(value * 1e3, color="black", linestyle=style, label=f"p{q} {value * 1e3:.3g} ms")
    bound = getattr(row, f"{name}_bound")
    if bound is not None:
        ax.axvline(bound * 1e3, color="#c44e52", label=f"bound {bound * 1e3:g} ms (LoadGen p99)")
    ax.set(xlabel=f"{name.upper()} (ms)", ylabel="requests", title=f"{title}: {len(values_s)} requests")
    ax.legend()
    return Plot(name, title, png_bytes(fig))


def tokens_over_time(token_times_s: Sequence[Sequence[float]], bin_s: float | None = None) -> Plot | None:
    """Output tokens per second over the run, every request's tokens counted in the bin they were made."""
    times = [t for request in token_times_s for t in request]
    if len(times) < 2:
        return None
    start, end = min(times), max(times)
    span = max(end - start, 1e-9)
    width = bin_s or max(span / 60, 0.05)
    bins = int(span / width) + 1
    counts = [0] * bins
    for t in times:
        counts[min(int((t - start) / width), bins - 1)] += 1
    fig = new_figure(7, 3.5)
    ax = fig.add_subplot()
    ax.step([i * width for i in range(bins)], [c / width for c in counts], where="post", color="#8172b2")
    ax.set(xlabel="seconds from the first token", ylabel="output tokens/s",
           title=f"output tokens per second ({width:.3g} s bins)")
    return Plot("tokens_over_time", "Output tokens per second over the run", png_bytes(fig))


def generation_plots(run: RunFolder, row: MetricsRow) -> list[Plot]:
    if not is_generation(row):
        return []
    table = run.read_table("requests.parquet", ["ttft_s", "tpot_s", "token_times_s"])
    if table is None:
        return []
    ttft = [v for v in table.column("ttft_s").to_pylist() if v is not None]
    tpot = [v for v in table.column("tpot_s").to_pylist() if v is not None]
    plots = [latency_histogram(ttft, row, "ttft", "Time to first token"),
             latency_histogram(tpot, row, "tpot", "Time per output token"),
             tokens_over_time(table.column("token_times_s").to_pylist())]
    return [p for p in plots if p is not None]
