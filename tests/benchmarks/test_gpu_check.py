"""benchmarks/gpu_check.py as CI runs it: on the CPU, tiny shapes, without Ray, so it cannot rot.

The script runs in a subprocess where `import ray` fails (as on a lone GPU machine without Ray).
On this CPU machine every GPU-only check must say SKIPPED with its reason, and the checks that can
run here (accuracy of both paths against each other, no KV cache) must pass.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU_ONLY = {"timer", "memory", "MFU", "energy", "device watch"}


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_without_ray(tmp_path):
    no_ray = tmp_path / "no_ray" / "ray"
    no_ray.mkdir(parents=True)
    (no_ray / "__init__.py").write_text("raise ImportError('no Ray on this machine')\n")
    env = dict(os.environ, PYTHONPATH=f"{no_ray.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               CUDA_VISIBLE_DEVICES="")
    env.pop("OUT", None)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "gpu_check_failed: 0"
    report = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# gpu_check on CPU")
    assert report["meta"]["gpu"] is False
    cases = {r["figures"]["case"]: r for r in report["results"]}
    assert set(cases) == {"tiny-bert/torch", "tiny-bert/torch_compile", "tiny-llama/torch"}
    for name, case in cases.items():
        figures, checks = case["figures"], {c["name"]: c for c in case["checks"]}
        assert figures["core_ratio"] > 0 and figures["whole_ratio"] > 0 and figures["plain_core"] > 0
        assert figures["items"] > 0 and figures["mem_source"] == "cpu-rss-peak"
        for gpu_only in GPU_ONLY:
            assert checks[gpu_only]["status"] == "SKIPPED" and checks[gpu_only]["detail"], (name, gpu_only)
        assert checks["accuracy"]["status"] == "PASS"
        assert figures["acc_plain"] == figures["acc_infer"]  # same weights, same batches, fp32 on one CPU
    assert cases["tiny-bert/torch"]["figures"]["acc_plain"] > 0  # 4 ordinary tokens: not a trivial 0 = 0
    assert {c["name"]: c["status"] for c in cases["tiny-llama/torch"]["checks"]}["kv cache"] == "PASS"
    for name, case in cases.items():  # MFU against the measured peak is defined on the CPU
        checks = {c["name"]: c for c in case["checks"]}
        assert checks["measured peak"]["status"] == "PASS" and 0 < case["figures"]["MFU_measured"] < 1, name
    llama = {c["name"]: c for c in cases["tiny-llama/torch"]["checks"]}
    assert llama["invariance"]["status"] == "PASS" and cases["tiny-llama/torch"]["figures"]["invariance_flips"] == 0
    assert {c["name"]: c["status"] for c in cases["tiny-bert/torch"]["checks"]}["invariance"] == "SKIPPED"
