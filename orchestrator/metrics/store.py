"""The results store: the global metrics table and one folder per run, local or on an object store.

    <results>/metrics/<UTC time>-<run_id>.parquet   the global table: one file per run, holding its
                                                    row(s), read together as one pyarrow dataset
    <results>/metrics.parquet                       the table as raybench wrote it before: read as the
                                                    first fragment of the same dataset, never rewritten
    <results>/runs/<run_id>/                        run.json, job.yaml, shards/<pass>-<shard>.json (as they
                                                    finish), shards.parquet, workers.parquet, metrics.md,
                                                    predictions.parquet (mmlu), retries.parquet

`<results>` is a local folder or a URI (s3://bucket/prefix, ...; see `location.py`). Object
stores have no rename and no lock, so an append never touches another run's file: each run adds
its own object, written whole, and the table is whatever files are there. Two runs that finish
together both land, without a lock; a run killed before its row was written leaves no row (the
row is the last thing a run writes). File names start with the UTC time of the write, so the
table reads back in the order the rows were added.

A run has one row. `append_rows` refuses a second row of a run that has one (a resume of a run
that had finished), and since two writers of one run cannot lock each other out of an object
store, reading keeps only the first row written for each run id, so the table never shows two.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import types
import typing
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from orchestrator.metrics.location import Location, is_uri, open_location, redact
from orchestrator.metrics.row import MetricsRow
from workers.contract import DecodeTotals, DeviceHealth, ShardResult, WorkerError, WorkerInfo
from workers.errors import UserError, first_line
from workers.requests import RequestError, RequestRecord

log = logging.getLogger(__name__)

LEGACY_METRICS_FILE = "metrics.parquet"
METRICS_FOLDER = "metrics"
_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
_last_stamp_ns = 0


def row_schema() -> pa.Schema:
    """Arrow schema of MetricsRow, so every row has the same column types (nulls included)."""
    fields = []
    for name, field in MetricsRow.model_fields.items():
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        base = args[0] if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else annotation
        fields.append(pa.field(name, _ARROW[base]))
    return pa.schema(fields)


def _stamp() -> str:
    """UTC time to the microsecond, strictly increasing within this process (names sort as written)."""
    global _last_stamp_ns
    ns = max(time.time_ns(), _last_stamp_ns + 1000)
    _last_stamp_ns = ns
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9)) + f"{ns % 10**9 // 1000:06d}Z"


class ResultsStore:
    """`results` is a local folder or a URI; `uri` reopens the same store from another process
    (an absolute local path, or the URI as given), `location` is what messages show."""

    def __init__(self, results: str | Path) -> None:
        self.root = open_location(results)
        self.uri = str(results) if is_uri(str(results)) else self.root.path

    @property
    def location(self) -> str:
        return self.root.display

    def check_writable(self) -> None:
        """One line now, before any work, where the store cannot be written (metrics/location.py)."""
        self.root.check_writable()

    @property
    def shown_uri(self) -> str:
        """`uri` with any secret written into it masked: for commands printed back to the user."""
        return redact(self.uri)

    def append_rows(self, rows: list[MetricsRow]) -> None:
        """One new file per run: never a read-modify-write, so concurrent writers need no lock."""
        schema = row_schema()
        by_run: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_run.setdefault(row.run_id, []).append(row.model_dump())
        for run_id in by_run:
            if self.has_row(run_id):
                raise UserError(f"run {run_id} already has its row in {self.location}: a run has one row; nothing added")
        for run_id, records in by_run.items():
            table = pa.Table.from_pylist(records, schema=schema)
            self.root.child(METRICS_FOLDER, f"{_stamp()}-{run_id}.parquet").write_table(table)

    def metric_files(self) -> list[Location]:
        legacy = self.root.child(LEGACY_METRICS_FILE)
        return ([legacy] if legacy.exists() else []) + self.root.child(METRICS_FOLDER).files(".parquet")

    def has_rows(self) -> bool:
        return bool(self.metric_files())

    def has_row(self, run_id: str) -> bool:
        """Whether the table holds the row of `run_id`: by the files' names (`<stamp>-<run id>.parquet`,
        the stamp of fixed width), reading only an old single-file table."""
        if any(_run_of(f.name) == run_id for f in self.root.child(METRICS_FOLDER).files(".parquet")):
            return True
        legacy = self.root.child(LEGACY_METRICS_FILE)
        return legacy.exists() and run_id in legacy.read_table(["run_id"]).column("run_id").to_pylist()

    def read_metrics(self) -> pa.Table:
        """Every row, oldest first, in this version's schema: columns an older raybench did not
        write are null, columns a newer one added are left out."""
        schema = row_schema()
        files = self.metric_files()
        if not files:
            return schema.empty_table()
        try:
            table = ds.dataset([f.path for f in files], schema=schema, filesystem=self.root.fs, format="parquet").to_table()
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"results store {self.location}: {self._unreadable(files) or first_line(exc)}") from exc
        return _first_row_of_each_run(table)

    def _unreadable(self, files: list[Location]) -> str | None:
        for f in files:
            try:
                f.read_table()
            except (pa.ArrowException, OSError) as exc:
                return f"{f.display} is not a readable metrics file ({first_line(exc)}); move it out of the store"
        return None

    def run(self, run_id: str) -> "RunFolder":
        return RunFolder(self.root.child("runs", run_id))


class RunFolder:
    def __init__(self, root: Location) -> None:
        self.root = root

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def location(self) -> str:
        return self.root.display

    def check_writable(self) -> None:
        """One line now, before any work, where the store cannot be written (metrics/location.py)."""
        self.root.check_writable()

    @property
    def path(self) -> Path | str:
        """The folder as a local Path, or as the store's URI-style name where it is not local."""
        return self.root.local_path or self.root.display

    def file(self, name: str) -> Location:
        return self.root.child(name)

    def exists(self) -> bool:
        return self.has("job.yaml")

    def create(self, job_yaml: str, started_at: float, sweep_id: str | None = None,
               weights_fetched_on: list[str] | None = None) -> None:
        """The resolved spec and the run's start (epoch s), so a resumed run can add up its time,
        and the nodes that downloaded the weights before the workers started."""
        meta = {"run_id": self.run_id, "started_at": started_at, "sweep_id": sweep_id,
                "weights_fetched_on": weights_fetched_on or []}
        self.file("run.json").write_text(json.dumps(meta))
        self.file("job.yaml").write_text(job_yaml)

    def has(self, name: str) -> bool:
        return self.file(name).exists()

    def read_text(self, name: str) -> str:
        return self.file(name).read_text()

    def write_text(self, name: str, text: str) -> str:
        """Write a file of the run; returns where it went, for messages."""
        self.file(name).write_text(text)
        return self.file(name).display

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table | None:
        """One of the run's tables, or None when the run has none (a run without predictions)."""
        target = self.file(name)
        return target.read_table(columns) if target.exists() else None

    # -- shard results, one file each, as they finish
    def save_shard(self, result: ShardResult) -> None:
        """Not synced (durable=False): a shard file is work a resume would otherwise redo, and it
        survives the driver's death; syncing each one would cap a driver at a few hundred shards a
        second (benchmarks/dispatch_scale.py). A file a machine crash left empty is redone."""
        self.file(f"shards/{result.key}.json").write_bytes(json.dumps(_shard_record(result)).encode(), durable=False)

    def load_shards(self) -> list[ShardResult]:
        """The saved shards; one whose file cannot be read (a machine crash right after it was
        written) is left out, so a resume runs it again."""
        loaded = []
        for f in self.root.child("shards").files(".json"):
            try:
                loaded.append(_shard_from_json(json.loads(f.read_text())))
            except (ValueError, TypeError) as exc:
                log.warning("shard file %s cannot be read (%s): its shard runs again", f.path, first_line(exc))
        return loaded

    # -- tables written when the run completes
    def write_shards_table(self, results: list[ShardResult], infos: list[WorkerInfo]) -> None:
        devices = {i.worker_id: i.device for i in infos}
        rows = [
            {
                "pass": r.pass_name, "repeat": r.repeat, "shard_id": r.shard_id, "start": r.start, "stop": r.stop,
                "attempt": r.attempt,
                "worker_id": r.worker_id,
                "node_id": r.node_id, "device": devices.get(r.worker_id, ""), "device_name": r.device_name,
                "pid": r.pid, "examples": r.examples, "items": r.items, "scored": r.scored, "correct": r.correct,
                "core_seconds": r.core_seconds, "h2d_seconds": r.h2d_seconds, "wall_seconds": r.wall_seconds,
                "start_ts": r.start_ts, "end_ts": r.end_ts, "batches": len(r.batch_core_seconds),
                "warmup_batches": r.warmup_batches, "peak_mem_bytes": r.peak_mem_bytes,
                "mem_source": r.mem_source, "batch_core_seconds": r.batch_core_seconds,
            }
            for r in sorted(results, key=lambda r: (r.pass_name != "val", r.repeat, r.shard_id))
        ]
        self.file("shards.parquet").write_table(pa.Table.from_pylist(rows))

    def write_workers_table(self, infos: list[WorkerInfo]) -> None:
        rows = [
            {
                "worker_id": i.worker_id, "node_id": i.node_id, "hostname": i.hostname, "pid": i.pid,
                "device": i.device, "device_name": i.device_name, "load_seconds": i.load_seconds,
                "data_seconds": i.data_seconds, "build_seconds": i.build.build_seconds if i.build else None,
                "engine_cache_hit": i.build.cache_hit if i.build else None,
                "precision_effective": i.precision_effective, "peak_flops": i.peak_flops, "tp": i.tp,
                "peak_flops_measured": i.peak_flops_measured,
                "rank_nodes": [r.node_id for r in i.rank_list()], "rank_pids": [r.pid for r in i.rank_list()],
                "rank_devices": [f"{r.device} {r.device_name}" for r in i.rank_list()],
            }
            for i in infos
        ]
        self.file("workers.parquet").write_table(pa.Table.from_pylist(rows))

    def write_records(self, name: str, records: list[dict[str, Any]]) -> None:
        if records:
            self.file(name).write_table(pa.Table.from_pylist(records))


