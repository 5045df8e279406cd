"""The results folder: the global metrics table and one folder per run.

    <results>/metrics.parquet         one row per run and configuration (the global table)
    <results>/runs/<run_id>/          job.yaml, shards.parquet, workers.parquet, metrics.md,
                                      predictions.parquet (mmlu), shards/<pass>-<shard>.json (as they finish)

Appends to metrics.parquet take an exclusive `flock` on a lock file beside it, read the table,
add the row and write a temporary file that replaces the old one with `os.replace` (atomic on
POSIX): a crash leaves either the old table or the new one, never half a file, and two runs that
finish together both land (the lock serialises them). Shard results are written one file each,
also by rename, as they finish, so a killed driver can resume.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.metrics.row import MetricsRow
from workers.contract import ShardResult, WorkerError, WorkerInfo
from workers.files import exclusive_lock, replace_durably, temporary_beside, write_atomic

METRICS_FILE = "metrics.parquet"
_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def row_schema() -> pa.Schema:
    """Arrow schema of MetricsRow, so every row has the same column types (nulls included)."""
    fields = []
    for name, field in MetricsRow.model_fields.items():
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        base = args[0] if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else annotation
        fields.append(pa.field(name, _ARROW[base]))
    return pa.schema(fields)


def write_table_atomic(path: Path, table: pa.Table) -> None:
    tmp = temporary_beside(path)
    pq.write_table(table, tmp)
    replace_durably(tmp, path)


class ResultsStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS_FILE

    def append_rows(self, rows: list[MetricsRow]) -> None:
        schema = row_schema()
        new = pa.Table.from_pylist([r.model_dump() for r in rows], schema=schema)
        with exclusive_lock(self.root / ".metrics.lock"):
            if self.metrics_path.exists():
                old = pq.read_table(self.metrics_path)
                new = pa.concat_tables([old, new], promote_options="permissive")
            write_table_atomic(self.metrics_path, new)

    def read_metrics(self) -> pa.Table:
        if not self.metrics_path.exists():
            return pa.Table.from_pylist([], schema=row_schema())
        return pq.read_table(self.metrics_path)

    def run(self, run_id: str) -> "RunFolder":
        return RunFolder(self.root / "runs" / run_id)



class RunFolder:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def run_id(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / "job.yaml").exists()

    def create(self, job_yaml: str, started_at: float, sweep_id: str | None = None,
               weights_fetched_on: list[str] | None = None) -> None:
        """The resolved spec and the run's start (epoch s), so a resumed run can add up its time,
        and the nodes that downloaded the weights before the workers started."""
        (self.path / "shards").mkdir(parents=True, exist_ok=True)
        meta = {"run_id": self.run_id, "started_at": started_at, "sweep_id": sweep_id,
                "weights_fetched_on": weights_fetched_on or []}
        write_atomic(self.path / "run.json", json.dumps(meta).encode())
        write_atomic(self.path / "job.yaml", job_yaml.encode())

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def read_text(self, name: str) -> str:
        return (self.path / name).read_text(encoding="utf-8")

    def write_text(self, name: str, text: str) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / name, text.encode())
        return self.path / name

    # -- shard results, one file each, as they finish
    def save_shard(self, result: ShardResult) -> None:
        data = json.dumps(dataclasses.asdict(result)).encode()
        write_atomic(self.path / "shards" / f"{result.key}.json", data)

    def load_shards(self) -> list[ShardResult]:
        folder = self.path / "shards"
        if not folder.exists():
            return []
        return [_shard_from_json(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]

    # -- tables written when the run completes
    def write_shards_table(self, results: list[ShardResult], infos: list[WorkerInfo]) -> None:
        devices = {i.worker_id: i.device for i in infos}
        rows = [
            {
                "pass": r.pass_name, "repeat": r.repeat, "shard_id": r.shard_id, "attempt": r.attempt,
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
        write_table_atomic(self.path / "shards.parquet", pa.Table.from_pylist(rows))

    def write_workers_table(self, infos: list[WorkerInfo]) -> None:
        rows = [
            {
                "worker_id": i.worker_id, "node_id": i.node_id, "hostname": i.hostname, "pid": i.pid,
                "device": i.device, "device_name": i.device_name, "load_seconds": i.load_seconds,
                "data_seconds": i.data_seconds, "build_seconds": i.build.build_seconds if i.build else None,
                "engine_cache_hit": i.build.cache_hit if i.build else None,
                "precision_effective": i.precision_effective, "peak_flops": i.peak_flops, "tp": i.tp,
                "rank_nodes": [r.node_id for r in i.rank_list()], "rank_pids": [r.pid for r in i.rank_list()],
                "rank_devices": [f"{r.device} {r.device_name}" for r in i.rank_list()],
            }
            for i in infos
        ]
        write_table_atomic(self.path / "workers.parquet", pa.Table.from_pylist(rows))

    def write_records(self, name: str, records: list[dict[str, Any]]) -> None:
        if records:
            write_table_atomic(self.path / name, pa.Table.from_pylist(records))


def _shard_from_json(data: dict[str, Any]) -> ShardResult:
    error = data.pop("error", None)
    return ShardResult(**data, error=WorkerError(**error) if error else None)
