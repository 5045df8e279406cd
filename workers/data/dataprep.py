"""Data preparation: read, tokenise, mask, build prompts, once per run and version of the inputs.

`prepare_dataset` runs the task's pure `prepare` (one Arrow table, one row per example) once, where
the driver puts it (orchestrator/cluster/data.py: a Ray task on the node that has the data, or the
command's own process with --no-ray), and the workers get the table by reference.

The table is cached on disk beside the engine cache (`data_cache`, default ~/.cache/raybench/data),
as one Arrow IPC file per entry, keyed by everything it is made from: the data files' digest, the
tokenizer's files, the task options, seq_len and seed, the model's vocabulary size and positions,
the model's revision (the commit it resolves to where the Hugging Face cache knows it: two
revisions of one hub id never share an entry), the tokenizer libraries' versions and the
preparation code itself (so a change to how prompts are built is a new key, never a stale hit).
Entries are published by rename under a lock (the folder cache the engine cache uses too,
workers/storage/folder_cache.py), so a reader sees a whole entry or none. A hit is read memory-mapped.
Synthetic data is generated, not read: it is never cached.

Light at import (no torch): the driver imports this module to hand `prepare_dataset` to Ray.
"""

from __future__ import annotations

import hashlib
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa

from workers.contract import DataInfo
from workers.errors import UserError
from workers.specs import ModelSpec, WorkerConfig

DEFAULT_DATA_CACHE = Path("~/.cache/raybench/data")
DATA_FILE = "data.arrow"
CACHE_KIND = "data"
FORMAT_VERSION = 1
# Files that decide how data is prepared: any change to them is a new cache key.
CODE_FILES = ("data/dataprep.py", "models.py", "tasks/*.py")  # relative to workers/
# Model weights in a folder that also holds the tokenizer: not part of the tokenizer's identity.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".data", ".gguf")


def prepare_dataset(config: WorkerConfig) -> tuple[DataInfo, pa.Table]:
    """The job's prepared table, from the cache or made now, and what the driver needs to know."""
    from workers.data.package_files import on_this_machine
    from workers.models import load_config
    from workers.tasks import read_task_metadata, task_class

    wall0, cpu0 = time.perf_counter(), time.process_time()
    config = on_this_machine(config)  # pkg: paths name files on the machine that prepares
    model_config = load_config(config.model)
    task = task_class(config.task)
    if config.data.synthetic is not None:
        table, hit, key = build_table(config, model_config), None, None
    else:
        table, hit, key = _cached_table(config, model_config)
    costs = task.costs(table, model_config)
    info = DataInfo(
        num_examples=table.num_rows, fingerprint=read_task_metadata(table)["fingerprint"], item_unit=task.item_unit,
        costs=None if costs is None else [float(c) for c in costs], cache_hit=hit, cache_key=key,
        seconds=time.perf_counter() - wall0, cpu_seconds=time.process_time() - cpu0, table_bytes=table.nbytes,
        **_where(),
    )
    return info, table


def build_table(config: WorkerConfig, model_config: Any) -> pa.Table:
    """Run the task's preparation: what every worker did in its constructor before issue 13."""
    from workers.models import load_tokenizer
    from workers.tasks import task_class

    tokenizer = load_tokenizer(config.model)
    return task_class(config.task).prepare(config.task, config.data, tokenizer, model_config, config.seq_len,
                                           config.seed)


def _cached_table(config: WorkerConfig, model_config: Any) -> tuple[pa.Table, bool, str]:
    from workers.storage.folder_cache import FolderCache

    def build(folder: Path) -> None:
        write_table(folder / DATA_FILE, build_table(config, model_config))

    entry = FolderCache(cache_root(config)).get_or_build(CACHE_KIND, key_fields(config, model_config), build)
    return read_table(entry.path / DATA_FILE), entry.hit, entry.key


