"""Lazy lookup of the implementation a spec's options name (engines and tasks alike).

The options classes in `workers/specs.py` are the registry: each names its implementation as a
"module:Class" string, resolved with importlib only where it runs (the actor), so the driver never
imports tensorrt, and a missing optional library fails in one line naming the extra to install.
Names were already checked when the spec was validated, so there is no unknown-name path here.
"""

from __future__ import annotations

import importlib
from typing import Any

from workers.errors import UserError
from workers.specs import Registered


def resolve(kind: str, options: Registered, implementation: str | None = None) -> Any:
    """Import and return the class `options` names (an ImportError names the pip extra); `implementation`:
    another "module:Class" of the same options (an engine's `generator`)."""
    module_name, _, attr = (implementation or options.implementation).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or str(exc)
        how = f": pip install 'raybench[{options.extra}]'" if options.extra else ""
        raise UserError(f"{kind} '{options.registered_name()}' needs the Python package '{missing}', "
                        f"which is not installed{how}") from exc
    return getattr(module, attr)
