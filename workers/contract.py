"""The contract between the driver and the worker actors: work units in, results out.

Plain dataclasses, cheap to pickle across Ray. Errors travel back as values (`error` fields), so
one pure function on the driver decides whether to retry or fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from workers.requests import RequestRecord

PassName = Literal["val", "infer"]
ErrorKind = Literal["user", "oom", "crash"]


@dataclass(frozen=True)
class ShardTask:
    """One pass over one range of the plan's examples. Made by `orchestrator.modes.offline.plan`.

    `start`..`stop` are positions in the plan's order of the examples. Where the plan keeps the
    data's order (examples that all cost the same) they are the examples themselves and `examples`
    is None; where it sorted them by cost (variable-length work: a batch then holds prompts of
    similar length, so little padding) `examples` lists the shard's examples in that order.
    """

    shard_id: int
    start: int
    stop: int
    pass_name: PassName
    attempt: int = 1
    repeat: int = 0  # which repeat of the measured pass (job field `repeats`)
    examples: tuple[int, ...] | None = None
    # generate: when the pass began on the driver (epoch s): every request of an Offline pass arrives
    # then (the whole set is offered at once, as MLPerf's Offline issues one query), so its queueing
    # behind earlier shards and batches counts in its TTFT. None: at the shard's start on the worker.
    arrival_ts: float | None = None
    # the examples a worker warms up on when this is its first shard of the pass (a sorted plan's
    # cheapest, `bs` at a time); None: the shard's own first batches
    warmup_examples: tuple[int, ...] | None = None
    # An invariance check, not a shard of the plan (start/stop unused): `examples`, each run alone
    # (bs 1), untimed, their records returned and never counted in the metrics (job field
    # `invariance_check`).
    check: bool = False

    def example_ids(self) -> Sequence[int]:
        """The examples this shard runs, in order."""
        return self.examples if self.examples is not None else range(self.start, self.stop)

    @property
    def key(self) -> str:
        return shard_key(self.pass_name, self.shard_id, self.repeat)


@dataclass(frozen=True)
class SampleBatch:
    """Samples of LoadGen queries that the driver batched for one worker (orchestrator/modes/loadgen/):
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
    profile: dict[str, Any] | None = None  # TensorRT's optimisation profile: input -> {min, opt, max} shapes


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
    pid: int = 0  # the preparing process: a Ray task's, the first worker's, or the command's own


