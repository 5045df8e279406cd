"""The job's `load:`: who decides when work arrives. A union on `kind`, one model per way to drive load.

- `offline` (the default): raybench's sharded Offline: every example, as fast as the workers go,
  cut into shards (orchestrator/modes/offline/).
- `loadgen`: MLPerf LoadGen decides when queries arrive and whether the run is VALID
  (orchestrator/modes/loadgen/); `scenario` is LoadGen's.
A later way to drive load adds its model here and its mode under orchestrator/modes/.

Jobs written before `load:` existed say `scenario:` (and `loadgen:`) at the top level: `legacy_load`
turns them into a `load:` and says so in one line.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal, Union

from pydantic import Field

from workers.specs import StrictModel

log = logging.getLogger(__name__)

Scenario = Literal["server", "single_stream", "multi_stream"]
Mode = Literal["performance", "accuracy", "find_peak"]


class OfflineLoad(StrictModel):
    """`load: {kind: offline}`: every example as fast as possible, sharded over the workers."""

    kind: Literal["offline"] = "offline"


class LoadGenLoad(StrictModel):
    """`load: {kind: loadgen, scenario: server | single_stream | multi_stream, ...}`."""

    kind: Literal["loadgen"] = "loadgen"
    scenario: Scenario = Field(..., description="LoadGen's scenario: server (queries arrive at target_qps), "
                               "single_stream (one query at a time), multi_stream (samples_per_query at a time)")
    mode: Mode = Field("performance", description="performance; accuracy: every sample once, scored; find_peak: "
                       "the highest server QPS LoadGen calls VALID")
    rules: Literal["quick", "mlperf"] = Field("quick", description="quick: seconds; mlperf: LoadGen's mlperf.conf")
    mlperf_model: str = Field("*", min_length=1, description="the model's name in mlperf.conf (bert, resnet50, ...) "
                              "with rules: mlperf; '*' takes the values every model shares")
    target_qps: float | None = Field(None, gt=0, description="server: queries per second offered (find_peak: where "
                                     "the search starts)")
    latency_bound_ms: float | None = Field(None, gt=0, description="server: the p99 bound LoadGen enforces (default "
                                           "100 ms, mlperf: the model's); single/multi stream: p90/p99 is held to it")
    use_token_latencies: bool | None = Field(
        None, description="LoadGen's token latencies: each sample's first token reported as it exists "
        "(FirstTokenComplete), its completion with its token count; TTFT and TPOT in LoadGen's log. Default: on for "
        "task generate (and mlperf.conf's for an mlperf_model), off otherwise")
    ttft_latency_ms: float | None = Field(None, gt=0, description="server with token latencies: the p99 time to "
                                          "first token LoadGen holds the run to (default 2000 ms; mlperf: the "
                                          "model's, e.g. llama2-70b 2000, llama3_1-8b-interactive 500)")
    tpot_latency_ms: float | None = Field(None, gt=0, description="server with token latencies: the p99 time per "
                                          "output token bound (default 200 ms; mlperf: the model's, e.g. "
                                          "llama2-70b 200, llama3_1-8b-interactive 30)")
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

    def check(self) -> None:
        """What the fields alone cannot serve (a ValueError naming it); checks that need the rest
        of the job are the job's (orchestrator/spec/job.py)."""
        if self.scenario == "server" and self.target_qps is None:
            raise ValueError("target_qps is missing: a server run offers queries at this rate (queries per second)")
        if self.mode == "find_peak" and self.scenario != "server":
            raise ValueError(f"mode find_peak searches a server QPS; scenario is {self.scenario}")
        if self.target_qps is not None and self.scenario != "server":
            raise ValueError(f"target_qps is for scenario server; scenario {self.scenario} issues a query when the "
                             "last one is done")
        for name in ("ttft_latency_ms", "tpot_latency_ms"):
            if getattr(self, name) is not None and self.scenario != "server":
                raise ValueError(f"{name} is a server bound (LoadGen holds the streams to their query latency); "
                                 f"scenario is {self.scenario}")
            if getattr(self, name) is not None and self.use_token_latencies is False:
                raise ValueError(f"{name} needs use_token_latencies (it is false)")

    def token_model(self) -> bool:
        """An LLM of mlperf.conf (its token latencies on) named with rules: mlperf."""
        from orchestrator.spec.mlperf_conf import token_models

        return self.rules == "mlperf" and self.mlperf_model in token_models()

    def uses_tokens(self, generates: bool) -> bool:
        """Whether LoadGen measures token latencies for a job whose task does (not) generate."""
        if self.use_token_latencies is not None:
            return self.use_token_latencies
        return generates or self.token_model()


Load = Annotated[Union[OfflineLoad, LoadGenLoad], Field(discriminator="kind")]
LOAD_KINDS = ("offline", "loadgen")


def legacy_load(raw: dict[str, Any]) -> dict[str, Any]:
    """A job that says `scenario:` (and `loadgen:`) at the top level, as jobs did before `load:`,
    with those turned into its `load:` (one line says so). They may also stand beside a `load:`
    (`--set loadgen.mode=find_peak` on a job file that has one): they are applied on top of it.
    Anything else is returned as it is."""
    if "scenario" not in raw and "loadgen" not in raw:
        return raw
    data = dict(raw)
    base = data.pop("load", None) or {}
    scenario, section = data.pop("scenario", None), data.pop("loadgen", None) or {}
    if not isinstance(base, dict) or not isinstance(section, dict):
        raise ValueError("load: and loadgen: are mappings (load: {kind: loadgen, scenario: server, ...})")
    load = dict(base)
    if scenario == "offline" or (scenario is None and load.get("kind", "offline") == "offline" and not section):
        load = {"kind": "offline"}
    elif scenario is not None:
        load.update(kind="loadgen", scenario=scenario)
    if section:
        if load.get("kind", "offline") == "offline":
            raise ValueError("loadgen: is only read with scenario server, single_stream or multi_stream "
                             "(scenario is offline)")
        load.update(section)
    data["load"] = load
    shown = f", scenario: {load['scenario']}" if "scenario" in load else ""
    log.warning("scenario:/loadgen: are now load: {kind: %s%s, ...}; this job runs as written", load["kind"], shown)
    return data
