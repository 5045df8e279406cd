"""A cache of built folders on disk: looked up by key, built once per node, published whole.

An entry is a folder named `<kind>-<key>` under the cache root, where the key is a digest of
everything the entry depends on (the caller's `fields`); any change gives another key, hence a
build, and nothing is ever invalidated in place. The engine cache (workers/engines/cache.py: ONNX
exports, TensorRT plans, compile caches) and the data cache (workers/data/dataprep.py: prepared tables)
are both this one class.

Entries are built in a temporary folder beside the root and published with one rename, so a reader
sees a complete entry or none. Builders of the same key on one node (several worker actors sharing
a cache folder) serialise on an `flock` of `<kind>-<key>.lock`: the first builds, the others wait,
then load. The lock dies with its process, so a crashed builder never blocks the next one. Builders
on different nodes sharing a cache on NFS are not serialised (the lock is per node): both build,
the first to publish wins, and the other drops its copy and uses the winner's entry.

Light on purpose (no torch): the driver looks entries up to know whether a run's data is already
prepared (orchestrator/cluster/data.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from workers.contract import BuildInfo
from workers.storage.files import exclusive_lock, publish_folder, update_digest

META = "meta.json"
_NOT_ARTIFACTS = (".json", ".log")  # an entry's notes (metadata, builder and check logs)


def cache_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Entry:
    """A published cache entry: its folder, whether it was found (not built), and its metadata."""

    path: Path
    hit: bool
    key: str
    meta: dict[str, Any]

    def build_info(self, engine: str, seconds: float) -> BuildInfo:
        """BuildInfo for an engine made from this entry; `seconds` is the build (miss) or load (hit) time."""
        log = f"loaded from cache {self.path} in {seconds:.3f} s" if self.hit else f"built into cache {self.path}"
        return BuildInfo(
            engine=engine, build_seconds=0.0 if self.hit else seconds, cache_hit=self.hit,
            engine_bytes=self.meta["bytes"], engine_hash=self.meta["sha256"], cache_key=self.key, log=log,
        )


def _digest(folder: Path) -> tuple[int, str, list[str]]:
    """(bytes, sha256 prefix, names) of an entry's artifact files, in name order."""
    total, digest, names = 0, hashlib.sha256(), []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(_NOT_ARTIFACTS)):
        names.append(path.name)
        total += path.stat().st_size
        update_digest(digest, path)
    return total, digest.hexdigest()[:16], names


class FolderCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}"

    def lookup(self, kind: str, key: str) -> Entry | None:
        folder = self.path(kind, key)
        try:
            meta = json.loads((folder / META).read_text())
        except (OSError, ValueError):
            return None
        return Entry(folder, True, key, meta)

    def get_or_build(self, kind: str, fields: dict[str, Any], build: Callable[[Path], None]) -> Entry:
        """The entry for `fields`, built by `build(folder)` (which writes its files there) if absent."""
        key = cache_key(fields)
        found = self.lookup(kind, key)
        if found is not None:
            return found
        with exclusive_lock(self.root / f"{kind}-{key}.lock"):
            found = self.lookup(kind, key)  # another worker may have built it while we waited
            if found is not None:
                return found
            return self._publish(kind, key, fields, build)

    def _publish(self, kind: str, key: str, fields: dict[str, Any], build: Callable[[Path], None]) -> Entry:
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{kind}-{key}-", dir=self.root))
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        try:
            t0 = time.perf_counter()
            build(tmp)
            size, sha, names = _digest(tmp)
            meta = {"key": key, "fields": fields, "files": names, "bytes": size, "sha256": sha,
                    "built_at": time.time(), "build_seconds": time.perf_counter() - t0}
            (tmp / META).write_text(json.dumps(meta, indent=1, default=str))
            if not publish_folder(tmp, self.path(kind, key)):  # another node published it first: use theirs
                winner = self.lookup(kind, key)
                if winner is None:
                    raise RuntimeError(f"cache entry {self.path(kind, key)} exists without its {META}; remove it")
                meta = winner.meta
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Entry(self.path(kind, key), False, key, meta)
