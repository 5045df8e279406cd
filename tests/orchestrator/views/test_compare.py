"""`bench compare` on runs written by the real store: a planted 2x slowdown is flagged, a rerun is not."""

from rich.console import Console

from orchestrator.metrics.store import ResultsStore
from orchestrator.views.compare import (
    batch_latencies,
    compare,
    compare_runs,
    config_changes,
    deltas_markdown,
    deltas_table,
)
from tests.builders import metrics_row, write_run


def by_column(deltas):
    return {d.column: d for d in deltas}


def test_planted_2x_slowdown_is_beyond_noise(tmp_path):
    base = write_run(tmp_path, name="base", latency_s=0.010, seed=11)
    slow = write_run(tmp_path, name="slow", latency_s=0.020, seed=12)
    row_a, row_b, deltas = compare_runs(tmp_path, base.run_id, slow.run_id)
    assert (row_a.run_id, row_b.run_id) == (base.run_id, slow.run_id)
    d = by_column(deltas)
    for column in ("p_infer_core", "infer_time", "latency_p50", "latency_p90", "latency_mean"):
        assert d[column].verdict == "beyond noise", (column, d[column])
    assert d["p_infer_core"].relative < -0.4 and d["p_infer_core"].improved is False
    assert d["latency_p50"].relative > 0.8 and d["latency_p50"].improved is False
    assert "Mann-Whitney" in d["p_infer_core"].basis
    # single figures per run have no noise estimate, whatever their change
    assert d["p_infer_whole"].verdict == "n/a" and d["e2e_time"].verdict == "unchanged"
    assert d["MFU"].verdict == "n/a"  # CPU rows: no MFU on either side


def test_rerun_of_the_same_job_is_within_noise(tmp_path):
    first = write_run(tmp_path, name="first", latency_s=0.010, seed=21)
    rerun = write_run(tmp_path, name="rerun", latency_s=0.010, seed=22)
    _, _, deltas = compare_runs(tmp_path, first.run_id, rerun.run_id)
    assert not [d.column for d in deltas if d.verdict == "beyond noise"]
    assert by_column(deltas)["p_infer_core"].verdict == "within noise"


def test_repeats_use_confidence_intervals(tmp_path):
    a = metrics_row(p_infer_core=100.0, repeats=3, p_infer_core_ci_low=98.0, p_infer_core_ci_high=102.0,
                    p_infer_whole=90.0, p_infer_whole_ci_low=89.0, p_infer_whole_ci_high=91.0)
    apart = a.model_copy(update=dict(p_infer_core=110.0, p_infer_core_ci_low=108.0, p_infer_core_ci_high=112.0,
                                     p_infer_whole=91.5, p_infer_whole_ci_low=90.5, p_infer_whole_ci_high=92.5))
    d = by_column(compare(a, apart, [], []))
    assert d["p_infer_core"].verdict == "beyond noise" and d["p_infer_core"].improved
    assert "95% CIs" in d["p_infer_core"].basis
    assert d["p_infer_whole"].verdict == "within noise"  # the intervals overlap
    # CIs apart but a 1 % change: below the effect floor
    close = a.model_copy(update=dict(p_infer_core=101.0, p_infer_core_ci_low=100.5, p_infer_core_ci_high=101.5))
    tight = a.model_copy(update=dict(p_infer_core_ci_high=100.2))
    assert by_column(compare(tight, close, [], []))["p_infer_core"].verdict == "within noise"
    # one side without repeats: no CI, and no latencies either
    single = apart.model_copy(update=dict(repeats=1))
    assert by_column(compare(a, single, [], []))["p_infer_core"].verdict == "n/a"


def test_config_changes_and_renderers(tmp_path):
    a = write_run(tmp_path, name="a", bs=8, seed=31, batches=40)
    b = write_run(tmp_path, name="b", bs=16, seed=32, batches=40)
    assert ("bs", "8", "16") in config_changes(a, b) and ("job", "a", "b") in config_changes(a, b)
    latencies = [batch_latencies(ResultsStore(tmp_path).run(r.run_id)) for r in (a, b)]
    assert len(latencies[0]) == 40
    deltas = compare(a, b, *latencies)
    markdown = deltas_markdown(deltas).splitlines()
    assert markdown[0].startswith("| column | A | B | B - A | relative | verdict |")
    assert len(markdown) == 2 + len(deltas) and any("p_infer_core" in line for line in markdown)
    console = Console(record=True, width=220)
    console.print(deltas_table(deltas, title="a vs b"))
    text = console.export_text()
    assert "a vs b" in text and "p_infer_core" in text


def test_batch_latencies_of_a_folder_without_shards_is_empty(tmp_path):
    assert batch_latencies(ResultsStore(tmp_path).run("no-shards")) == []


def test_mmlu_runs_with_different_prompts_are_never_compared_silently():
    from orchestrator.views.compare import prompt_warning

    new = metrics_row(task="mmlu", scoring="lm-eval", prompt_format="lm-eval-mmlu-default@0.4.13")
    old = metrics_row(task="mmlu", scoring="lm-eval", prompt_format=None)  # stored before the column existed
    assert ("prompt_format", "None", "lm-eval-mmlu-default@0.4.13") in config_changes(old, new)
    warning = prompt_warning(old, new)
    assert warning.startswith("warning: the runs used different MMLU prompts (A: unrecorded")
    assert "B: lm-eval-mmlu-default@0.4.13" in warning and "not comparable" in warning
    assert prompt_warning(new, new) is None
    assert prompt_warning(metrics_row(), metrics_row(task="masked_lm")) is None


def test_bench_compare_prints_the_prompt_warning(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    old = metrics_row(run_id="20250101-000000-old-000001", task="mmlu", prompt_format=None)
    new = metrics_row(run_id="20250102-000000-new-000002", task="mmlu", prompt_format="lm-eval-mmlu-default@0.4.13")
    ResultsStore(tmp_path).append_rows([old, new])
    out = CliRunner().invoke(app, ["compare", "old-000001", "new-000002", "--results", str(tmp_path)]).output
    assert "warning: the runs used different MMLU prompts" in out and "prompt_format: None ->" in out