STAMP_WIDTH = len("20261203T094950123456Z")  # what _stamp() writes


def _run_of(file_name: str) -> str:
    """The run id in a metrics file's name `<stamp>-<run id>.parquet`."""
    return file_name[STAMP_WIDTH + 1:].removesuffix(".parquet")


def _first_row_of_each_run(table: pa.Table) -> pa.Table:
    """The table without the later rows of a run id seen before (two drivers that finished one run)."""
    seen: set[str] = set()
    keep = [i for i, run_id in enumerate(table.column("run_id").to_pylist()) if not (run_id in seen or seen.add(run_id))]
    return table if len(keep) == table.num_rows else table.take(keep)


class ShardSaver:
    """Saves finished shards into the run folder off the dispatch loop, a few at a time.

    Each save is durable (an fsync on a local disk, ~0.5 ms; a PUT on an object store, tens of ms)
    and at 4,096 workers thousands of shards finish each second: done in the loop, the saves would
    be the driver's whole cost (benchmarks/dispatch_scale.py). The threads spend that time waiting
    on the disk or the network, not holding the GIL. `close` waits for every save, so the shards
    are on disk before the row is written or a failure is reported; a save that failed is raised by
    the next `save` or by `check`.
    """

    THREADS = 8

    def __init__(self, run: RunFolder) -> None:
        self.run = run
        self._threads = ThreadPoolExecutor(self.THREADS, thread_name_prefix="raybench-save")
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()

    def save(self, result: ShardResult) -> None:
        self.check()
        self._threads.submit(self.run.save_shard, result).add_done_callback(self._done)

    def _done(self, future: Future) -> None:
        if future.exception() is not None:
            with self._lock:
                self._errors.append(future.exception())

    def check(self) -> None:
        if self._errors:
            raise self._errors[0]

    def close(self) -> None:
        self._threads.shutdown(wait=True)


def _shard_record(result: ShardResult) -> dict[str, Any]:
    """The shard as JSON-ready data. `dataclasses.asdict` would deep-copy every list element one by one
    (most of a save's CPU time); json reads the lists as they are, and only the error and the device
    health are dataclasses."""
    record = dict(vars(result))
    for name in ("error", "health", "decode"):
        value = record[name]
        record[name] = dataclasses.asdict(value) if value is not None else None
    record["requests"] = [_request_record(r) for r in result.requests]
    return record


def _request_record(record: RequestRecord) -> dict[str, Any]:
    out = dict(vars(record))
    out["error"] = dataclasses.asdict(record.error) if record.error is not None else None
    return out


def _shard_from_json(data: dict[str, Any]) -> ShardResult:
    error = data.pop("error", None)
    health = data.pop("health", None)  # absent in shards saved before it existed
    decode = data.pop("decode", None)
    requests = [RequestRecord(**dict(r, error=RequestError(**r["error"]) if r.get("error") else None))
                for r in data.pop("requests", [])]
    return ShardResult(**data, error=WorkerError(**error) if error else None,
                       health=DeviceHealth(**health) if health else None,
                       decode=DecodeTotals(**decode) if decode else None, requests=requests)
