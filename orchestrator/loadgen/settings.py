"""The job's `scenario` and `loadgen:` section, the checks that need both, and LoadGen's TestSettings.

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

from typing import Any, Literal

from pydantic import Field

from workers.errors import UserError
from workers.specs import StrictModel

Scenario = Literal["offline", "server", "single_stream", "multi_stream"]
Mode = Literal["performance", "accuracy", "find_peak"]
LOADGEN_SCENARIO = {"server": "Server", "single_stream": "SingleStream", "multi_stream": "MultiStream"}
QUICK_MIN_DURATION_S = 1.0
QUICK_MIN_QUERIES = {"server": 459, "single_stream": 64, "multi_stream": 662}
QUICK_EXPECTED_LATENCY_NS = 100_000
# The percentile LoadGen reports each scenario's latency at (mlperf.conf: target_latency_percentile).
HEADLINE_PERCENTILE = {"server": 99, "single_stream": 90, "multi_stream": 99}


class LoadGenSpec(StrictModel):
    """`loadgen:` of a job with `scenario: server | single_stream | multi_stream`."""

    mode: Mode = Field("performance", description="performance; accuracy: every sample once, scored; find_peak: "
                       "the highest server QPS LoadGen calls VALID")
    rules: Literal["quick", "mlperf"] = Field("quick", description="quick: seconds; mlperf: LoadGen's mlperf.conf")
    mlperf_model: str = Field("*", min_length=1, description="the model's name in mlperf.conf (bert, resnet50, ...) "
                              "with rules: mlperf; '*' takes the values every model shares")
    target_qps: float | None = Field(None, gt=0, description="server: queries per second offered (find_peak: where "
                                     "the search starts)")
    latency_bound_ms: float | None = Field(None, gt=0, description="server: the p99 bound LoadGen enforces (default "
                                           "100 ms, mlperf: the model's); single/multi stream: p90/p99 is held to it")
    samples_per_query: int = Field(8, gt=0, description="multi_stream: samples in each query")
    min_duration_s: float | None = Field(None, gt=0, description="default 1 s (quick) or 600 s (mlperf)")
    min_queries: int | None = Field(None, gt=0, description="default: the fewest queries LoadGen's early stopping "
                                    "accepts (quick), or mlperf.conf's")
    expected_latency_ms: float | None = Field(None, gt=0, description="single/multi stream: LoadGen pre-generates "
                                              "min_duration / this many queries (default 0.1 ms; mlperf: "
                                              "mlperf.conf's)")
    max_batch_wait_ms: float = Field(0.0, ge=0, description="an idle worker waits this long for a batch of bs "
                                      "samples to fill before it runs what is waiting (0: run at once)")
    qsl_rng_seed: int | None = Field(None, ge=0, description="LoadGen's seeds (default 0, mlperf: the round's)")
    sample_index_rng_seed: int | None = Field(None, ge=0)
    schedule_rng_seed: int | None = Field(None, ge=0)
    trace: bool = Field(True, description="LoadGen's trace log, which the per-query latency table is read from")
    find_peak_tolerance: float = Field(0.05, gt=0, lt=1, description="find_peak stops when the highest VALID and "
                                       "the lowest INVALID QPS are this close (fraction)")
    find_peak_max_runs: int = Field(8, ge=2, description="at most this many LoadGen runs in a find_peak search")


def check_loadgen(scenario: str, loadgen: LoadGenSpec | None, others: dict[str, Any]) -> LoadGenSpec | None:
    """The spec's `loadgen` as the run will use it, or a ValueError naming what cannot be served.
    `others` are the fields validated before it (engine, parallel, repeats)."""
    loadgen = loadgen or LoadGenSpec()
    if scenario == "offline":
        if loadgen != LoadGenSpec():
            raise ValueError("only read with scenario server, single_stream or multi_stream (scenario is offline)")
        return None
    if scenario == "server" and loadgen.target_qps is None:
        raise ValueError("target_qps is missing: a server run offers queries at this rate (queries per second)")
    if loadgen.mode == "find_peak" and scenario != "server":
        raise ValueError(f"mode find_peak searches a server QPS; scenario is {scenario}")
    if loadgen.target_qps is not None and scenario != "server":
        raise ValueError(f"target_qps is for scenario server; scenario {scenario} issues a query when the last one "
                         "is done")
    parallel, engine, repeats = others.get("parallel"), others.get("engine"), others.get("repeats", 1)
    if parallel is not None and parallel.tp > 1:
        raise ValueError(f"scenario {scenario} runs single-device workers; parallel.tp={parallel.tp} serves offline "
                         "runs only")
    if engine is not None and getattr(engine, "min_bs", 1) > 1:
        raise ValueError(f"scenario {scenario} hands the engine batches of 1 to bs samples; engine.min_bs is "
                         f"{engine.min_bs} (set it to 1)")
    if repeats > 1:
        raise ValueError(f"scenario {scenario} is one LoadGen run; repeats={repeats} is for offline runs")
    return loadgen


def build_test_settings(scenario: str, spec: LoadGenSpec, examples: int, *, accuracy: bool = False,
                  target_qps: float | None = None):
    """LoadGen's TestSettings for one test of this job (`target_qps`: a find_peak probe's rate)."""
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
    return ts


def latency_bound_s(scenario: str, spec: LoadGenSpec, settings) -> float | None:
    """The bound the row reports: LoadGen's server bound as it ran; the job's bound for the streams."""
    if scenario == "server":
        return settings.server_target_latency_ns / 1e9
    return spec.latency_bound_ms / 1e3 if spec.latency_bound_ms is not None else None
