"""`bench report RUN_ID`: one run as a Markdown file and a self-contained HTML page, with plots.

The HTML carries its plots as base64 PNG data URIs and its style inline, so it can be mailed or
attached to a ticket as one file. The Markdown links the same PNGs, written beside it.
Plots use matplotlib's object API (`Figure`, Agg canvas) rather than pyplot: no global figure
state, no display backend, safe to call from any thread.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pyarrow as pa

from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.cost_fit import node_core_rates, shard_rates_from_records, worker_core_rates
from orchestrator.metrics.stats import percentiles
from orchestrator.metrics.store import ResultsStore, RunFolder
from orchestrator.metrics.subjects import subject_table
from orchestrator.views.endpoint_plots import ENDPOINT, endpoint_plots, max_lag_bound
from orchestrator.views.endpoint_view import LAYOUT as ENDPOINT_LAYOUT
from orchestrator.views.endpoint_view import cells as endpoint_cells
from orchestrator.views.endpoint_view import endpoint_markdown, is_endpoint
from orchestrator.views.generation_plots import GENERATION, generation_plots, is_generation
from orchestrator.views.plots import Plot, new_figure, png_bytes
from orchestrator.views.report import SEED_LAYOUT, metrics_markdown, seed_cells
from orchestrator.views.scenario_plots import LOADGEN, is_scenario, scenario_plots

if TYPE_CHECKING:
    pass

ENVIRONMENT = (
    "devices", "workers", "nodes", "precision_effective", "mem_source", "torch_version", "transformers_version",
    "ray_version", "python_version", "cuda_version", "driver_version", "engine_hash", "engine_cache_hit",
    "data_time", "data_cache_hit", "data_prepared_on",
)
LATENCY = ("warmup_batches", "measured_batches", "latency_mean", "latency_p50", "latency_p90", "latency_p99",
           "latency_cv", "repeats", "p_infer_core_ci_low", "p_infer_core_ci_high", "p_infer_whole_ci_low",
           "p_infer_whole_ci_high")


def latency_histogram(latencies_s: Sequence[float], pass_name: str) -> Plot | None:
    """Per-batch core latency; the percentile lines use the same function as the metrics row."""
    if not latencies_s:
        return None
    ms = [t * 1e3 for t in latencies_s]
    fig = new_figure(7, 3.5)
    ax = fig.add_subplot()
    ax.hist(ms, bins="auto", color="#4c72b0")
    for q, value, style in zip((50, 90, 99), percentiles(ms), ("-", "--", ":")):
        ax.axvline(value, color="black", linestyle=style, label=f"p{q} {value:.3g} ms")
    ax.set(xlabel="core latency per batch (ms)", ylabel="batches", title=f"{pass_name}: {len(ms)} measured batches")
    ax.legend()
    return Plot("latency", "Per-batch latency (core)", png_bytes(fig))


def throughput_bars(shard_records: list[dict], pass_name: str, unit: str) -> Plot | None:
    rates = shard_rates_from_records(shard_records, pass_name)
    workers, nodes = worker_core_rates(rates), node_core_rates(rates)
    if not workers:
        return None
    fig = new_figure(9, 3.5)
    left, right = fig.subplots(1, 2, width_ratios=[max(len(workers), 2), max(len(nodes), 2)])
    left.bar([f"w{w}" for w in workers], list(workers.values()), color="#4c72b0")
    left.set(title="per worker", ylabel=f"{pass_name} core {unit}/s")
    right.bar([n[:12] for n in nodes], list(nodes.values()), color="#55a868")
    right.set(title="per node")
    return Plot("throughput", "Throughput per worker and node (core)", png_bytes(fig))


def sweep_plot(rows: Sequence[MetricsRow], unit: str) -> Plot | None:
    """p_infer_core against bs, one line per (engine, precision, seq_len) of the sweep."""
    lines: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if row.p_infer_core is not None:
            key = f"{row.engine} {row.precision} seq {row.seq_len}"
            lines.setdefault(key, []).append((int(row.bs), float(row.p_infer_core)))
    if not any(len({bs for bs, _ in points}) > 1 for points in lines.values()):
        return None
    fig = new_figure(7, 3.5)
    ax = fig.add_subplot()
    for key, points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
    ax.set_xscale("log", base=2)
    sizes = sorted({bs for points in lines.values() for bs, _ in points})
    ax.set_xticks(sizes, [str(bs) for bs in sizes])
    ax.minorticks_off()
    ax.set(xlabel="bs", ylabel=f"p_infer_core ({unit}/s)", title="throughput vs batch size")
    ax.legend()
    return Plot("sweep", "Throughput vs batch size (sweep)", png_bytes(fig))


def subject_accuracies(predictions: pa.Table) -> dict[tuple[str, str], float]:
    """(pass, subject) -> accuracy, from the same per-subject table the CLI and metrics.md print."""
    if not {"subject", "correct", "pass"} <= set(predictions.column_names):
        return {}
    records = predictions.select(["pass", "subject", "correct"]).to_pylist()
    return {(name, row.name): row.accuracy for name in sorted({r["pass"] for r in records})
            for row in subject_table(r for r in records if r["pass"] == name)}


def subject_accuracy(predictions: pa.Table) -> Plot | None:
    acc = subject_accuracies(predictions)
    if not acc:
        return None
    subjects = sorted({s for _, s in acc})
    passes = sorted({p for p, _ in acc}, reverse=True)  # val above infer
    fig = new_figure(7, 1 + 0.25 * len(subjects) * len(passes))
    ax = fig.add_subplot()
    height = 0.8 / len(passes)
    for i, name in enumerate(passes):
        ys = [s + i * height for s in range(len(subjects))]
        ax.barh(ys, [acc.get((name, s), 0.0) for s in subjects], height=height, label=name)
    ax.set_yticks([s + 0.4 - height / 2 for s in range(len(subjects))], subjects, fontsize=7)
    ax.set(xlim=(0, 1), xlabel="accuracy", title="accuracy per subject")
    ax.invert_yaxis()
    ax.legend()
    return Plot("subjects", "Accuracy per subject (MMLU)", png_bytes(fig))


def collect_plots(run: RunFolder, row: MetricsRow, sweep_rows: Sequence[MetricsRow]) -> list[Plot]:
    if is_endpoint(row) and not is_scenario(row):
        return endpoint_plots(run, row, sweep_rows, max_lag_bound(run))
    if is_endpoint(row):  # LoadGen against a server: LoadGen's plots, and its samples' requests
        return [p for p in scenario_plots(run, row) + generation_plots(run, row) if p is not None]
    unit = row.item_unit or "items"
    plots: list[Plot | None] = []
    shards = run.read_table("shards.parquet")
    if shards is not None:
        records = shards.to_pylist()
        pass_name = "infer" if any(r["pass"] == "infer" for r in records) else "val"
        latencies = [t for r in records if r["pass"] == pass_name for t in r["batch_core_seconds"]]
        plots += [latency_histogram(latencies, pass_name), throughput_bars(records, pass_name, unit)]
    plots.append(sweep_plot(sweep_rows, unit))
    predictions = run.read_table("predictions.parquet")
    if predictions is not None:
        plots.append(subject_accuracy(predictions))
    plots += scenario_plots(run, row)
    plots += generation_plots(run, row)
    return [p for p in plots if p is not None]


def _value(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _pairs(row: MetricsRow, keys: Sequence[str]) -> list[tuple[str, str]]:
    return [(k, _value(getattr(row, k))) for k in keys]


def _verdict_line(row: MetricsRow) -> str | None:
    verdict = row.verdict
    if not verdict:
        return None
    reasons = row.verdict_reasons
    return f"{verdict}" + (f": {reasons}" if reasons else "")


def _sections(row: MetricsRow) -> list[tuple[str, Sequence[str]]]:
    """The key-value tables after the verdict: LoadGen's figures first for a scenario run."""
    loadgen = [("LoadGen (latencies in s per query)", LOADGEN)] if is_scenario(row) else []
    if is_endpoint(row):
        return loadgen + [("Endpoint (latencies in s, from the scheduled send unless 'sent')", ENDPOINT)]
    generation = [("Generation (latencies in s per request; items are output tokens)", GENERATION)] \
        if is_generation(row) else []
    return loadgen + generation + [("Latency (s per batch) and repeats", LATENCY), ("Environment", ENVIRONMENT)]


