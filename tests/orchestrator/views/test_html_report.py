"""Reports of a run folder written by the real store: both files exist, the HTML stands alone."""

import base64
from html.parser import HTMLParser

import pyarrow as pa

from orchestrator.metrics.store import ResultsStore
from orchestrator.views.html_report import subject_accuracies, subject_accuracy, sweep_plot, write_report
from tests.builders import metrics_row, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_PNG = "data:image/png;base64,"


class Resources(HTMLParser):
    """Every attribute that could load something from outside the file, and the <img> sources."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            if tag == "img" and name == "src":
                self.images.append(value)
            elif name in ("src", "href", "srcset", "data"):
                self.external.append((tag, name, value))


def parse(html_text: str) -> Resources:
    parser = Resources()
    parser.feed(html_text)
    return parser


def test_report_files_exist_and_html_embeds_every_image(tmp_path):
    rows = [write_run(tmp_path / "results", name="sweep", bs=bs, seed=bs, batches=40) for bs in (8, 16, 32)]
    row = rows[1]
    run = ResultsStore(tmp_path / "results").run(row.run_id)
    md_path, html_path = write_report(run, row, tmp_path / "report", sweep_rows=rows)

    assert md_path.exists() and html_path.exists()
    page = html_path.read_text(encoding="utf-8")
    found = parse(page)
    # latency histogram, throughput per worker/node, throughput vs bs, accuracy per subject
    assert len(found.images) == 4
    for src in found.images:
        assert src.startswith(DATA_PNG)
        assert base64.b64decode(src.removeprefix(DATA_PNG), validate=True).startswith(PNG_MAGIC)
    assert found.external == [] and not {"script", "link", "iframe"} & found.tags
    assert row.run_id in page and "p_infer_core" in page and "2.13.0" in page  # table and environment

    markdown = md_path.read_text(encoding="utf-8")
    assert "| config | engine | precision | bs |" in markdown  # the seed table from report.metrics_markdown
    for name in ("latency", "throughput", "sweep", "subjects"):
        assert f"](report-{name}.png)" in markdown
        assert (tmp_path / "report" / f"report-{name}.png").read_bytes().startswith(PNG_MAGIC)


def test_single_run_without_predictions_has_two_plots_and_shows_the_verdict(tmp_path):
    row = write_run(tmp_path / "results", name="one", batches=20)
    run = ResultsStore(tmp_path / "results").run(row.run_id)
    (run.path / "predictions.parquet").unlink()
    row = row.model_copy(update=dict(verdict="INVALID", verdict_reasons="measured 0.2 s < min_duration_s 1 (quick)", latency_cv=0.1))
    md_path, html_path = write_report(run, row, tmp_path / "out", sweep_rows=[row])
    page = html_path.read_text(encoding="utf-8")
    assert len(parse(page).images) == 2
    assert "INVALID: measured 0.2 s &lt; min_duration_s 1 (quick)" in page
    assert "latency_cv | 0.1 |" in md_path.read_text(encoding="utf-8")


def test_subject_accuracy_needs_its_columns_and_sweep_needs_two_bs():
    assert subject_accuracy(pa.table({"pass": ["infer"], "correct": [True]})) is None
    assert subject_accuracy(pa.table({"pass": ["infer"], "subject": ["a"], "correct": [True]})) is not None
    same_bs = [metrics_row(engine="torch", precision="fp32", seq_len=128, bs=8, p_infer_core=v) for v in (1.0, 2.0)]
    assert sweep_plot(same_bs, "seq") is None
    assert sweep_plot([same_bs[0], same_bs[1].model_copy(update=dict(bs=16))], "seq") is not None


def test_subject_accuracy_is_pooled_per_pass_and_subject():
    table = pa.table({
        "pass": ["val", "val", "val", "infer", "infer", "infer"],
        "subject": ["law", "law", "math", "law", "law", "math"],
        "correct": [True, False, True, True, True, False],
    })
    assert subject_accuracies(table) == {("val", "law"): 0.5, ("val", "math"): 1.0, ("infer", "law"): 1.0,
                                         ("infer", "math"): 0.0}
