"""One row of the global metrics table: the public shape of a result.

Seed columns keep the seed's names (METRICS.md): precision, bs, byte_per_batch, mem, e2e_time,
p_val_whole, p_val_core, p_infer_whole, p_infer_core, infer_time, acc, MFU. Units are in the names
or below: seconds, bytes, GiB for mem, items/s for p_*, fractions (not percent) for MFU and acc.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict

SEED_COLUMNS = (
    "precision", "bs", "byte_per_batch", "mem", "e2e_time", "p_val_whole", "p_val_core",
    "p_infer_whole", "p_infer_core", "infer_time", "acc", "MFU",
)


class MetricsRow(BaseModel):
    """Everything reads rows as this type: the merge makes one, the store writes it, and rows read
    back from the table come through `from_record`. A column added later needs a default, so rows
    stored before it existed still load (with the default, usually None: "not measured then")."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "MetricsRow":
        """A row read back from the table (`Table.to_pylist()`); columns this version does not know
        (a newer raybench wrote them) are left out."""
        return cls.model_validate({k: v for k, v in record.items() if k in cls.model_fields})

    # identity
    run_id: str
    sweep_id: str | None  # shared by the rows of one sweep (one row per grid point)
    timestamp: str
    job: str
    task: str
    model: str
    data: str
    engine: str
    item_unit: str
    # seed columns
    precision: str
    bs: int
    byte_per_batch: int
    mem: float | None  # GiB, the largest worker peak
    e2e_time: float  # s, submit -> merged table
    p_val_whole: float | None
    p_val_core: float | None
    p_infer_whole: float | None
    p_infer_core: float | None
    infer_time: float | None  # s per item = 1 / p_infer_core
    acc: str  # "infer/val" as the seed prints it
    MFU: float | None  # fraction of peak
    # configuration
    precision_effective: str
    seq_len: int
    workers: int  # worker actors, or tensor-parallel groups of `tp` ranks
    tp: int = 1  # ranks per worker sharing one model (parallel.tp)
    nodes: int
    devices: str  # every device used, every rank of every group
    mem_total: float | None  # GiB of the device with the peak
    mem_source: str
    # counts
    examples: int
    items_val: int | None
    items_infer: int | None
    scored_val: int | None
    scored_infer: int | None
    correct_val: int | None
    correct_infer: int | None
    acc_val: float | None
    acc_infer: float | None
    acc_gap: float | None  # |acc_infer - acc_val|
    acc_flagged: bool
    shards: int
    retries: int  # failed attempts that were re-run (runs/<id>/retries.parquet says where)
    resumed: bool  # finished by `bench submit --resume` after the first driver stopped
    # workers dropped (died while loading, not restarted) or taken out (failed shards in a row); the
    # verdict names them (max_workers_lost); `workers` counts the replacements that set up
    workers_lost: int = 0
    # timings beside the pass figures
    load_time: float  # s, model + tokenizer load (slowest worker)
    data_time: float  # s, dataset preparation, once per run (the slowest node when prepared per node)
    data_cache_hit: bool | None = None  # the prepared dataset came from the data cache (None: synthetic, not cached)
    data_prepared_on: str = ""  # where the preparation ran: node address(es), or the host in-process
    build_time: float  # s, engine build (slowest worker; 0 on a cache hit)
    engine_cache_hit: bool | None
    engine_bytes: int | None
    engine_hash: str | None
    h2d_time: float | None  # s, summed host->device copy time of the infer pass
    warmup_batches: int  # warm-up batches the measured pass's shards ran (summed over workers and repeats)
    measured_batches: int
    latency_mean: float | None  # s per batch, infer core
    latency_p50: float | None
    latency_p90: float | None
    latency_p99: float | None
    latency_cv: float | None  # sample stdev / mean of per-batch core seconds per item (None below 2 batches)
    # variable-length tasks (mmlu): stdev / mean across shards of observed / fitted core time (a cost
    # in tokens and tokens x length; orchestrator/metrics/verdict.py); None for fixed-shape tasks
    latency_shard_cv: float | None = None
    repeats: int  # measured passes (fresh workers each) averaged into p_infer_*; 1 = no CI
    p_infer_core_ci_low: float | None  # 95 % Student-t interval of the mean across repeats
    p_infer_core_ci_high: float | None
    p_infer_whole_ci_low: float | None
    p_infer_whole_ci_high: float | None
    verdict: str = ""  # VALID | INVALID (orchestrator/metrics/verdict.py)
    verdict_reasons: str = ""  # the failed rules, "; "-joined; empty when VALID
    verdict_profile: str = ""  # quick | rigorous
    flops_per_item: float | None
    # mmlu only (None for other tasks)
    questions_per_s: float | None = None  # core questions/s of the measured pass, merged like p_*_core
    scoring: str | None = None  # lm-eval | flagperf
    prompt_format: str | None = None  # versioned prompt, e.g. lm-eval-mmlu-default@0.4.13 (None: not recorded)
    shots: int | None = None
    prompts_short_of_shots: int | None = None  # prompts that lost shots to fit the context
    prompts_truncated: int | None = None  # prompts cut even at 0 shots
    peak_flops: float | None  # FLOP/s summed over the devices that ran the infer pass
    mfu_note: str | None = None  # why MFU is blank (an unknown device, no infer pass, ...)
    energy_per_item: float | None = None  # J per item (sequence or token) of the measured pass, GPUs' NVML counters
    mean_power: float | None = None  # W over the measured pass, summed over the GPUs
    energy_note: str | None = None  # why the energy columns are blank (a CPU, no counter)
    # software
    torch_version: str
    ray_version: str
    transformers_version: str
    python_version: str
    cuda_version: str
    driver_version: str