def _markdown(row: MetricsRow, plots: list[Plot]) -> str:
    out = [f"# {row.job} · {row.run_id}", "",
           f"{row.task} · {row.model} · {row.data} · {row.timestamp}", "",
           "## Metrics", "", endpoint_markdown([row]) if is_endpoint(row) else metrics_markdown([row])]
    if (line := _verdict_line(row)) is not None:
        out += ["## Verdict", "", line, ""]
    for title, keys in _sections(row):
        out += [f"## {title}", "", "| | |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in _pairs(row, keys)] + [""]
    for plot in plots:
        out += [f"## {plot.title}", "", f"![{plot.title}](report-{plot.name}.png)", ""]
    return "\n".join(out)


def _html_table(rows: Sequence[Sequence[str]]) -> str:
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{body}</table>"


# The seed's 15 columns do not fit one table row at 1280 px (the device list alone wrapped into five
# lines), so they are label/value tiles that wrap onto as many lines as the page needs. Long values
# without spaces (a node list, an engine hash) may break anywhere rather than push the page wider.
STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}table{border-collapse:collapse}"
         "td{border:1px solid #ccc;padding:2px 8px;text-align:right;overflow-wrap:anywhere}"
         "td:first-child{white-space:nowrap}"
         ".seed{display:flex;flex-wrap:wrap;gap:4px;margin:0}"
         ".seed div{flex:none;max-width:100%;box-sizing:border-box;border:1px solid #ccc;padding:2px 8px}"
         ".seed dt{font-weight:bold}.seed dd{margin:0;overflow-wrap:anywhere}"
         "img{max-width:100%}.INVALID{color:#b00}.VALID{color:#070}")


