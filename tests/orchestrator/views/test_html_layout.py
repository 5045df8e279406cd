"""The HTML report in a real browser: at 1280 px nothing runs off the right edge.

Layout is the browser's to compute, so this opens the report in headless Chromium (installed by the
README's test block: `apt-get install chromium`) and reads the page's own measurements back. The
report is of a run written by the real store and merge (tests/builders.write_run), with the values
that made it overflow: a mixed fleet's device list, wide throughputs with CIs, many data nodes.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.metrics.store import ResultsStore
from orchestrator.views.html_report import write_report
from tests.builders import write_run

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium): "
                                "the layout check needs a real browser")

DEVICES = "8x NVIDIA H100 80GB HBM3, 8x NVIDIA A100-SXM4-80GB"
NODES = ",".join(f"10.0.12.{100 + n}" for n in range(16))

# Runs once the page and its images have loaded; writes what the browser measured into an attribute,
# which --dump-dom prints (an attribute changes no layout). `right`: the rightmost edge of any element,
# so content clipped or scrolled inside a box counts too. `config_lines`: lines of the device cell;
# `label_lines`: the most lines of a name in the two-column tables (a squeezed label breaks mid-word).
PROBE = """<script>addEventListener('load', () => {
  const root = document.documentElement, all = [...document.body.querySelectorAll('*')];
  const lines = (e) => {
    const range = document.createRange(); range.selectNodeContents(e);
    return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
  };
  const cell = [...document.querySelectorAll('th,td,dt')].find(e => e.textContent.trim() === 'config');
  const value = !cell ? null : cell.tagName === 'TH'
    ? cell.closest('table').rows[1].cells[cell.cellIndex] : cell.nextElementSibling;
  document.body.setAttribute('data-layout', JSON.stringify({
    scroll_width: root.scrollWidth, client_width: root.clientWidth, inner_width: innerWidth,
    right: Math.max(...all.map(e => e.getBoundingClientRect().right)), config_lines: value ? lines(value) : 0,
    label_lines: Math.max(...[...document.querySelectorAll('td:first-child')].map(lines))}));
});</script>"""


def measure(page: Path, tmp_path: Path, width: int) -> dict:
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},900",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    found = re.search(r"data-layout=\"([^\"]*)\"", dom)
    assert found, f"the probe did not run; Chromium printed: {dom[:500]}"
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_report_fits_a_1280_px_window_and_devices_stay_one_per_line(tmp_path):
    row = write_run(tmp_path / "results", name="fleet", batches=40)
    run = ResultsStore(tmp_path / "results").run(row.run_id)
    row = row.model_copy(update=dict(
        devices=DEVICES, workers=16, nodes=4, precision="fp16", precision_effective="bf16",
        p_infer_core=12_345_678.9, p_infer_core_ci_low=12_345_000.0, p_infer_core_ci_high=12_346_000.0,
        p_infer_whole=1_234_567.8, p_infer_whole_ci_low=1_234_000.0, p_infer_whole_ci_high=1_235_000.0,
        p_val_core=9_876_543.2, p_val_whole=987_654.3, mem=71.53, mem_total=79.6, mem_source="nvml-process",
        verdict="INVALID", data_prepared_on=NODES, engine_hash="9f" * 32,
    ))
    _, page = write_report(run, row, tmp_path / "report", sweep_rows=[row])

    layout = measure(page, tmp_path, 1280)

    assert layout["inner_width"] == 1280
    assert layout["scroll_width"] == layout["client_width"], layout  # no horizontal scroll
    assert layout["right"] <= layout["client_width"], layout  # nothing clipped past the edge either
    assert layout["config_lines"] == 2, layout  # one line per device kind, not one per word
    assert layout["label_lines"] == 1, layout  # long values wrap, the names beside them do not
