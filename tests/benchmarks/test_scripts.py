"""Every script under benchmarks/ runs, in its tiny mode, and ends with its `name: value` line: a
benchmark broken by a change elsewhere (an import, a renamed function) fails here, not when someone
next measures a target with it. gpu_check.py has its own tests (test_gpu_check*.py): it needs a GPU
to measure anything, and they run its checks on a fake one."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
HAS_OWN_TESTS = {"gpu_check.py"}

pytestmark = pytest.mark.slow


def test_every_benchmark_script_is_run_here_or_has_its_own_tests():
    assert set(SCRIPTS) >= HAS_OWN_TESTS and len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s not in HAS_OWN_TESTS])
def test_a_benchmark_runs_in_its_tiny_mode_and_prints_its_headline(script):
    out = subprocess.run([sys.executable, f"benchmarks/{script}", "--tiny"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-4000:])
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[a-z0-9_]+: -?[\d.]+( \(target [^)]*\))?", last), last