def _seed_tiles(cells: dict[str, str]) -> str:
    """The seed's columns in its order, each a label over its value; `config` lists one device
    kind per line ("8x NVIDIA H100 80GB HBM3" stays whole)."""
    tiles = []
    for column in SEED_LAYOUT:
        lines = cells[column].split(", ") if column == "config" else [cells[column]]
        value = "<br>".join(html.escape(line) for line in lines)
        tiles.append(f"<div><dt>{html.escape(column)}</dt><dd>{value}</dd></div>")
    return f"<dl class='seed'>{''.join(tiles)}</dl>"


def _html(row: MetricsRow, plots: list[Plot]) -> str:
    cells = seed_cells(row)
    title = html.escape(f"{row.job} · {row.run_id}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style>"
             f"</head><body><h1>{title}</h1>",
             f"<p>{html.escape(' · '.join(str(getattr(row, k)) for k in ('task', 'model', 'data', 'timestamp')))}</p>",
             "<h2>Metrics</h2>"]
    if is_endpoint(row):
        shown = endpoint_cells(row)
        parts += [_html_table([(c, shown[c]) for c in ENDPOINT_LAYOUT])]
    else:
        parts += [_seed_tiles(cells), f"<p>p_* in {html.escape(str(cells['_unit']))}/s; acc = infer/val; mem = "
                  f"peak/total GiB ({html.escape(str(cells['_mem_source']))}); e2e_time in s.</p>"]
    if (line := _verdict_line(row)) is not None:
        parts.append(f"<h2>Verdict</h2><p class='{html.escape(str(row.verdict))}'>{html.escape(line)}</p>")
    for heading, keys in _sections(row):
        parts += [f"<h2>{heading}</h2>", _html_table(_pairs(row, keys))]
    for plot in plots:
        data = base64.b64encode(plot.png).decode("ascii")
        parts.append(f"<h2>{html.escape(plot.title)}</h2><img alt='{html.escape(plot.title)}' "
                     f"src='data:image/png;base64,{data}'>")
    return "\n".join(parts) + "\n</body></html>\n"


def write_report(
    run: RunFolder, row: MetricsRow, out_dir: str | Path, sweep_rows: Sequence[MetricsRow] = ()
) -> tuple[Path, Path]:
    """Write report.md (+ its PNGs) and report.html for one run into a local folder. `sweep_rows`
    are all rows of its sweep (the row itself included) for the throughput-vs-bs plot."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = collect_plots(run, row, sweep_rows)
    for plot in plots:
        (out_dir / f"report-{plot.name}.png").write_bytes(plot.png)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(_markdown(row, plots), encoding="utf-8")
    html_path.write_text(_html(row, plots), encoding="utf-8")
    return md_path, html_path


def report_run(results_dir: str | Path, run_id: str, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """`bench report RUN`: find the run's row (and its sweep's rows) and write the report: by
    default beside the run in a local results folder, and in ./report-<run id> when the results
    are on an object store (a report is for opening in a browser, which reads local files)."""
    import pyarrow.compute as pc

    from orchestrator.views.query import find_row

    store = ResultsStore(results_dir)
    row = find_row(store, run_id)
    table = store.read_metrics()
    sweep = ([MetricsRow.from_record(r) for r in table.filter(pc.equal(table["sweep_id"], row.sweep_id)).to_pylist()]
             if row.sweep_id else [row])
    run = store.run(row.run_id)
    local = run.root.local_path
    default = local / "report" if local is not None else Path(f"report-{row.run_id}")
    return write_report(run, row, out_dir or default, sweep)
