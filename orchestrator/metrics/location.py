"""Where results live: a local folder or any URI pyarrow's filesystems open, written whole.

`--results` takes what Ray's own `storage_path` takes: a local path, or `s3://bucket/prefix`,
`gs://bucket/prefix`, `hdfs://host:port/path`, with pyarrow's URI options where needed
(`s3://bucket/prefix?endpoint_override=http://10.0.0.9:9000&scheme=http` for MinIO and other
S3-compatible stores). Credentials and endpoints come from where each store's own client looks:
for S3, the AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL
or AWS_ENDPOINT_URL_S3, which pyarrow's AWS SDK reads), ~/.aws, or the machine's instance role.

Every file is written whole. An object store has no rename, but a PUT (and a multipart upload,
which is completed in one call) makes an object appear complete or not at all: a process killed
mid-write leaves nothing. Local disks and HDFS get a temporary name beside the target that is
renamed over it (fsync first on local disks), which is atomic there.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from workers.errors import UserError, first_line
from workers.storage.files import write_atomic

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_RENAMES = ("hdfs",)  # remote filesystems with an atomic rename: temporary name, then move

COPY_CHUNK = 1 << 20


def is_uri(text: str) -> bool:
    return bool(_URI.match(text))


def redact(uri: str) -> str:
    """The URI without a secret key written into it (s3://KEY:SECRET@bucket/...), for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def display_uri(uri: str) -> str:
    """The URI as messages show it: no secret, no options (`?endpoint_override=...`)."""
    return urlunsplit(urlsplit(redact(uri))._replace(query="", fragment="")).rstrip("/")


@dataclass(frozen=True)
class Location:
    """A file or folder in a results store.

    `path` is the filesystem's own path (an absolute local path, `bucket/prefix` on S3);
    `display` is what users read: the absolute path, or the URI without its options and secrets.
    """

    fs: pafs.FileSystem
    path: str
    display: str

    def child(self, *parts: str) -> "Location":
        rel = "/".join(parts)
        return Location(self.fs, f"{self.path.rstrip('/')}/{rel}", f"{self.display.rstrip('/')}/{rel}")

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rpartition("/")[2]

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def local_path(self) -> Path | None:
        return Path(self.path) if self.is_local else None

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def files(self, suffix: str = "") -> list["Location"]:
        """The files directly in this folder whose names end in `suffix`, by name; hidden and
        temporary files (leading `.` or `_`) are left out, as pyarrow's datasets do."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File)
        return [self.child(n) for n in names if n.endswith(suffix) and not n.startswith((".", "_"))]

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def write_bytes(self, data: bytes, durable: bool = True) -> None:
        """The whole file at once (see the module docstring for why each store is safe). `durable`:
        synced to a local disk before the rename (workers.storage.files.write_atomic)."""
        if self.is_local:
            target = Path(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data, durable)
        elif self.fs.type_name in _RENAMES:
            parent, _, name = self.path.rpartition("/")
            tmp = f"{parent}/.{name}.{os.getpid()}.tmp"
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, self.path)
        else:
            with self.fs.open_output_stream(self.path) as out:
                out.write(data)

    def copy_from(self, source: Path) -> None:
        """A local file copied here in chunks, never read whole (LoadGen's trace can be gigabytes)."""
        with open(source, "rb") as src, self.fs.open_output_stream(self.path) as out:
            shutil.copyfileobj(src, out, COPY_CHUNK)

    def check_writable(self) -> None:
        """Write and remove a probe file here: a results location that cannot be written is one line
        before any work starts, not a traceback after the run (a read-only folder, /proc, a bucket
        without write permission, a missing bucket)."""
        probe = self.child(f".raybench-write-check-{os.getpid()}")
        made = self._missing_local_folders()
        try:
            probe.write_bytes(b"", durable=False)
            self.fs.delete_file(probe.path)
        except (OSError, pa.ArrowException) as exc:
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise UserError(f"--results: cannot write to {self.display} ({reason}); give a folder or URI you can "
                            "write to") from exc
        finally:
            for folder in made:  # the check leaves no folder behind: the run makes its own
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def _missing_local_folders(self) -> list[Path]:
        """The local folders a write here would create, deepest first."""
        if not self.is_local:
            return []
        missing, folder = [], Path(self.path)
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        return missing

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def write_table(self, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        self.write_bytes(buffer.getvalue())

    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path, filesystem=self.fs, columns=columns)


def open_location(text: str | Path) -> Location:
    """A local folder (made absolute, `~` expanded) or a URI pyarrow opens; a bad URI is one line."""
    text = str(text)
    if text.startswith("file://"):
        text = urlsplit(text).path
    if not is_uri(text):
        path = str(Path(text).expanduser().resolve())
        return Location(pafs.LocalFileSystem(), path, path)
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, OSError, ValueError) as exc:
        secret = urlsplit(text).password
        cause = first_line(exc).replace(secret, "***") if secret else first_line(exc)
        raise UserError(f"--results {redact(text)}: cannot open it ({cause}); give a local folder or a "
                        "URI pyarrow opens (s3://bucket/prefix, gs://bucket/prefix, hdfs://host:port/path)") from exc
    return Location(fs, path.rstrip("/"), display_uri(text))
