"""LoadGen's TestSettings for a job's LoadGen load (orchestrator/spec/load.py), and what of them is not
MLPerf's.

Three rule sets give the defaults; every field the job sets overrides them:
- `quick` (default): min_duration 1 s and, per scenario, enough queries for LoadGen's early stopping
  to tolerate a tail: server 1,307 (5 queries over the bound may pass at p99: early_stopping.py),
  single_stream 64 (its p90 estimate is then the maximum), multi_stream 662 (p99: the maximum),
  offline 1 (one query of every sample LoadGen sizes from expected_qps).
- `smoke`: the fewest queries LoadGen accepts at all: server 459, where a single query over the
  bound makes the run INVALID; for a first look, not a figure.
- `mlperf`: LoadGen's own mlperf.conf, compiled into the wheel, read with `TestSettings.FromConfig`
  for `mlperf_model` (600 s minimum duration, the round's seeds, the model's bounds), then a job's
  `user_conf` (conf_type 2: a second conf_type-1 read in one process would lose mlperf.conf's values
  and log "Multiple conf files"). Whatever then differs from mlperf.conf in what MLPerf fixes
  (duration, counts, seeds, bounds, percentiles, the sample count) is a deviation: the row says
  "not MLPerf-compliant: ..." and is INVALID.
Stream queries are pre-generated for 2 x min_duration at the expected latency; quick runs take it
from the warmed workers (half the measured query time, so LoadGen never runs out), capped so at most
MAX_GENERATED_QUERIES are generated (a 600 s run at 0.1 ms would otherwise hold 12 M in memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from orchestrator.spec.load import LoadGenLoad
from workers.errors import UserError

LOADGEN_SCENARIO = {"server": "Server", "single_stream": "SingleStream", "multi_stream": "MultiStream",
                    "offline": "Offline"}
QUICK_MIN_DURATION_S = 1.0
MIN_QUERIES = {
    "quick": {"server": 1307, "single_stream": 64, "multi_stream": 662, "offline": 1},
    "smoke": {"server": 459, "single_stream": 64, "multi_stream": 662, "offline": 1},
}
MAX_GENERATED_QUERIES = 1_000_000
FALLBACK_EXPECTED_S = 1e-4  # a stream's expected latency when nothing was measured (tests calling this alone)
# Server bounds of token latencies when neither the job nor mlperf.conf says (llama2-70b's: 2 s, 200 ms)
DEFAULT_TTFT_MS, DEFAULT_TPOT_MS = 2000.0, 200.0
# What MLPerf fixes: (TestSettings field, how a row says it, the unit it is printed in)
FIXED = (("min_duration_ms", "min_duration", 1e-3, "s"), ("min_query_count", "min_queries", 1, ""),
         ("server_target_latency_ns", "server latency bound", 1e-6, "ms"),
         ("server_target_latency_percentile", "server percentile", 100, "%"),
         ("single_stream_target_latency_percentile", "single_stream percentile", 100, "%"),
         ("multi_stream_target_latency_percentile", "multi_stream percentile", 100, "%"),
         ("multi_stream_samples_per_query", "samples_per_query", 1, ""),
         ("qsl_rng_seed", "qsl_rng_seed", 1, ""), ("sample_index_rng_seed", "sample_index_rng_seed", 1, ""),
         ("schedule_rng_seed", "schedule_rng_seed", 1, ""), ("use_token_latencies", "use_token_latencies", 1, ""),
         ("ttft_latency", "ttft bound", 1e-6, "ms"), ("tpot_latency", "tpot bound", 1e-6, "ms"),
         ("sample_concatenate_permutation", "sample_concatenate_permutation", 1, ""))


@dataclass(frozen=True)
class Calibration:
    """What the warmed workers took, timed from the driver: one sample alone, and one full batch."""

    query_s: float  # one sample, hand-over included
    batch_s: float  # a batch of bs samples
    bs: int
    workers: int

    @property
    def samples_per_s(self) -> float:
        return self.workers * self.bs / self.batch_s if self.batch_s > 0 else 0.0


@dataclass
class Built:
    settings: Any  # mlperf_loadgen.TestSettings
    deviations: list[str] = field(default_factory=list)  # under rules mlperf: what differs from mlperf.conf


def build_test_settings(load: LoadGenLoad, examples: int, *, accuracy: bool = False, target_qps: float | None = None,
                        calibration: Calibration | None = None, generates: bool = False) -> Built:
    """LoadGen's TestSettings for one test of this job (`target_qps`: a find_peak probe's rate;
    `generates`: the task makes tokens, so token latencies are on unless the job says otherwise)."""
    import mlperf_loadgen as lg

    name, scenario = LOADGEN_SCENARIO[load.scenario], load.scenario
    ts, reference = lg.TestSettings(), None
    ts.scenario = getattr(lg.TestScenario, name)
    deviations: list[str] = []
    if load.rules == "mlperf":
        reference = _mlperf_conf(lg, load.mlperf_model, name)
        _mlperf_conf(lg, load.mlperf_model, name, ts)
        if load.user_conf is not None and ts.FromConfig(load.user_conf, load.mlperf_model, name, 2) != 0:
            raise UserError(f"load.user_conf: LoadGen could not read {load.user_conf} (a missing file or a line "
                            "that is not `model.scenario.key = value`)")
        wanted = int(ts.performance_sample_count_override)
        if wanted > examples:  # the QSL holds the whole dataset; LoadGen cannot draw more distinct samples
            deviations.append(f"performance_sample_count {examples} (mlperf.conf: {wanted}; the dataset has "
                              f"{examples} examples)")
            ts.performance_sample_count_override = examples
    else:
        ts.min_duration_ms = int(QUICK_MIN_DURATION_S * 1e3)
        ts.min_query_count = MIN_QUERIES[load.rules][scenario]
    ts.mode = lg.TestMode.AccuracyOnly if accuracy else lg.TestMode.PerformanceOnly
    _overrides(ts, load, target_qps)
    _token_latencies(ts, load, generates)
    _expected(ts, load, calibration)
    if reference is not None:
        deviations += _deviations(ts, reference)
    return Built(ts, deviations)


def _mlperf_conf(lg: Any, model: str, scenario: str, ts: Any = None) -> Any:
    ts = ts if ts is not None else lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, scenario)
    if ts.FromConfig("", model, scenario, 0) != 0:
        raise UserError(f"load.mlperf_model: LoadGen could not read its mlperf.conf for '{model}'")
    return ts


def _overrides(ts: Any, load: LoadGenLoad, target_qps: float | None) -> None:
    """The job's own fields, over whichever rules gave the defaults."""
    if load.min_duration_s is not None:
        ts.min_duration_ms = int(round(load.min_duration_s * 1e3))
    if load.min_queries is not None:
        ts.min_query_count = load.min_queries
    if load.scenario == "server":
        ts.server_target_qps = float(target_qps or load.target_qps)
        if load.latency_bound_ms is not None:
            ts.server_target_latency_ns = int(round(load.latency_bound_ms * 1e6))
        ts.server_coalesce_queries = load.server_coalesce_queries
        ts.server_max_async_queries = _max_async(load, ts)
    if load.scenario == "multi_stream":
        ts.multi_stream_samples_per_query = load.samples_per_query
    for seed in ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed", "accuracy_log_rng_seed"):
        if getattr(load, seed) is not None:
            setattr(ts, seed, getattr(load, seed))
    if load.accuracy_log_sampling_target is not None:
        ts.accuracy_log_sampling_target = load.accuracy_log_sampling_target
    if load.accuracy_log_probability is not None:
        ts.accuracy_log_probability = load.accuracy_log_probability


