"""Installed distributions for tests: a `<name>-<version>.dist-info` folder with its METADATA on a
temporary sys.path entry, which `importlib.metadata` reads as it reads a pip-installed wheel's.
Only the metadata is there (no module): what raybench asks the installation, not the library."""

from __future__ import annotations

from pathlib import Path


def install_dist(monkeypatch, root: Path, name: str, version: str) -> Path:
    """Make `name` (e.g. "tensorrt-cu12") at `version` an installed distribution for this test."""
    folder = root / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(root))
    return folder
