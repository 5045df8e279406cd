"""The worker runs in the command's own process without Ray: how GPU figures are taken on a box
where Ray is not installed (the lent GPU machines have no Ray)."""

import subprocess
import sys

from tests.builders import stored_rows

CODE = """
import sys
sys.modules["ray"] = None  # any `import ray` now raises ImportError, as on a machine without Ray
from orchestrator.spec import load_spec
from orchestrator.driver import run_job
row = run_job(load_spec("jobs/smoke.yaml", ["workers=1", "data.synthetic.size=64"]),
              results_dir=sys.argv[1], in_process=True).row
print(row.items_infer, row.workers, row.nodes)
"""


def test_a_job_runs_in_process_where_ray_cannot_be_imported(tmp_path):
    out = subprocess.run([sys.executable, "-c", CODE, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["64", "1", "1"]
    assert len(stored_rows(tmp_path)) == 1


def test_a_failed_engine_build_keeps_its_log_and_adds_no_row(tmp_path, monkeypatch):
    import pytest

    from orchestrator.driver import run_job
    from orchestrator.spec import load_spec
    from workers.engines import BuildFailed
    from workers.engines.onnxruntime import OnnxRuntime
    from workers.errors import UserError

    def broken_build(self, ctx):
        raise BuildFailed("engine: onnxruntime could not build the session: invalid graph",
                          detail="[builder] line 1\n[builder] node 7: invalid graph\n")

    monkeypatch.setattr(OnnxRuntime, "build", broken_build)
    spec = load_spec("jobs/smoke.yaml", ["workers=1", "engine=onnxruntime", "data.synthetic.size=64"])
    with pytest.raises(UserError) as err:
        run_job(spec, results_dir=tmp_path, in_process=True)
    message = str(err.value)
    assert message.startswith("engine: onnxruntime could not build the session: invalid graph")
    (log,) = tmp_path.glob("runs/*/build-w0.log")
    assert f"builder log: {log}" in message
    assert "node 7: invalid graph" in log.read_text()
    assert stored_rows(tmp_path) == []
