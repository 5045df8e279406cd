"""Versions of the software stack and digests of model files: what a result depends on."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Callable

from workers.storage.files import sha256_file, write_atomic

PACKAGES = ("torch", "ray", "transformers", "onnxruntime", "tensorrt", "pyarrow")
_HASH_CACHE = Path("~/.cache/raybench/file-digests.json").expanduser()


# distributions that provide a module under another name: ONNX Runtime's CUDA build, TensorRT's
# wheels per CUDA major (`tensorrt` itself is the CUDA-13 wheel from 11.x on, CUDA 12 before)
VARIANTS = {"onnxruntime": ("onnxruntime-gpu",), "tensorrt": ("tensorrt-cu11", "tensorrt-cu12", "tensorrt-cu13")}


def distributions_of(module: str) -> dict[str, str]:
    """{distribution name: version} of each installed distribution that provides `module`: its own
    and its GPU variants (VARIANTS). Looked up by name (a few ms), not by scanning every
    distribution's file list (a few hundred ms at every worker setup)."""
    found: dict[str, str] = {}
    for name in (module, *VARIANTS.get(module, ())):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def collect() -> dict[str, str]:
    """Package versions plus CUDA and driver where present (empty string when absent).

    A module's version is its own distribution's, else that of the variant that provides it
    (onnxruntime-gpu, tensorrt-cu12), so a GPU wheel is never a blank; each variant installed is
    also recorded under its own name, so two providers of one module (onnxruntime beside
    onnxruntime-gpu: both write the one `onnxruntime` folder) are both on record."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        providers = distributions_of(name)
        found[name] = providers.get(name) or next(iter(providers.values()), "")
        found.update({dist: version for dist, version in providers.items() if dist != name})
    import torch

    found["cuda"] = torch.version.cuda or ""
    found["nvidia_driver"] = _driver_version()
    return found


def _driver_version() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - no NVIDIA driver on this machine
        return ""


def _file_digest(path: Path, cache: dict[str, str]) -> str:
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if key not in cache:
        cache[key] = sha256_file(path)
    return cache[key]


def _local_folder(source: str, revision: str | None = None) -> Path | None:
    """A local folder as it is; a hub id's snapshot of `revision` (default branch when None) in
    the local Hugging Face cache; None when neither is here."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    try:  # a hub id already in the local Hugging Face cache
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: fall back to the name
        return None


def resolved_revision(source: str | None, revision: str | None) -> str | None:
    """The commit `revision` of a hub id resolves to where this machine's Hugging Face cache knows
    it (its snapshot folder is named by the commit), else the revision as written; None for a local
    folder (a folder is its files) or no source."""
    if source is None or Path(source).expanduser().exists():
        return None
    folder = _local_folder(source, revision)
    return folder.name if folder is not None else (revision or "default-branch")


def files_digest(source: str, gguf_file: str | None = None, include: Callable[[Path], bool] | None = None,
                 revision: str | None = None) -> str:
    """One digest over every file of a model folder (contents, cached by path/size/mtime), or over
    the files `include` accepts (the tokenizer's files in a folder that also holds the weights).

    A hub id is digested from its snapshot of `revision` in the local cache, with the resolved
    commit; one not cached from its name and revision. Files are named by their path inside the
    folder, so a file moved between subfolders (a second checkpoint beside the first) changes it.
    """
    folder = _local_folder(source, revision)
    if folder is None:
        return hashlib.sha256(f"hub:{source}:{gguf_file}:{revision}".encode()).hexdigest()[:16]
    try:
        cache = json.loads(_HASH_CACHE.read_text())
    except (OSError, ValueError):
        cache = {}
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    if gguf_file:
        files = [p for p in files if p.suffix != ".gguf" or p.name == gguf_file]
    if include is not None:
        files = [p for p in files if include(p)]
    commit = None if Path(source).expanduser().exists() else folder.name  # a snapshot is named by its commit
    total = hashlib.sha256(f"revision:{commit}".encode())
    for path in files:
        total.update((path.name if folder.is_file() else path.relative_to(folder).as_posix()).encode())
        total.update(_file_digest(path, cache).encode())
    try:
        _HASH_CACHE.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(_HASH_CACHE, json.dumps(cache).encode())
    except OSError:
        pass
    return total.hexdigest()[:16]