def _max_async(load: LoadGenLoad, ts: Any) -> int:
    """The job's limit; for a find_peak probe, 10 x what the bound lets be outstanding at the rate (a
    rate far above capacity then ends at once, an error and INVALID, instead of draining a backlog)."""
    if load.server_max_async_queries is not None:
        return load.server_max_async_queries
    if load.mode != "find_peak":
        return 0
    return max(100, math.ceil(10 * ts.server_target_qps * ts.server_target_latency_ns / 1e9))


def _expected(ts: Any, load: LoadGenLoad, calibration: Calibration | None) -> None:
    """Stream latencies and Offline's rate LoadGen plans its queries by: the job's, else measured."""
    floor_s = 2 * ts.min_duration_ms / 1e3 / MAX_GENERATED_QUERIES  # at most this many queries generated
    if load.scenario in ("single_stream", "multi_stream"):
        if load.expected_latency_ms is not None:
            seconds = load.expected_latency_ms / 1e3
        else:
            seconds = calibration.query_s / 2 if calibration is not None else FALLBACK_EXPECTED_S
            if load.scenario == "multi_stream" and calibration is not None:
                seconds = calibration.batch_s / 2
        ns = max(seconds, floor_s) * 1e9
        if load.scenario == "single_stream":
            ts.single_stream_expected_latency_ns = ns
        else:
            ts.multi_stream_expected_latency_ns = ns
    if load.scenario == "offline":
        measured = calibration.samples_per_s if calibration is not None else 0.0
        ts.offline_expected_qps = float(load.expected_qps or measured or 1.0)


def _deviations(ts: Any, reference: Any) -> list[str]:
    """What this run's settings change of what mlperf.conf fixes for the model."""
    out = []
    for attr, label, scale, unit in FIXED:
        mine, theirs = getattr(ts, attr), getattr(reference, attr)
        if mine != theirs:
            out.append(f"{label} {_show(mine, scale)}{unit} (mlperf.conf: {_show(theirs, scale)}{unit})")
    return out


def _show(value: Any, scale: float) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if scale == 1 and isinstance(value, int) else f"{value * scale:g}"


def _token_latencies(ts: Any, spec: LoadGenLoad, generates: bool) -> None:
    """Token latencies on or off (the job's `use_token_latencies`, else on for a task that generates or
    an LLM of mlperf.conf), and the Server's TTFT and TPOT bounds: the job's, else mlperf.conf's
    (FromConfig set them for its LLMs), else the defaults."""
    ts.use_token_latencies = spec.uses_tokens(generates)
    if not ts.use_token_latencies:
        return
    if spec.ttft_latency_ms is not None:
        ts.ttft_latency = int(round(spec.ttft_latency_ms * 1e6))
    elif spec.rules != "mlperf" or not spec.token_model():
        ts.ttft_latency = int(DEFAULT_TTFT_MS * 1e6)
    if spec.tpot_latency_ms is not None:
        ts.tpot_latency = int(round(spec.tpot_latency_ms * 1e6))
    elif spec.rules != "mlperf" or not spec.token_model():
        ts.tpot_latency = int(DEFAULT_TPOT_MS * 1e6)


def token_bounds_s(settings) -> tuple[float | None, float | None]:
    """(TTFT, TPOT) bounds LoadGen enforced (s); None without token latencies."""
    if not settings.use_token_latencies:
        return None, None
    return settings.ttft_latency / 1e9, settings.tpot_latency / 1e9


def latency_bound_s(load: LoadGenLoad, settings: Any) -> float | None:
    """The bound the row reports: LoadGen's server bound as it ran; the job's bound for the streams."""
    if load.scenario == "server":
        return settings.server_target_latency_ns / 1e9
    return load.latency_bound_ms / 1e3 if load.latency_bound_ms is not None else None
