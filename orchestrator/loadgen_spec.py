"""The job's `scenario` and `loadgen:` section, and the checks that need both with the rest of the job.

A section of the job spec like any other (orchestrator/spec.py reads it); what LoadGen is told
follows from it in orchestrator/run/loadgen/settings.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from workers.specs import StrictModel

Scenario = Literal["offline", "server", "single_stream", "multi_stream"]
Mode = Literal["performance", "accuracy", "find_peak"]


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
    qsl_rng_seed: int | None = Field(None, ge=0, description="LoadGen's seed for the samples loaded (default 0, "
                                     "mlperf: the round's)")
    sample_index_rng_seed: int | None = Field(None, ge=0, description="LoadGen's seed for the order samples are "
                                              "drawn in (default 0, mlperf: the round's)")
    schedule_rng_seed: int | None = Field(None, ge=0, description="LoadGen's seed for the server arrival schedule "
                                          "(default 0, mlperf: the round's)")
    hand_over: Literal["direct", "actor_call"] = Field(
        "direct", description="how the driver hands a batch to a Ray worker: direct (a connection to each worker, "
        "opened once; about 2 ms less per query) or actor_call (a Ray task per batch); --no-ray runs in process")
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
