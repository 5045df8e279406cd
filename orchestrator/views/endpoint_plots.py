"""`bench report` for an endpoint run: the latency distributions, latency against the rate across a sweep
(and find_peak's probes), the schedule lag (did the clients keep up?), and the server's own metrics
beside TTFT. Read from the run folder's requests.parquet, find_peak.parquet and server_metrics.parquet
(orchestrator/modes/endpoint/point.py writes them); the lines marked are the row's own figures.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.store import RunFolder
from orchestrator.views.plots import Plot, new_figure, png_bytes

# The report's endpoint section: the row's columns.
ENDPOINT = ("endpoint_url", "endpoint_api", "model", "arrival", "offered_rate", "concurrency", "clients",
            "client_nodes", "requests", "requests_completed", "errors_by_kind", "requests_per_s",
            "output_tokens_per_s", "input_tokens_mean", "output_tokens_mean", "ttft_p50", "ttft_p90", "ttft_p99",
            "ttft_p999", "ttft_sent_p50", "ttft_sent_p99", "tpot_p50", "tpot_p99", "itl_p50", "itl_p99", "e2e_p50",
            "e2e_p99", "e2e_sent_p99", "slo", "goodput_per_s", "schedule_lag_p50", "schedule_lag_p99",
            "schedule_lag_max", "sent_ratio", "client_cpu_max", "repeats", "requests_per_s_ci_low",
            "requests_per_s_ci_high", "ttft_p99_ci_low", "ttft_p99_ci_high", "find_peak_stop", "server_metrics",
            "warmup_requests", "e2e_time", "ray_version", "python_version")
PLOTTED_SERVER = ("running", "waiting", "queue", "cache", "token_usage")  # gauge names worth a line


def headline(requests: list[dict], row: MetricsRow) -> list[dict]:
    """The requests the row's figures are made of: every repeat, or find_peak's best probe."""
    if row.find_peak_stop is None or row.offered_rate is None:
        return requests
    return [r for r in requests if r["rate"] == row.offered_rate]


def _ecdf(ax, values_s: list[float], label: str, style: str = "-") -> None:
    ms = np.sort(np.asarray(values_s) * 1e3)
    ax.plot(ms, np.arange(1, len(ms) + 1) / len(ms), style, label=f"{label} ({len(ms)})")


def latency_distributions(requests: list[dict], row: MetricsRow) -> Plot | None:
    done = [r for r in requests if r["error_kind"] is None and r["ttft_s"] is not None]
    if not done:
        return None
    fig = new_figure(9, 3.6)
    left, right = fig.subplots(1, 2)
    _ecdf(left, [r["ttft_s"] for r in done], "TTFT from scheduled send")
    _ecdf(left, [r["ttft_sent_s"] for r in done], "TTFT from actual send", "--")
    _ecdf(left, [r["e2e_s"] for r in done], "E2E from scheduled send")
    itl = [b - a for r in done for a, b in zip(r["token_times_s"], r["token_times_s"][1:])]
    if itl:
        _ecdf(right, itl, "ITL (between chunks)")
    tpot = [r["tpot_s"] for r in done if r["tpot_s"] is not None]
    if tpot:
        _ecdf(right, tpot, "TPOT", "--")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    for ax, title in ((left, "per request"), (right, "per token")):
        ax.axhline(0.99, color="grey", linewidth=0.6)
        ax.axhline(0.5, color="grey", linewidth=0.6)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 10, 100, not 10^1
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="ms (log)", ylabel="fraction of requests" if ax is left else "fraction", title=title)
        ax.legend(fontsize=7)
    return Plot("latency_cdf", "Latency distributions (grey lines: p50, p99)", png_bytes(fig))


def latency_vs_rate(rows: Sequence[MetricsRow], probes: list[dict] | None) -> Plot | None:
    """Across a sweep's rows (or find_peak's probes): TTFT and E2E percentiles against the rate offered."""
    points = sorted((r for r in rows if r.offered_rate is not None and r.ttft_p99 is not None),
                    key=lambda r: r.offered_rate)
    probes = [p for p in probes or [] if p.get("ttft_p99") is not None]
    if len(points) < 2 and not probes:
        return None
    fig = new_figure(7, 3.6)
    ax = fig.add_subplot()
    if len(points) >= 2:
        rates = [r.offered_rate for r in points]
        for name, style in (("ttft_p50", "o-"), ("ttft_p99", "s-"), ("ttft_sent_p99", "s--"), ("e2e_p99", "^-")):
            ax.plot(rates, [(getattr(r, name) or np.nan) * 1e3 for r in points], style, label=name)
        bad = [r for r in points if r.verdict == "INVALID"]
        ax.scatter([r.offered_rate for r in bad], [r.ttft_p99 * 1e3 for r in bad], s=120, facecolors="none",
                   edgecolors="#c44e52", label="INVALID row", zorder=3)
    for passed, color in ((True, "#55a868"), (False, "#c44e52")):
        chosen = [p for p in probes if p["passed"] is passed]
        if chosen:
            ax.scatter([p["rate"] for p in chosen], [p["ttft_p99"] * 1e3 for p in chosen], color=color, zorder=4,
                       label=f"find_peak probe {'passed' if passed else 'failed'} (TTFT p99)")
    ax.set_yscale("log")
    ax.set(xlabel="offered rate (req/s)", ylabel="latency (ms, log)", title="latency vs rate")
    ax.legend(fontsize=7)
    return Plot("latency_vs_rate", "Latency vs offered rate (sweep / find_peak)", png_bytes(fig))


def schedule_lag(requests: list[dict], row: MetricsRow, bound_ms: float | None) -> Plot | None:
    sent = [r for r in requests if r["lag_s"] is not None]
    if not sent:
        return None
    fig = new_figure(7, 3.6)
    ax = fig.add_subplot()
    for source in sorted({r["source"] for r in sent}):
        mine = [r for r in sent if r["source"] == source]
        ax.scatter([r["schedule_start_s"] + r["arrival_s"] for r in mine], [max(r["lag_s"] * 1e3, 1e-3) for r in mine],
                   s=6, label=source)
    if bound_ms is not None:
        ax.axhline(bound_ms, color="#c44e52", linestyle="--", label=f"max_schedule_lag_ms {bound_ms:g} (p99)")
    ax.set_yscale("log")
    lag = f"p99 {row.schedule_lag_p99 * 1e3:.3g} ms" if row.schedule_lag_p99 is not None else ""
    ax.set(xlabel="scheduled send (s)", ylabel="actual - scheduled send (ms, log)",
           title=f"schedule lag {lag}, sent at {row.sent_ratio or 0:.3g} x the scheduled rate")
    ax.legend(fontsize=7, markerscale=2)
    return Plot("schedule_lag", "Schedule lag: did the clients keep up?", png_bytes(fig))


def server_metrics(samples: list[dict], requests: list[dict]) -> Plot | None:
    """The server's gauges over time (queue, running, KV cache) above each request's TTFT."""
    names = sorted({s["name"] for s in samples if any(k in s["name"] for k in PLOTTED_SERVER)})
    if not names:
        return None
    fig = new_figure(9, 5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for name in names:
        series: dict[float, float] = {}
        for s in samples:
            if s["name"] == name:
                series[s["t_s"]] = series.get(s["t_s"], 0.0) + s["value"]  # summed over labels (and URLs)
        t = sorted(series)
        top.plot(t, [series[x] for x in t], label=name)
    top.set(ylabel="server gauge", title="the server's metrics (Prometheus)")
    top.legend(fontsize=7)
    done = [r for r in requests if r["ttft_s"] is not None]
    bottom.scatter([r["schedule_start_s"] + r["arrival_s"] for r in done], [r["ttft_s"] * 1e3 for r in done], s=5)
    bottom.set(xlabel="time since the first schedule (s)", ylabel="TTFT (ms)")
    return Plot("server", "Server metrics beside TTFT", png_bytes(fig))


def endpoint_plots(run: RunFolder, row: MetricsRow, sweep_rows: Sequence[MetricsRow],
                   max_lag_ms: float | None) -> list[Plot]:
    table = run.read_table("requests.parquet")
    requests = table.to_pylist() if table is not None else []
    probes = run.read_table("find_peak.parquet")
    samples = run.read_table("server_metrics.parquet")
    plots = [latency_distributions(headline(requests, row), row),
             latency_vs_rate(sweep_rows, probes.to_pylist() if probes is not None else None),
             schedule_lag(requests, row, max_lag_ms),
             server_metrics(samples.to_pylist() if samples is not None else [], requests)]
    return [p for p in plots if p is not None]


def max_lag_bound(run: RunFolder) -> float | None:
    """The job's max_schedule_lag_ms, from the run's job.yaml."""
    import yaml

    try:
        verdict = (yaml.safe_load(run.read_text("job.yaml")) or {}).get("verdict") or {}
    except (OSError, yaml.YAMLError):
        return None
    from orchestrator.spec.verdict import VerdictSpec

    try:
        return VerdictSpec.model_validate(verdict).rules(0.0).max_schedule_lag_ms
    except ValueError:
        return None

