"""Apply a small overlay of site fields to a Ray cluster config; print the merged YAML.

    python scripts/overlay_yaml.py cluster.yaml scripts/loopback_overlay.yaml NAME=VALUE ... > merged.yaml

The overlay says only what differs, so the rest of the shipped config is what gets tested:
  - a mapping merges into the base's mapping, key by key;
  - `{replace: {old: new, ...}}` edits the base's string, or each string of its list, in place
    (YAML aliases of that list see the edit too); an `old` found nowhere is an error, so an
    overlay cannot silently stop applying when the shipped config changes;
  - any other value replaces the base's.
`{{NAME}}` in the overlay's text becomes VALUE from the command line before parsing; a placeholder
left without a value is an error. (`{{...}}`, not `$NAME`, because the commands hold shell variables.)
"""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml

REPLACE = "replace"


class OverlayError(Exception):
    pass


def fill(text: str, values: dict[str, str]) -> str:
    missing = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)) - set(values))
    if missing:
        raise OverlayError(f"overlay placeholders without a value: {', '.join(missing)}")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], text)


def replace_in(base: Any, edits: dict[str, str], where: str) -> Any:
    if isinstance(base, str):
        strings = [base]
    elif isinstance(base, list) and all(isinstance(s, str) for s in base):
        strings = base
    else:
        raise OverlayError(f"{where}: `replace` needs a string or a list of strings in the base config")
    for old, new in edits.items():
        if not any(old in s for s in strings):
            raise OverlayError(f"{where}: {old!r} is not in the base config (has cluster.yaml changed?)")
        for i, s in enumerate(strings):
            strings[i] = s.replace(old, str(new))
    return strings[0] if isinstance(base, str) else base


def merge(base: Any, overlay: Any, where: str = "") -> Any:
    if isinstance(overlay, dict) and set(overlay) == {REPLACE}:
        return replace_in(base, overlay[REPLACE], where or "/")
    if isinstance(overlay, dict) and isinstance(base, dict):
        for key, value in overlay.items():
            base[key] = merge(base.get(key), value, f"{where}.{key}" if where else str(key))
        return base
    return overlay


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    base_path, overlay_path, *pairs = argv
    values = dict(pair.split("=", 1) for pair in pairs)
    try:
        with open(base_path) as fh:
            base = yaml.safe_load(fh)
        with open(overlay_path) as fh:
            overlay = yaml.safe_load(fill(fh.read(), values))
        merged = merge(base, overlay)
    except (OSError, yaml.YAMLError, OverlayError) as exc:
        print(f"overlay_yaml: {exc}", file=sys.stderr)
        return 2
    yaml.safe_dump(merged, sys.stdout, sort_keys=False, width=1000)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
