"""The contract between the driver and the worker actors: work units in, results out.

Plain dataclasses, cheap to pickle across Ray. Errors travel back as values (`error` fields), so
one pure function on the driver decides whether to retry or fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PassName = Literal["val", "infer"]
ErrorKind = Literal["user", "oom", "crash"]


@dataclass(frozen=True)
class ShardTask:
    """One pass over one contiguous range of examples. Made by `orchestrator.run.plan`."""

    shard_id: int
    start: int
    stop: int
    pass_name: PassName
    attempt: int = 1
    repeat: int = 0  # which repeat of the measured pass (job field `repeats`)

    @property
    def key(self) -> str:
        return shard_key(self.pass_name, self.shard_id, self.repeat)


@dataclass(frozen=True)
class SampleBatch:
    """Samples of LoadGen queries that the driver batched for one worker (orchestrator/loadgen/):
    run as one batch of these examples, in this order. `batch_id` numbers the batches of a LoadGen
    test; a batch re-issued after its worker died gets a new id and `attempt` + 1."""

    batch_id: int
    indices: tuple[int, ...]
    pass_name: PassName
    attempt: int = 1

    def as_shard(self) -> "ShardTask":
        """The batch in a shard's shape, for what reads shards (an engine's `before_shard`, whose
        `fail_shards` then names batch ids; a dead worker's failed attempt)."""
        return ShardTask(self.batch_id, 0, len(self.indices), self.pass_name, self.attempt)


def shard_key(pass_name: str, shard_id: int, repeat: int) -> str:
    """File name stem of a shard result: `infer-00012`, or `infer-00012-r2` for later repeats."""
    return f"{pass_name}-{shard_id:05d}" + (f"-r{repeat}" if repeat else "")


@dataclass(frozen=True)
class WorkerError:
    kind: ErrorKind
    message: str
    detail: str = ""  # e.g. an engine builder's log, kept in the run folder


@dataclass
class BuildInfo:
    """How the infer engine came to be: built or loaded from cache, how long, what it is."""

    engine: str
    build_seconds: float = 0.0
    cache_hit: bool = False
    engine_bytes: int | None = None
    engine_hash: str | None = None
    cache_key: str | None = None
    log: str = ""


@dataclass
class DataInfo:
    """What one data preparation reports to the driver: small, so the driver never holds the data.

    `costs` are the examples' relative costs (FLOPs of each prompt) for tasks whose examples
    differ in work (mmlu), None where every example costs the same (masked_lm windows).
    """

    num_examples: int
    fingerprint: str
    item_unit: str
    costs: list[float] | None
    cache_hit: bool | None  # None: nothing to cache (synthetic data is generated, not read)
    cache_key: str | None
    seconds: float  # wall time of the preparation (or of loading it from the cache)
    cpu_seconds: float  # CPU time of the preparing process meanwhile, all threads
    table_bytes: int
    node_id: str
    where: str  # the node's address under Ray, the host name in-process


@dataclass(frozen=True)
class DataHandle:
    """What a worker is handed: the prepared table (`workers.dataprep`), by reference under Ray.

    Under Ray `ref` is an ObjectRef: `ray.get` maps the object store's one copy per node, so the
    Arrow/numpy buffers a worker reads are read-only views of shared memory and a worker touches
    only its shards' rows. In-process `ref` is the table itself. The same handle works for any
    number of processes (a worker made of several ranks hands it to each).
    """

    ref: Any

    def table(self) -> Any:
        """The prepared `pyarrow.Table`."""
        import pyarrow as pa

        if isinstance(self.ref, pa.Table):
            return self.ref
        import ray

        return ray.get(self.ref)


@dataclass
class RankInfo:
    """One process of a tensor-parallel worker (a group of `tp` ranks on one node; rank 0 reports)."""

    rank: int
    node_id: str
    pid: int
    device: str
    device_name: str
    peak_flops: float | None


@dataclass
class WorkerInfo:
    """What a worker reports after setup: where it runs and what the dataset looks like to it.

    A tensor-parallel worker is reported by its rank 0: `ranks` lists every rank (rank 0 first),
    `peak_flops` is the sum of their peaks and the other fields are rank 0's own.
    """

    worker_id: int
    node_id: str
    hostname: str
    pid: int
    device: str
    device_name: str
    num_examples: int
    dataset_fingerprint: str
    load_seconds: float
    data_seconds: float
    build: BuildInfo | None
    precision_effective: str
    peak_flops: float | None
    mem_total_bytes: int | None
    item_unit: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    error: WorkerError | None = None
    peak_flops_label: str = ""  # the table entry chosen and its datasheet (workers/peaks.py)
    peak_flops_reason: str = ""  # why peak_flops is None
    ranks: list[RankInfo] = field(default_factory=list)  # empty for a worker that owns one device

    @property
    def tp(self) -> int:
        return max(1, len(self.ranks))

    def rank_list(self) -> list[RankInfo]:
        """Every process of the worker: its ranks, or itself as the one rank of a single-device worker."""
        return self.ranks or [RankInfo(0, self.node_id, self.pid, self.device, self.device_name, self.peak_flops)]


@dataclass
class ShardResult:
    """One pass of one shard on one worker: counts, timings and where it ran."""

    shard_id: int
    pass_name: PassName
    attempt: int
    worker_id: int
    node_id: str
    device_name: str
    pid: int
    examples: int = 0
    items: int = 0
    scored: int = 0
    correct: int = 0
    flops: float = 0.0
    core_seconds: float = 0.0
    h2d_seconds: float = 0.0
    wall_seconds: float = 0.0
    start_ts: float = 0.0
    end_ts: float = 0.0
    warmup_batches: int = 0
    batch_core_seconds: list[float] = field(default_factory=list)
    batch_items: list[int] = field(default_factory=list)
    # the shape the engine computed, per batch: rows and padded length (the cost-model inputs of
    # the variable-length stability rule, orchestrator/metrics/verdict.py)
    batch_rows: list[int] = field(default_factory=list)
    batch_seq_lens: list[int] = field(default_factory=list)
    bytes_per_batch: int = 0
    peak_mem_bytes: int | None = None
    mem_total_bytes: int | None = None
    mem_source: str = ""
    energy_joules: float | None = None  # the GPU's energy over the pass (NVML counter), None without one
    energy_note: str = ""  # why energy_joules is None
    records: list[dict[str, Any]] = field(default_factory=list)
    error: WorkerError | None = None
    repeat: int = 0

    @property
    def key(self) -> str:
        return shard_key(self.pass_name, self.shard_id, self.repeat)
