"""One row of the global metrics table: the public shape of a result.

Seed columns keep the seed's names (METRICS.md): precision, bs, byte_per_batch, mem, e2e_time,
p_val_whole, p_val_core, p_infer_whole, p_infer_core, infer_time, acc, MFU. Each column's unit and
meaning sit on its field (`column(...)`): seconds, bytes, GiB for mem, items/s for p_*, fractions
(not percent) for MFU and acc. docs/columns.md is generated from them (python -m orchestrator.reference).
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

SEED_COLUMNS = (
    "precision", "bs", "byte_per_batch", "mem", "e2e_time", "p_val_whole", "p_val_core",
    "p_infer_whole", "p_infer_core", "infer_time", "acc", "MFU",
)


def column(meaning: str, unit: str = "", default: Any = ...) -> Any:
    """A column's meaning and unit, kept on the field: docs/columns.md is generated from them
    (orchestrator/reference.py). Without `default` the column is required."""
    return Field(default, description=meaning, json_schema_extra={"unit": unit} if unit else None)


def _has_default(field: FieldInfo) -> bool:
    """A column with a default other than None: a null read for it means "not written then"."""
    return not field.is_required() and field.default is not None


class MetricsRow(BaseModel):
    """Everything reads rows as this type: the merge makes one, the store writes it, and rows read
    back from the table come through `from_record`. A column added later needs a default, so rows
    stored before it existed still load (with the default, usually None: "not measured then")."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "MetricsRow":
        """A row read back from the table (`Table.to_pylist()`); columns this version does not know
        (a newer raybench wrote them) are left out. A column an older raybench did not write reads
        back null; where the column cannot be null (`workers_lost`) it takes its default."""
        fields = cls.model_fields
        return cls.model_validate({k: v for k, v in record.items()
                                   if k in fields and not (v is None and _has_default(fields[k]))})

    # identity
    run_id: str = column("the run: `<UTC time>-<job>-<6 hex>`; its files are under `runs/<run_id>/`")
    sweep_id: str | None = column("shared by the rows of one sweep (one row per grid point); empty outside a sweep")
    timestamp: str = column("when the row was merged, ISO 8601 in UTC")
    job: str = column("the job's `name`")
    task: str = column("the benchmark case: masked_lm or mmlu; endpoint:completions or endpoint:chat for a running "
                       "server (its prompts in `data`)")
    model: str = column("the weights: hub id or folder (`#<GGUF file>`), or `random:<model_type or config source>`")
    data: str = column("the data: its path, or synthetic(seed=..., size=...)")
    engine: str = column("the infer pass's engine (the job's engine.name); endpoint for a running server")
    item_unit: str = column("what the p_* columns count: seq (masked_lm sequences) or tok (mmlu prompt tokens); req "
                            "(requests) for endpoint rows")
    # seed columns
    precision: str = column("the job's precision: fp32, fp16 or bf16")
    bs: int | None = column("batch size: sequences or prompts per batch (blank for endpoint rows)", default=None)
    byte_per_batch: int | None = column("model input of the largest batch as the engine receives it, every tensor at "
                                        "its dtype (blank for endpoint rows)", "bytes", default=None)
    mem: float | None = column("peak device memory, the largest worker peak (mem_source says how it was read)", "GiB")
    e2e_time: float = column("wall time from submit to the merged table", "s")
    p_val_whole: float | None = column("val pass: items / wall span from the first pass start to the last pass "
                                       "end, across workers", "items/s")
    p_val_core: float | None = column("val pass: sum over workers of items / summed core (model call) seconds",
                                      "items/s")
    p_infer_whole: float | None = column("as p_val_whole, for the infer pass (mean over repeats)", "items/s")
    p_infer_core: float | None = column("as p_val_core, for the infer pass (mean over repeats): the headline figure",
                                        "items/s")
    infer_time: float | None = column("1 / p_infer_core", "s/item")
    acc: str = column('"infer/val" accuracy as the seed prints it, 4 decimals each ("-" for a pass not run)')
    MFU: float | None = column("flops_per_item x p_infer_core / peak_flops (mfu_note says why when blank)", "fraction")
    # configuration
    precision_effective: str = column("the precision the engine ran at (fp32 where precision_fallback ran fp16 on a "
                                      "CPU)")
    seq_len: int | None = column("tokens per sequence (masked_lm) or the prompt cap (mmlu); blank for endpoint rows",
                                 "tokens", default=None)
    workers: int = column("worker actors, or tensor-parallel groups of `tp` ranks; client actors for endpoint rows")
    tp: int = column("ranks per worker sharing one model (parallel.tp)", default=1)
    nodes: int = column("nodes that ran a worker rank")
    devices: str = column("every physical device used, `<count>x <name>`, comma-separated: every rank's GPU; a GPU "
                          "shared by workers, or a node's CPU, once")
    mem_total: float | None = column("total memory of the device with the peak", "GiB")
    mem_source: str = column("how mem was read: nvml-process, torch-cuda-reserved-peak (NVML cannot see the "
                             "process) or cpu-rss-peak")
    # counts
    examples: int = column("examples the measured pass ran: sequences (masked_lm) or questions (mmlu)")
    items_val: int | None = column("items of the val pass (see item_unit)", "items")
    items_infer: int | None = column("items of the infer pass (first repeat)", "items")
    scored_val: int | None = column("predictions scored in the val pass: masked positions or questions")
    scored_infer: int | None = column("predictions scored in the infer pass (first repeat)")
    correct_val: int | None = column("correct predictions of the val pass")
    correct_infer: int | None = column("correct predictions of the infer pass (first repeat)")
    acc_val: float | None = column("correct_val / scored_val", "fraction")
    acc_infer: float | None = column("correct_infer / scored_infer", "fraction")
    acc_gap: float | None = column("|acc_infer - acc_val|", "fraction")
    acc_flagged: bool = column("acc_gap is above the job's acc_tolerance: the engine may be wrong")
    shards: int | None = column("shards of the plan (blank for endpoint rows)", default=None)
    retries: int = column("failed attempts that were re-run (runs/<id>/retries.parquet says where)")
    resumed: bool = column("finished by `bench submit --resume` after the first driver stopped")
    workers_lost: int = column("workers dropped (died while loading, not restarted) or taken out (failed shards in a "
                               "row); the verdict names them (max_workers_lost); `workers` counts the replacements "
                               "that set up", default=0)
    # timings beside the pass figures
    load_time: float = column("model + tokenizer load (slowest worker)", "s")
    data_time: float = column("dataset preparation, once per run (the slowest node when prepared per node)", "s")
    data_cache_hit: bool | None = column("the prepared dataset came from the data cache (empty: synthetic, not "
                                         "cached)", default=None)
    data_prepared_on: str = column("where the preparation ran: node address(es), or the host in-process",
                                   default="")
    ray_start_time: float | None = column("starting a local Ray or joining the cluster (a command's first point; "
                                          "blank for later points and --no-ray)", "s", default=None)
    build_time: float | None = column("engine build (slowest worker; 0 on a cache hit; blank for endpoint rows)", "s",
                                      default=None)
    engine_cache_hit: bool | None = column("every worker's engine came from the engine cache (empty: an engine "
                                           "without a build)")
    engine_bytes: int | None = column("size of the built engine", "bytes")
    engine_hash: str | None = column("sha256 of the built engine")
    engine_profile: str | None = column("TensorRT's optimisation profile as JSON: input -> {min, opt, max} shapes "
                                        "(opt: the prepared data's median length)", default=None)
    h2d_time: float | None = column("summed host->device copy time of the infer pass", "s")
    warmup_batches: int | None = column("warm-up batches the measured pass's shards ran (summed over workers and "
                                        "repeats); blank for endpoint rows (warmup_requests)", "batches", default=None)
    measured_batches: int | None = column("timed batches of the measured pass (infer, or val when only val ran); "
                                          "blank for endpoint rows (requests)", "batches", default=None)
    latency_mean: float | None = column("mean per-batch core time of the measured pass, repeats pooled", "s/batch")
    latency_p50: float | None = column("median per-batch core time", "s/batch")
    latency_p90: float | None = column("90th percentile of per-batch core time", "s/batch")
    latency_p99: float | None = column("99th percentile of per-batch core time", "s/batch")
    latency_cv: float | None = column("sample stdev / mean of per-batch core seconds per item (empty below 2 "
                                      "batches)")
    latency_shard_cv: float | None = column(
        "variable-length tasks (mmlu): stdev / mean across shards of observed / fitted core time (a cost in tokens "
        "and tokens x length; orchestrator/metrics/verdict.py); empty for fixed-shape tasks", default=None)
    padding_share: float | None = column(
        "share of the tokens the measured pass computed that were padding: 1 - real tokens / (rows x padded length) "
        "summed over its batches (first repeat); 0 for fixed-length work; variable-length work is planned in length "
        "order to keep it low (orchestrator/modes/offline/plan.py)", "fraction", default=None)
    repeats: int = column("measured passes (fresh workers each) averaged into p_infer_*; 1 = no CI")
    p_infer_core_ci_low: float | None = column("low end of the 95 % Student-t interval of p_infer_core's mean "
                                               "across repeats", "items/s")
    p_infer_core_ci_high: float | None = column("high end of that interval", "items/s")
    p_infer_whole_ci_low: float | None = column("as p_infer_core_ci_low, for p_infer_whole", "items/s")
    p_infer_whole_ci_high: float | None = column("as p_infer_core_ci_high, for p_infer_whole", "items/s")
    verdict: str = column("VALID or INVALID (orchestrator/metrics/verdict.py)", default="")
    verdict_reasons: str = column('the failed rules, "; "-joined; empty when VALID', default="")
    verdict_profile: str = column("the rule sets that judged the row, \"+\"-joined: the pass rules' profile (quick or "
                                  "rigorous) for offline rows; quick+loadgen-quick or quick+loadgen-mlperf for LoadGen "
                                  "rows (the incident rules apply to every row)", default="")
    flops_per_item: float | None = column("forward-pass FLOPs per item, counted from the model (workers/measure/flops.py)",
                                          "FLOP/item")
    # mmlu only (None for other tasks)
    questions_per_s: float | None = column("core questions/s of the measured pass, merged like p_*_core",
                                           "questions/s", default=None)
    scoring: str | None = column("lm-eval or flagperf", default=None)
    prompt_format: str | None = column("versioned prompt, e.g. lm-eval-mmlu-default@0.4.13 (empty: not recorded)",
                                       default=None)
    shots: int | None = column("dev examples asked for before each question (task.shots)", default=None)
    prompts_short_of_shots: int | None = column("prompts that lost shots to fit the context", default=None)
    prompts_truncated: int | None = column("prompts cut even at 0 shots", default=None)
    peak_flops: float | None = column("dense peak summed over the devices that ran the infer pass, at the "
                                      "precision (workers/measure/peaks.py)", "FLOP/s")
    mfu_note: str | None = column("why MFU is blank (an unknown device, no infer pass, ...)", default=None)
    MFU_measured: float | None = column(
        "MFU against the devices' measured dense matmul peak at the job's precision (workers/measure/matmul_peak.py): what "
        "the devices achieve with their clocks and software as they are; defined on CPUs too", "fraction", default=None)
    peak_flops_measured: float | None = column("measured matmul peaks summed over the same devices as peak_flops",
                                               "FLOP/s", default=None)
    mfu_measured_note: str | None = column("why MFU_measured is blank", default=None)
    energy_per_item: float | None = column("energy per item of the measured pass, from the GPUs' NVML counters",
                                           "J/item", default=None)
    mean_power: float | None = column("mean power over the measured pass, summed over the GPUs", "W", default=None)
    energy_note: str | None = column("why the energy columns are blank (a CPU, no counter)", default=None)
    sm_clock_mhz_min: int | None = column("lowest SM clock while busy, over every GPU and sample of the measured pass "
                                          "(NVML, workers/measure/device_watch.py); blank on CPUs", "MHz", default=None)
    throttle_reasons: str | None = column("clock event reasons seen, comma-joined (\"\" = none); hw_slowdown, "
                                          "hw_thermal, hw_power_brake and sw_thermal make the row INVALID", default=None)
    temperature_c_max: int | None = column("hottest GPU temperature sampled", "deg C", default=None)
    power_w_max: float | None = column("highest one-GPU power draw sampled", "W", default=None)
    xid_errors: str | None = column("XID numbers of critical-error events, comma-joined (\"\" = none)", default=None)
    ecc_errors: int | None = column("uncorrected ECC errors (volatile counter) during the measured pass", default=None)
    foreign_processes: int | None = column("compute processes on the GPUs that are not the run's own", default=None)
    foreign_pids: str | None = column("those processes, as pid@host", default=None)
    gpu_health_note: str | None = column("what of the GPUs could not be watched, and why", default=None)
    invariance_checked: int | None = column("examples of the measured pass run again at bs 1, spread over the workers "
                                            "(job field invariance_check; default 3 % of the examples, at least 4); "
                                            "blank: not checked, see invariance_note", default=None)
    invariance_flips: int | None = column("of those, predictions that changed", default=None)
    invariance_note: str | None = column("why the invariance check did not run", default=None)
    # generate only (None for other tasks): docs/measurement.md defines each; output tokens/s are p_infer_core
    # and p_infer_whole (items are output tokens), energy per output token is energy_per_item
    requests: int | None = column("requests of the measured pass (generate)", default=None)
    requests_per_s: float | None = column("completed requests / (last end - first arrival), every worker's pooled",
                                          "requests/s", default=None)
    input_tokens_mean: float | None = column("mean prompt tokens per request", "tokens", default=None)
    output_tokens_mean: float | None = column("mean output tokens per request", "tokens", default=None)
    prefill_tokens_per_s: float | None = column("sum over workers of prompt tokens / prefill seconds (static "
                                                "batches: a call's start to its first tokens; blank for continuous "
                                                "batching)", "tokens/s", default=None)
    ttft_p50: float | None = column("time to first token from the request's arrival (queueing included), median",
                                    "s", default=None)
    ttft_p90: float | None = column("time to first token, 90th percentile", "s", default=None)
    ttft_p99: float | None = column("time to first token, 99th percentile", "s", default=None)
    tpot_p50: float | None = column("time per output token, (E2E - TTFT) / (output tokens - 1) per request, "
                                    "median over requests of 2+ tokens", "s", default=None)
    tpot_p90: float | None = column("time per output token, 90th percentile", "s", default=None)
    tpot_p99: float | None = column("time per output token, 99th percentile", "s", default=None)
    itl_p50: float | None = column("inter-token latency: every gap between consecutive tokens of a request, pooled, "
                                   "median", "s", default=None)
    itl_p90: float | None = column("inter-token latency, 90th percentile", "s", default=None)
    itl_p99: float | None = column("inter-token latency, 99th percentile", "s", default=None)
    e2e_p50: float | None = column("request latency from arrival to its last token, median", "s", default=None)
    e2e_p90: float | None = column("request latency, 90th percentile", "s", default=None)
    e2e_p99: float | None = column("request latency, 99th percentile", "s", default=None)
    MFU_prefill: float | None = column("prefill FLOPs / prefill seconds summed over workers / peak_flops", "fraction",
                                       default=None)
    MFU_decode: float | None = column("decode FLOPs / decode seconds summed over workers / peak_flops", "fraction",
                                      default=None)
    MFU_prefill_measured: float | None = column("as MFU_prefill, against peak_flops_measured", "fraction",
                                                default=None)
    MFU_decode_measured: float | None = column("as MFU_decode, against peak_flops_measured", "fraction", default=None)
    MBU: float | None = column("decode: bytes the decode steps must read (weights + KV cache) / decode seconds, "
                               "summed over workers / mem_bandwidth", "fraction", default=None)
    MBU_measured: float | None = column("as MBU, against mem_bandwidth_measured (defined on CPUs too)", "fraction",
                                        default=None)
    mem_bandwidth: float | None = column("datasheet memory bandwidth summed over the devices that generated "
                                         "(workers/measure/bandwidth.py)", "B/s", default=None)
    mem_bandwidth_measured: float | None = column("measured copy bandwidth summed over the same devices", "B/s",
                                                  default=None)
    mbu_note: str | None = column("why MBU is blank", default=None)
    sampling: str | None = column("greedy, or the sampling settings (temperature, top_p, top_k)", default=None)
    ignore_eos: bool | None = column("every request made its max_new_tokens (true) or stopped at EOS", default=None)
    input_tokens: str | None = column("prompt lengths asked for: a number, or their distribution", default=None)
    max_new_tokens: str | None = column("output lengths asked for: a number, or their distribution", default=None)
    invariance_time: float | None = column("wall time of the invariance check, after the measured pass and inside "
                                           "e2e_time (blank: no check)", "s", default=None)
    load: str = column("how the work arrived (the job's load.kind): offline (raybench's sharded Offline: every "
                       "example as fast as possible), loadgen (MLPerf LoadGen, scenario in `scenario`) or endpoint (a "
                       "schedule of requests to a running server; `scenario` blank)", default="offline")
    scenario: str | None = column("offline | server | single_stream | multi_stream (LoadGen scenarios: "
                                  "orchestrator/modes/loadgen/); rows stored before scenarios existed read empty (offline)",
                                  default="offline")
    loadgen_mode: str | None = column("performance | accuracy | find_peak", default=None)
    target_qps: float | None = column("server: queries offered per second (find_peak: the highest VALID rate found)",
                                      "queries/s", default=None)
    achieved_qps: float | None = column("LoadGen's completed samples per second (single_stream: its QPS with LoadGen "
                                        "overhead; blank for multi_stream)", "samples/s", default=None)
    query_latency_p50: float | None = column("LoadGen's raw 50th percentile latency: per sample (server, "
                                             "single_stream, offline), per query (multi_stream)", "s", default=None)
    query_latency_p90: float | None = column("LoadGen's raw 90th percentile latency (as query_latency_p50)", "s",
                                             default=None)
    query_latency_p99: float | None = column("LoadGen's raw 99th percentile latency (as query_latency_p50)", "s",
                                             default=None)
    query_latency_es: float | None = column("single_stream / multi_stream: MLPerf's metric, LoadGen's early-stopping "
                                            "estimate of the latency_percentile (early_stopping_latency_ss / _ms); "
                                            "the stream bound is held to it", "s", default=None)
    latency_percentile: float | None = column("the percentile LoadGen's verdict and headline use, read from its log "
                                              "(server 99, single_stream 90 or 99.9, multi_stream 99)", "%",
                                              default=None)
    latency_bound: float | None = column("server: the bound LoadGen enforced; streams: the job's bound on the "
                                         "early-stopping estimate", "s", default=None)
    loadgen_result: str | None = column("VALID | INVALID as LoadGen said (blank in accuracy mode: it says nothing)",
                                        default=None)
    loadgen_errors: int | None = column("errors LoadGen logged (any makes the row INVALID: MLPerf accepts none)",
                                        default=None)
    query_count: int | None = column("queries LoadGen issued in the headline test", default=None)
    overlatency_queries: int | None = column("server: queries over the latency bound (LoadGen's count)", default=None)
    overlatency_allowed: int | None = column("server: the most queries over the bound LoadGen's early stopping "
                                             "tolerates at query_count (-1: not even none; quick rules give 5)",
                                             default=None)
    issue_delay_p99: float | None = column("LoadGen's issue delay (actual minus scheduled issue), 99th percentile, "
                                           "from its trace: the driver's share of latency; server: above 10 % of "
                                           "the bound the row is INVALID (the driver, not the system, was "
                                           "saturated)", "s", default=None)
    compliance_test: str | None = column("the MLPerf compliance test the job ran beside its headline test (load.audit): "
                                         "TEST01, TEST04 or an audit.config path", default=None)
    compliance_result: str | None = column("PASS or FAIL by the test's own criterion, with the figures (FAIL makes the "
                                           "row INVALID)", default=None)
    mlperf_deviations: str | None = column("rules mlperf: what the run changed of mlperf.conf (any makes the row "
                                           "INVALID: not MLPerf-compliant); empty: none", default=None)
    loadgen_settings: str | None = column("JSON: LoadGen's \"Test Parameters Used\", the rules and the hand-over",
                                           default=None)
    loadgen_ttft_p50: float | None = column("LoadGen's time to first token (token latencies on): median, from its "
                                            "log", "s", default=None)
    loadgen_ttft_p90: float | None = column("LoadGen's time to first token, 90th percentile", "s", default=None)
    loadgen_ttft_p99: float | None = column("LoadGen's time to first token, 99th percentile (the Server bound's)", "s",
                                            default=None)
    loadgen_tpot_p50: float | None = column("LoadGen's time per output token, median", "s", default=None)
    loadgen_tpot_p90: float | None = column("LoadGen's time per output token, 90th percentile", "s", default=None)
    loadgen_tpot_p99: float | None = column("LoadGen's time per output token, 99th percentile (the Server bound's)",
                                            "s", default=None)
    loadgen_tokens_per_s: float | None = column("LoadGen's completed tokens per second (SingleStream: without its "
                                                "overhead)", "tokens/s", default=None)
    ttft_bound: float | None = column("server: the p99 TTFT bound LoadGen enforced (ttft_latency)", "s", default=None)
    tpot_bound: float | None = column("server: the p99 TPOT bound LoadGen enforced (tpot_latency)", "s", default=None)
    find_peak_stop: str | None = column("find_peak: why the search stopped (converged within the tolerance; or no "
                                        "failing rate found, no passing rate found, runs ran out: then no peak, and "
                                        "the row is INVALID)", default=None)
    # endpoint rows: a running server under a schedule of requests (orchestrator/modes/endpoint/; the latencies
    # from orchestrator/metrics/requests.py, over every request of every client and repeat, never averaged)
    endpoint_url: str | None = column("the server's base URL(s), comma-joined", default=None)
    endpoint_api: str | None = column("completions or chat", default=None)
    clients: int | None = column("client actors that sent the schedule", default=None)
    client_nodes: str | None = column("the nodes the client actors ran on, comma-joined", default=None)
    arrival: str | None = column("constant, poisson, gamma (open loop at a rate), trace (replayed) or closed "
                                 "(a closed loop at a concurrency)", default=None)
    offered_rate: float | None = column("the rate the schedule asked for (find_peak: the highest rate that passed); "
                                        "blank for a closed loop", "req/s", default=None)
    concurrency: int | None = column("closed loop: requests in flight at once", default=None)
    warmup_requests: int | None = column("requests sent before the measured schedule, in no figure", default=None)
    requests: int | None = column("measured requests (every repeat)", default=None)
    requests_completed: int | None = column("of those, answered completely", default=None)
    request_errors: int | None = column("of those, failed (counted, never dropped; errors_by_kind says how)",
                                        default=None)
    errors_by_kind: str | None = column("JSON: failed requests by kind (timeout, connection, http_4xx, http_5xx, "
                                        "server, client)", default=None)
    requests_per_s: float | None = column("completed requests / the span from the first scheduled send to the last "
                                          "end (mean over repeats)", "req/s", default=None)
    output_tokens_per_s: float | None = column("output tokens (the server's usage) of completed requests / that span",
                                               "tok/s", default=None)
    input_tokens_mean: float | None = column("mean prompt tokens of a completed request", "tokens", default=None)
    output_tokens_mean: float | None = column("mean output tokens of a completed request", "tokens", default=None)
    ttft_p50: float | None = column("time to first token from the scheduled send (what a user waiting in line "
                                    "sees), median", "s", default=None)
    ttft_p90: float | None = column("as ttft_p50, 90th percentile", "s", default=None)
    ttft_p99: float | None = column("as ttft_p50, 99th percentile", "s", default=None)
    ttft_p999: float | None = column("as ttft_p50, 99.9th percentile", "s", default=None)
    ttft_sent_p50: float | None = column("time to first token from the actual send, median: below ttft_p50 by the "
                                         "time requests waited in the client", "s", default=None)
    ttft_sent_p90: float | None = column("as ttft_sent_p50, 90th percentile", "s", default=None)
    ttft_sent_p99: float | None = column("as ttft_sent_p50, 99th percentile", "s", default=None)
    ttft_sent_p999: float | None = column("as ttft_sent_p50, 99.9th percentile", "s", default=None)
    tpot_p50: float | None = column("time per output token after the first, (E2E - TTFT) / (tokens - 1) per "
                                    "request, median", "s/tok", default=None)
    tpot_p90: float | None = column("as tpot_p50, 90th percentile", "s/tok", default=None)
    tpot_p99: float | None = column("as tpot_p50, 99th percentile", "s/tok", default=None)
    tpot_p999: float | None = column("as tpot_p50, 99.9th percentile", "s/tok", default=None)
    itl_p50: float | None = column("inter-token latency: every gap between streamed chunks, pooled, median (a chunk "
                                   "may hold several tokens)", "s", default=None)
    itl_p90: float | None = column("as itl_p50, 90th percentile", "s", default=None)
    itl_p99: float | None = column("as itl_p50, 99th percentile", "s", default=None)
    itl_p999: float | None = column("as itl_p50, 99.9th percentile", "s", default=None)
    e2e_p50: float | None = column("a whole request from the scheduled send to its last byte, median", "s",
                                   default=None)
    e2e_p90: float | None = column("as e2e_p50, 90th percentile", "s", default=None)
    e2e_p99: float | None = column("as e2e_p50, 99th percentile", "s", default=None)
    e2e_p999: float | None = column("as e2e_p50, 99.9th percentile", "s", default=None)
    e2e_sent_p50: float | None = column("a whole request from the actual send, median", "s", default=None)
    e2e_sent_p90: float | None = column("as e2e_sent_p50, 90th percentile", "s", default=None)
    e2e_sent_p99: float | None = column("as e2e_sent_p50, 99th percentile", "s", default=None)
    e2e_sent_p999: float | None = column("as e2e_sent_p50, 99.9th percentile", "s", default=None)
    slo: str | None = column("JSON: the job's slo (ttft_ms, tpot_ms, e2e_ms)", default=None)
    goodput_per_s: float | None = column("completed requests that met every bound of the slo / the span (blank "
                                         "without an slo)", "req/s", default=None)
    schedule_lag_p50: float | None = column("actual minus scheduled send, median over every request", "s",
                                            default=None)
    schedule_lag_p99: float | None = column("actual minus scheduled send, 99th percentile: above "
                                            "verdict.max_schedule_lag_ms the client was the bottleneck", "s",
                                            default=None)
    schedule_lag_max: float | None = column("actual minus scheduled send, the largest", "s", default=None)
    sent_ratio: float | None = column("the rate the clients sent at / the rate their schedule asked (below "
                                      "verdict.min_sent_ratio: the client was the bottleneck)", "fraction",
                                      default=None)
    client_cpu_max: float | None = column("the busiest client actor's CPU time / its wall time over the schedule",
                                          "cores", default=None)
    requests_per_s_ci_low: float | None = column("low end of the 95 % Student-t interval of requests_per_s's mean "
                                                 "across repeats", "req/s", default=None)
    requests_per_s_ci_high: float | None = column("high end of that interval", "req/s", default=None)
    ttft_p99_ci_low: float | None = column("low end of the 95 % Student-t interval of the mean of each repeat's "
                                           "ttft_p99", "s", default=None)
    ttft_p99_ci_high: float | None = column("high end of that interval", "s", default=None)
    server_metrics: str | None = column("the server's Prometheus metrics scraped while the load ran: how many "
                                        "samples from where (server_metrics.parquet), or why none", default=None)
    # software
    torch_version: str = column("torch on the workers")
    ray_version: str = column("ray on the workers")
    transformers_version: str = column("transformers on the workers")
    python_version: str = column("Python on the workers")
    cuda_version: str = column("the CUDA torch was built with (empty without)")
    driver_version: str = column("the NVIDIA driver (empty without one)")
