"""The engine cache: built artifacts (ONNX exports, ONNX Runtime models, TensorRT plans, compile caches).

An entry is a folder named `<kind>-<key>` under the cache root, where the key is a digest of
everything the artifact depends on (`key_fields`): the model files' hash, precision, the shape
profile (min/opt/max per input), the task's input signature, the engine's name and options, the
versions of the libraries that produced it and the device it was built for. Any change in these
gives another key, hence a rebuild; nothing is ever invalidated in place.

Entries are looked up, built once per node and published whole by the generic folder cache
(`workers/folder_cache.py`, shared with the data cache), which also says what happens when two
nodes sharing a cache on NFS build one entry at once.

`build_seconds` in a BuildInfo is the time spent building on a miss and 0.0 on a hit (what
`MetricsRow.build_time` documents); the time to load a hit goes in the BuildInfo's `log`.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import torch

from workers.device import cpu_name
from workers.folder_cache import META, Entry, FolderCache, cache_key  # noqa: F401 - the engines' names for them

Profile = dict[str, dict[str, list[int]]]  # input name -> {"min"|"opt"|"max": shape}


def library_version(package: str) -> str:
    """Installed version of `package` ('' when absent): part of every key it produced."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def device_name(device: torch.device) -> str:
    """The name of the device an artifact is built for (GPU model, or CPU model and core count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def shape_profile(signature: Any, bs: int, seq_len: int, min_bs: int = 1, min_seq_len: int = 1,
                  opt_seq_len: int | None = None) -> Profile:
    """min/opt/max shape per input; axes named 'batch' follow bs, every other dynamic axis seq_len.

    max = the job's (bs, seq_len). opt, the shape the kernels are tuned for, is bs and
    `opt_seq_len`: the prepared data's median length (a batch's padded length is about its
    prompts' length, MMLU's batches being length-sorted), which for fixed-length work is seq_len.
    Tuning for the longest prompt (4,096 tokens) would serve MMLU's median prompt (~540) badly.
    """
    profile: Profile = {}
    for name, axes in signature.inputs.items():
        rank = max(axes) + 1 if axes else 0
        low, opt, high = [0] * rank, [0] * rank, [0] * rank
        for axis in range(rank):
            batch = axes.get(axis) == "batch"
            low[axis] = min(min_bs, bs) if batch else min(min_seq_len, seq_len)
            high[axis] = bs if batch else seq_len
            typical = seq_len if opt_seq_len is None else opt_seq_len
            opt[axis] = bs if batch else max(low[axis], min(typical, seq_len))
        profile[name] = {"min": low, "opt": opt, "max": high}
    return profile


def key_fields(ctx: Any, engine: str, options: Any, libraries: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Everything an engine artifact built from `ctx` depends on (see the module docstring)."""
    fields: dict[str, Any] = {
        "engine": engine,
        "options": options.model_dump() if hasattr(options, "model_dump") else options,
        "model": ctx.model_files_hash(),
        "causal": ctx.causal,
        "precision": ctx.precision,
        "signature": {name: {str(a): n for a, n in axes.items()} for name, axes in ctx.signature.inputs.items()},
        "libraries": dict(libraries, torch=torch.__version__, transformers=library_version("transformers")),
        "device": device_name(ctx.device),
    }
    fields.update(extra)
    return fields


EngineCache = FolderCache  # the engine cache is the generic folder cache under engine keys
