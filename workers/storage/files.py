"""Local files shared by several writers: an exclusive lock, atomic replacement, content digests.

One place for each, because the results folder, the engine cache and the digest cache all need the
same guarantees: a reader sees the old file or the new one, never half of one (write to a temporary
name beside it, fsync, `os.replace`, which is atomic on POSIX), and writers of one thing on one node
take turns on an `flock` that dies with its process (a crashed writer never blocks the next one).

A folder shared by several nodes (a cache on NFS) has no lock that holds across them: an `flock`
excludes the processes of one node only (NFS may not pass it on at all), so two nodes can build
the same entry at once. The folder a builder publishes is then either its own or a winner's that
got there first (`publish_folder`), and either is the same entry.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BLOCK = 1 << 22  # 4 MiB reads: model files are GBs; this keeps memory flat and syscalls few


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def temporary_beside(path: Path) -> Path:
    """A name in the same folder (so `os.replace` stays on one filesystem), unique per process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def replace_durably(tmp: Path, path: Path) -> None:
    """fsync `tmp`, then move it over `path` in one step."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def publish_folder(tmp: Path, dest: Path) -> bool:
    """Move the finished folder `tmp` to `dest` in one step. False when `dest` was published by
    another writer meanwhile (rename(2) onto a non-empty folder fails with ENOTEMPTY, or EEXIST on
    some filesystems): `tmp` is then removed and the caller uses the winner's folder."""
    try:
        os.replace(tmp, dest)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not dest.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Written (and synced) through one open file, then renamed over `path`. `durable=False` skips
    the fsync: the file still appears whole or not at all to any process, and survives the writer's
    death (the kernel holds it), but a machine crash may leave it empty; an fsync costs 1-3 ms on
    the project's VM, more than everything else a driver does per shard."""
    tmp = temporary_beside(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def update_digest(digest: "hashlib._Hash", path: Path) -> None:
    """Feed a file's bytes into `digest`, a block at a time."""
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            digest.update(block)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    update_digest(digest, path)
    return digest.hexdigest()
