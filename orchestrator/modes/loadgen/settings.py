"""LoadGen's TestSettings for a job's `loadgen:` section (orchestrator/spec/load.py), and its bounds.

Two rule sets give the defaults; every field the job sets overrides them:
- `quick` (default): the shortest run LoadGen can call VALID. min_duration 1 s, and per scenario the
  fewest queries LoadGen's early-stopping check accepts when no query is over its bound (it prints
  these counts in the summary's "Early Stopping Result"): server 459 (p99), single_stream 64 (p90),
  multi_stream 662 (p99, also mlperf.conf's MultiStream min_query_count).
- `mlperf`: LoadGen's own mlperf.conf, compiled into the wheel, read with `TestSettings.FromConfig`
  for `mlperf_model` (600 s minimum duration, the round's seeds, the model's server latency bound,
  e.g. bert 130 ms; "*" takes the values every model shares).
"""

from __future__ import annotations

from orchestrator.spec.load import LoadGenLoad
from workers.errors import UserError

LOADGEN_SCENARIO = {"server": "Server", "single_stream": "SingleStream", "multi_stream": "MultiStream"}
QUICK_MIN_DURATION_S = 1.0
QUICK_MIN_QUERIES = {"server": 459, "single_stream": 64, "multi_stream": 662}
QUICK_EXPECTED_LATENCY_NS = 100_000
# The percentile LoadGen reports each scenario's latency at (mlperf.conf: target_latency_percentile).
HEADLINE_PERCENTILE = {"server": 99, "single_stream": 90, "multi_stream": 99}
# Server bounds of token latencies when neither the job nor mlperf.conf says (llama2-70b's: 2 s, 200 ms)
DEFAULT_TTFT_MS, DEFAULT_TPOT_MS = 2000.0, 200.0


def build_test_settings(scenario: str, spec: LoadGenLoad, examples: int, *, accuracy: bool = False,
                  target_qps: float | None = None, generates: bool = False):
    """LoadGen's TestSettings for one test of this job (`target_qps`: a find_peak probe's rate;
    `generates`: the task makes tokens, so token latencies are on unless the job says otherwise)."""
    import mlperf_loadgen as lg

    name = LOADGEN_SCENARIO[scenario]
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, name)
    if spec.rules == "mlperf":
        if ts.FromConfig("", spec.mlperf_model, name, 0) != 0:
            raise UserError(f"loadgen.mlperf_model: LoadGen could not read mlperf.conf for '{spec.mlperf_model}'")
        # The QSL holds the whole prepared dataset; LoadGen cannot draw more distinct samples than it has.
        ts.performance_sample_count_override = min(int(ts.performance_sample_count_override), examples)
    else:
        ts.min_duration_ms = int(QUICK_MIN_DURATION_S * 1e3)
        ts.min_query_count = QUICK_MIN_QUERIES[scenario]
        # LoadGen pre-generates min_duration / expected latency stream queries and the run is INVALID if
        # they run out first; a quick run's few thousand queries cost nothing, so expect 0.1 ms.
        ts.single_stream_expected_latency_ns = ts.multi_stream_expected_latency_ns = QUICK_EXPECTED_LATENCY_NS
    ts.mode = lg.TestMode.AccuracyOnly if accuracy else lg.TestMode.PerformanceOnly
    if spec.min_duration_s is not None:
        ts.min_duration_ms = int(round(spec.min_duration_s * 1e3))
    if spec.min_queries is not None:
        ts.min_query_count = spec.min_queries
    if scenario == "server":
        ts.server_target_qps = float(target_qps or spec.target_qps)
        if spec.latency_bound_ms is not None:
            ts.server_target_latency_ns = int(round(spec.latency_bound_ms * 1e6))
    if scenario == "multi_stream":
        ts.multi_stream_samples_per_query = spec.samples_per_query
    if spec.expected_latency_ms is not None:
        ns = spec.expected_latency_ms * 1e6
        ts.single_stream_expected_latency_ns, ts.multi_stream_expected_latency_ns = ns, ns
    for seed in ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed"):
        if getattr(spec, seed) is not None:
            setattr(ts, seed, getattr(spec, seed))
    _token_latencies(ts, spec, generates)
    return ts


def _token_latencies(ts, spec: LoadGenLoad, generates: bool) -> None:
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


def latency_bound_s(scenario: str, spec: LoadGenLoad, settings) -> float | None:
    """The bound the row reports: LoadGen's server bound as it ran; the job's bound for the streams."""
    if scenario == "server":
        return settings.server_target_latency_ns / 1e9
    return spec.latency_bound_ms / 1e3 if spec.latency_bound_ms is not None else None
