"""Lazy name -> implementation lookup shared by the engine and task registries.

The registries map the names users write in YAML to "module:Class" strings, resolved with importlib
only where the implementation runs (the actor), so the driver never imports tensorrt and a missing
optional library fails in one line naming the extra to install.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from workers.errors import UserError


def unknown_name(kind: str, name: str, known: list[str]) -> UserError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean: {close[0]}?" if close else f" Known: {', '.join(sorted(known))}."
    return UserError(f"Unknown {kind} '{name}'.{hint}")


def resolve(kind: str, name: str, table: dict[str, str], extras: dict[str, str] | None = None) -> Any:
    """Import and return the object registered under `name`.

    `extras` maps a name to the pip extra that provides its third-party library, so an ImportError
    becomes "engine 'onnxruntime' needs onnxruntime: pip install 'raybench[onnx]'".
    """
    if name not in table:
        raise unknown_name(kind, name, list(table))
    module_name, _, attr = table[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or str(exc)
        extra = (extras or {}).get(name)
        how = f": pip install 'raybench[{extra}]'" if extra else ""
        raise UserError(f"{kind} '{name}' needs the Python package '{missing}', which is not installed{how}") from exc
    return getattr(module, attr)