@dataclass(frozen=True)
class DataHandle:
    """What a worker is handed: the prepared table (`workers.data.dataprep`), by reference under Ray.

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


def physical_device(node_id: str, uuid: str, device: str) -> str:
    """The name of one physical device, so that the merge counts each once (its peak, its energy).

    A GPU is its UUID on its node: two workers given half a GPU each (`gpus_per_worker: 0.5`) name
    the same one. Without a UUID (an older torch) the device string with Ray's GPU id stands in
    ("cuda:0 (GPU 3)"). Every CPU worker of a node shares that node's CPU.
    """
    if uuid:
        return f"{node_id}/{uuid}"
    return f"{node_id}/{'cpu' if device.startswith('cpu') else device}"


@dataclass
class RankInfo:
    """One process of a tensor-parallel worker (a group of `tp` ranks on one node; rank 0 reports)."""

    rank: int
    node_id: str
    pid: int
    device: str
    device_name: str
    peak_flops: float | None
    device_uuid: str = ""  # the GPU's UUID ("GPU-..."), "" on a CPU
    peak_flops_measured: float | None = None  # this rank's measured matmul peak (workers/measure/matmul_peak.py)

    @property
    def physical_device(self) -> str:
        return physical_device(self.node_id, self.device_uuid, self.device)


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
    peak_flops_label: str = ""  # the table entry chosen and its datasheet (workers/measure/peaks.py)
    peak_flops_reason: str = ""  # why peak_flops is None
    ranks: list[RankInfo] = field(default_factory=list)  # empty for a worker that owns one device
    device_uuid: str = ""  # the GPU's UUID ("GPU-..."), "" on a CPU: with node_id, the physical device
    peak_flops_measured: float | None = None  # achievable matmul FLOP/s of this device (workers/measure/matmul_peak.py)
    peak_flops_measured_label: str = ""  # how it was measured, and whether it came from the cache
    peak_flops_measured_reason: str = ""  # why peak_flops_measured is None
    # generate: the memory bandwidth MBU divides by (workers/measure/bandwidth.py), B/s
    mem_bandwidth: float | None = None  # the datasheet's
    mem_bandwidth_label: str = ""
    mem_bandwidth_reason: str = ""
    mem_bandwidth_measured: float | None = None  # a copy's, measured on this device
    mem_bandwidth_measured_label: str = ""
    mem_bandwidth_measured_reason: str = ""
    # seconds the measured matmul peak cost this worker's setup: 0.0 when read from the cache, None
    # when not taken (measure_peak: false, no infer pass); the timeline line prints it
    peak_seconds: float | None = None

    @property
    def tp(self) -> int:
        return max(1, len(self.ranks))

    def rank_list(self) -> list[RankInfo]:
        """Every process of the worker: its ranks, or itself as the one rank of a single-device worker."""
        return self.ranks or [RankInfo(0, self.node_id, self.pid, self.device, self.device_name, self.peak_flops,
                                       self.device_uuid, self.peak_flops_measured)]


@dataclass
class DeviceHealth:
    """What NVML saw on a worker's GPU while one pass ran (workers/measure/device_watch.py); None on a CPU.

    Combined over a tensor-parallel group's ranks and over shards with `combined`: the lowest clock,
    the highest temperature and power, every reason, error and process seen by any of them.
    """

    samples: int = 0
    sm_clock_mhz_min: int | None = None  # lowest SM clock while the GPU was busy (idle samples left out)
    clock_events: list[str] = field(default_factory=list)  # clock event (throttle) reasons seen, by name
    temperature_c_max: int | None = None
    power_w_max: float | None = None
    xid_errors: list[int] = field(default_factory=list)  # XID numbers of the critical-error events
    ecc_errors: int | None = None  # volatile uncorrected ECC errors during the pass; None: no counter
    other_pids: list[int] | None = field(default_factory=list)  # compute processes not ours; None: cannot tell
    note: str = ""  # the figures that could not be read, and why

    @staticmethod
    def combined(parts: list["DeviceHealth"], ours: set[int] | frozenset[int] = frozenset()) -> "DeviceHealth":
        """One figure set from several devices or passes; `ours` are pids of our own (a group's ranks)."""
        def pick(values: list, best):
            present = [v for v in values if v is not None]
            return best(present) if present else None

        eccs = [p.ecc_errors for p in parts]
        pids = [p.other_pids for p in parts]
        return DeviceHealth(
            samples=sum(p.samples for p in parts),
            sm_clock_mhz_min=pick([p.sm_clock_mhz_min for p in parts], min),
            clock_events=sorted({e for p in parts for e in p.clock_events}),
            temperature_c_max=pick([p.temperature_c_max for p in parts], max),
            power_w_max=pick([p.power_w_max for p in parts], max),
            xid_errors=[x for p in parts for x in p.xid_errors],
            ecc_errors=None if any(e is None for e in eccs) else sum(eccs),
            other_pids=None if any(p is None for p in pids) else sorted({pid for p in pids for pid in p} - set(ours)),
            note="; ".join(dict.fromkeys(p.note for p in parts if p.note)),
        )


@dataclass
class DecodeTotals:
    """What a worker's decode loop (workers/shard/decode.py) adds up over its requests (generate).

    Prefill and decode are apart only where the engine runs static batches: a batch's prefill is the
    time to its first tokens, its decode the rest. Continuous batching mixes prefill chunks into
    decode steps, so its split is unknown: None, and the row says why."""

    input_tokens: int = 0
    prefill_seconds: float | None = 0.0
    prefill_flops: float = 0.0
    decode_seconds: float | None = 0.0
    decode_flops: float = 0.0
    decode_bytes: float | None = 0.0  # weights + KV cache each decode step must read, summed over steps

    def add(self, other: "DecodeTotals") -> "DecodeTotals":
        def plus(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a + b

        return DecodeTotals(self.input_tokens + other.input_tokens, plus(self.prefill_seconds, other.prefill_seconds),
                            self.prefill_flops + other.prefill_flops, plus(self.decode_seconds, other.decode_seconds),
                            self.decode_flops + other.decode_flops, plus(self.decode_bytes, other.decode_bytes))


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
    warmup_seconds: float = 0.0  # wall time of those warm-up batches (before start_ts)
    batch_core_seconds: list[float] = field(default_factory=list)
    batch_items: list[int] = field(default_factory=list)
    # the shape the engine computed, per batch: rows and padded length (the cost-model inputs of
    # the variable-length stability rule, orchestrator/metrics/verdict.py)
    batch_rows: list[int] = field(default_factory=list)
    batch_seq_lens: list[int] = field(default_factory=list)
    # real (unpadded) tokens per batch: with rows x padded length, the padding the batch computed
    # (the row's padding_share, orchestrator/metrics/passes.py)
    batch_tokens: list[int] = field(default_factory=list)
    bytes_per_batch: int = 0
    peak_mem_bytes: int | None = None
    mem_total_bytes: int | None = None
    mem_source: str = ""
    energy_joules: float | None = None  # the GPU's energy over the pass (NVML counter), None without one
    energy_note: str = ""  # why energy_joules is None
    # each GPU's counter (J) just before and just after the pass, by physical device (every rank's
    # GPU for a tensor-parallel worker): the merge counts a GPU that workers share once
    energy_counters: dict[str, list[float]] = field(default_factory=dict)
    health: DeviceHealth | None = None  # the GPU's clocks, throttling, errors and other processes (None: a CPU)
    records: list[dict[str, Any]] = field(default_factory=list)
    responses: list[bytes] = field(default_factory=list)  # LoadGen batches: each sample's response, in batch order
    error: WorkerError | None = None
    repeat: int = 0
    # the examples it ran (ShardTask.start/stop), so a resumed run can check that shard k is still
    # the same examples (0, 0 in results saved before they were recorded)
    start: int = 0
    stop: int = 0
    # generate: each request's life (workers/requests.py), times in epoch seconds of the worker's node,
    # and the decode loop's totals; empty / None for tasks that score batches
    requests: list[RequestRecord] = field(default_factory=list)
    decode: DecodeTotals | None = None

    @property
    def key(self) -> str:
        return shard_key(self.pass_name, self.shard_id, self.repeat)