def cached_here(config: WorkerConfig) -> bool:
    """Whether this machine's data cache already holds the job's prepared table, judged without
    torch or transformers (the driver asks, to know whether the data needs a preparation process):
    the key is made from the model's declared config (the random mapping, a local folder's
    config.json). False when that does not say (a hub model, a GGUF), when the data is synthetic,
    or when the loaded config would differ; a hit found here is a hit for the preparer too."""
    from workers.data.package_files import on_this_machine
    from workers.models import declared_config
    from workers.storage.folder_cache import FolderCache, cache_key

    if config.data.synthetic is not None:
        return False
    config = on_this_machine(config)
    declared = declared_config(config.model)
    if declared is None or declared.get("vocab_size") is None or not Path(config.data.path).expanduser().exists():
        return False
    return FolderCache(cache_root(config)).lookup(CACHE_KIND, cache_key(key_fields(config, declared))) is not None


def cache_root(config: WorkerConfig) -> Path:
    return Path(config.data_cache or DEFAULT_DATA_CACHE).expanduser()


def key_fields(config: WorkerConfig, model_config: Any) -> dict[str, Any]:
    """Everything a prepared table is made from (see the module docstring). `model_config` is the
    loaded config, or the declared one as a mapping (`cached_here`): only two of its values count."""
    from workers.measure.versions import files_digest, resolved_revision
    from workers.models import max_positions

    declared = isinstance(model_config, dict)
    vocab_size = model_config.get("vocab_size") if declared else getattr(model_config, "vocab_size", None)
    path = Path(config.data.path).expanduser()
    if not path.exists():
        raise UserError(f"data.path: '{config.data.path}' does not exist")
    return {
        "format": FORMAT_VERSION,
        "code": code_digest(),
        "task": config.task.model_dump(mode="json"),
        "data": files_digest(str(path)),
        "tokenizer": tokenizer_identity(config.model),
        "revision": resolved_revision(config.model.source, config.model.revision),
        "seq_len": config.seq_len,
        "seed": config.seed,
        "model": {"vocab_size": vocab_size, "max_positions": max_positions(model_config)},
        "libraries": {name: _version(name) for name in ("transformers", "tokenizers", "numpy", "pyarrow")},
    }


def tokenizer_identity(spec: ModelSpec) -> str | None:
    """Digest of the tokenizer's files (weights beside them left out); None without a tokenizer."""
    from workers.measure.versions import files_digest

    name = spec.tokenizer or spec.source or (spec.random if isinstance(spec.random, str) else None)
    if name is None:
        return None
    gguf = spec.gguf_file if name == spec.source else None

    def tokenizer_file(path: Path) -> bool:
        return path.name == gguf or not path.name.endswith(WEIGHT_SUFFIXES)

    named_file = Path(name).expanduser().is_file()  # a vocab.txt or .gguf file: that file is the tokenizer
    revision = spec.revision if name == spec.source else None  # what load_tokenizer asks the hub for
    return files_digest(name, gguf, include=None if named_file else tokenizer_file, revision=revision)


def code_digest() -> str:
    here = Path(__file__).resolve().parents[1]  # workers/
    digest = hashlib.sha256()
    for path in sorted(p for pattern in CODE_FILES for p in here.glob(pattern)):
        digest.update(path.relative_to(here).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def write_table(path: Path, table: pa.Table) -> None:
    """One Arrow IPC file holding the table as a single record batch (workers then slice, never copy)."""
    table = table.combine_chunks()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_table(path: Path) -> pa.Table:
    """The table, memory-mapped: pages are read as they are touched."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def _where() -> dict[str, Any]:
    import os

    from workers.measure.device import node_identity

    node_id, hostname = node_identity()
    try:
        import ray

        if ray.is_initialized():
            return {"node_id": node_id, "where": ray.util.get_node_ip_address(), "pid": os.getpid()}
    except ImportError:
        pass
    return {"node_id": node_id, "where": hostname, "pid": os.getpid()}
