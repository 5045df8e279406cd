"""The house's guards: docs/layout.md names every module and nothing that is gone, every module
imports, and the driver names no mode (each way to run a job is a plug: orchestrator/modes/)."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "workers")


def modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if p.name != "__init__.py"}


def drawn() -> set[str]:
    """Every file the tree in docs/layout.md draws: two spaces of indent per folder level."""
    text = (ROOT / "docs" / "layout.md").read_text()
    tree = text.split("## The tree", 1)[1].split("```")[1]
    paths, stack = set(), []
    for line in tree.splitlines():
        match = re.match(r"^( *)(\S+)", line)
        if not match:
            continue
        depth, name = len(match.group(1)) // 2, match.group(2)
        stack[depth:] = [name]
        if name.endswith(".py"):
            paths.add("".join(stack))
    return {p for p in paths if p.startswith(PACKAGES)}


def test_docs_layout_draws_every_module_and_nothing_stale():
    assert drawn() == modules(), {"missing from docs/layout.md": sorted(modules() - drawn()),
                                  "drawn but gone": sorted(drawn() - modules())}


@pytest.mark.parametrize("path", sorted(modules()))
def test_every_module_imports(path):
    importlib.import_module(path.removesuffix(".py").replace("/", "."))


def test_the_driver_names_no_mode():
    """Which mode runs a point is the job's `load.kind`, looked up in modes.MODES: the driver
    mentions no mode, scenario or LoadGen (a new way to run a job needs no change there)."""
    from orchestrator.modes import MODES

    code = (ROOT / "orchestrator" / "driver.py").read_text().lower()
    named = [word for word in [*MODES, "scenario", "mlperf", "shard"] if word in code]
    assert named == [], named
    assert set(MODES) == {"offline", "loadgen", "endpoint"}


def test_every_load_kind_has_a_mode_and_each_mode_has_the_same_shape():
    from orchestrator.modes import MODES, mode_for
    from orchestrator.spec.load import LOAD_KINDS

    assert set(LOAD_KINDS) == set(MODES)
    for kind in MODES:
        assert mode_for(kind).__name__ == "run_point"
