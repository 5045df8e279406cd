"""`bench report` of a generate run: the TTFT and TPOT distributions with the row's percentiles, output
tokens per second over the run, and the generation section, from the run folder's requests.parquet."""

from orchestrator.driver import run_job
from orchestrator.spec import validate
from orchestrator.views.generation_plots import tokens_over_time
from orchestrator.views.html_report import report_run
from tests.orchestrator.modes.offline.test_generation import generate_job


def test_a_generate_runs_report_has_its_latency_distributions_and_tokens_over_time(tmp_path):
    row = run_job(validate(generate_job(16, 4, 0.1, 2.0), "t"), results_dir=tmp_path, in_process=True).row
    md, html = report_run(tmp_path, row.run_id)
    names = {p.name for p in md.parent.glob("report-*.png")}
    assert {"report-ttft.png", "report-tpot.png", "report-tokens_over_time.png"} <= names
    text = md.read_text()
    assert "## Generation (latencies in s per request; items are output tokens)" in text
    assert f"| ttft_p99 | {row.ttft_p99:.6g} |" in text and "Time to first token" in html.read_text()


def test_tokens_per_second_over_time_counts_every_token_in_its_bin():
    plot = tokens_over_time([[0.0, 0.5, 1.0], [1.2, 1.9]], bin_s=1.0)
    assert plot is not None and plot.png.startswith(b"\x89PNG")
    assert tokens_over_time([[0.0]]) is None


def test_the_submits_generation_line_names_the_rows_latencies(tmp_path):
    from orchestrator.views.report import generation_line

    row = run_job(validate(generate_job(8, 8, 0.25, 2.0), "t"), results_dir=tmp_path, in_process=True).row
    line = generation_line(row)
    assert line.startswith("8 requests (16.0 prompt / 8.0 output tokens on average, greedy)")
    assert f"TTFT p50/p90/p99 {row.ttft_p50 * 1e3:.4g}/" in line and "0 of 4 differ" in line  # the default check: 3 %, at least 4
