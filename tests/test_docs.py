"""The README and docs/ as a reader meets them: short front page, the set-up commands CI runs,
and links that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def fenced_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def test_readme_is_short_and_opens_with_the_two_set_up_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    run_main, run_tests = fenced_blocks(text)[:2]
    assert run_main.strip().endswith("bench submit jobs/smoke.yaml")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for line in run_tests.strip().splitlines():  # .ci/run calls exactly the README's test command
        assert line in ci, line


def test_every_relative_link_in_the_docs_names_a_file_that_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).resolve().exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {Path(t).name for t in LINK.findall(text)}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, sorted(pages - linked)
