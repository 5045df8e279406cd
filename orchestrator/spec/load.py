"""The job's `load:`: who decides when work arrives. A union on `kind`, one model per way to drive load.

- `offline` (the default): raybench's sharded Offline: every example, as fast as the workers go,
  cut into shards (orchestrator/modes/offline/).
- `loadgen`: MLPerf LoadGen decides when queries arrive and whether the run is VALID
  (orchestrator/modes/loadgen/); `scenario` is LoadGen's.
- `endpoint`: a schedule of send times made in advance (a rate: constant, Poisson or gamma; a
  replayed trace; or a closed loop at a concurrency) and sent to a running server by client actors
  (orchestrator/modes/endpoint/); only for jobs that name an `endpoint:`, whose load is this or
  `loadgen` (server and single_stream: `EndpointJobLoad`).
A later way to drive load adds its model here and its mode under orchestrator/modes/.

Jobs written before `load:` existed say `scenario:` (and `loadgen:`) at the top level: `legacy_load`
turns them into a `load:` and says so in one line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field

from workers.specs import StrictModel

log = logging.getLogger(__name__)

Scenario = Literal["server", "single_stream", "multi_stream", "offline"]
Mode = Literal["performance", "accuracy", "find_peak"]


class OfflineLoad(StrictModel):
    """`load: {kind: offline}`: every example as fast as possible, sharded over the workers."""

    kind: Literal["offline"] = "offline"


class LoadGenLoad(StrictModel):
    """`load: {kind: loadgen, scenario: server | single_stream | multi_stream | offline, ...}`."""

    kind: Literal["loadgen"] = "loadgen"
    scenario: Scenario = Field(..., description="LoadGen's scenario: server (queries arrive at target_qps), "
                               "single_stream (one query at a time), multi_stream (samples_per_query at a time), "
                               "offline (LoadGen's Offline: one query of every sample, judged by LoadGen; not "
                               "raybench's sharded offline load)")
    mode: Mode = Field("performance", description="performance; accuracy: every sample once, scored; find_peak: "
                       "the highest server QPS LoadGen calls VALID")
    rules: Literal["quick", "smoke", "mlperf"] = Field(
        "quick", description="quick: seconds, long enough for early stopping to tolerate a tail (server: 1,307 "
        "queries, 5 over the bound); smoke: the fewest queries LoadGen accepts at all (server 459: none over the "
        "bound); mlperf: LoadGen's mlperf.conf for mlperf_model (600 s, the round's seeds, the model's bounds)")
    mlperf_model: str | None = Field(None, min_length=1, description="the model's name in LoadGen's mlperf.conf "
                                     "(bert, resnet50, llama2-70b, ...): required with rules mlperf")
    target_qps: float | None = Field(None, gt=0, description="server: queries per second offered (find_peak: where "
                                     "the search starts)")
    expected_qps: float | None = Field(None, gt=0, description="offline: the samples per second LoadGen sizes its "
                                       "one query for (default: measured on the warmed workers)")
    latency_bound_ms: float | None = Field(None, gt=0, description="server: the p99 bound LoadGen enforces (default "
                                           "100 ms, mlperf: the model's); single/multi stream: the early-stopping "
                                           "estimate of p90/p99 is held to it")
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
    min_duration_s: float | None = Field(None, gt=0, description="default 1 s (quick, smoke) or 600 s (mlperf)")
    min_queries: int | None = Field(None, gt=0, description="default: quick server 1,307, smoke server 459, "
                                    "single_stream 64, multi_stream 662, offline 1; mlperf: mlperf.conf's")
    expected_latency_ms: float | None = Field(None, gt=0, description="single/multi stream: LoadGen pre-generates "
                                              "2 x min_duration / this many queries (default: half the latency "
                                              "measured on the warmed workers; mlperf: mlperf.conf's)")
    max_batch_wait_ms: float = Field(0.0, ge=0, description="server: an idle worker waits this long for a batch of "
                                     "bs samples to fill before it runs what is waiting (0: run at once)")
    qsl_rng_seed: int | None = Field(None, ge=0, description="LoadGen's seed for the samples loaded (default 0, "
                                     "mlperf: the round's)")
    sample_index_rng_seed: int | None = Field(None, ge=0, description="LoadGen's seed for the order samples are "
                                              "drawn in (default 0, mlperf: the round's)")
    schedule_rng_seed: int | None = Field(None, ge=0, description="LoadGen's seed for the server arrival schedule "
                                          "(default 0, mlperf: the round's)")
    server_max_async_queries: int | None = Field(
        None, ge=0, description="server: LoadGen stops issuing (an error: INVALID) once this many queries are "
        "outstanding; 0 = no limit; default 0, and for find_peak probes 10 x target_qps x the bound (a rate far "
        "above capacity ends at once instead of draining a backlog)")
    server_coalesce_queries: bool = Field(False, description="server: LoadGen merges queries already due into one "
                                          "issue call (each keeps its own scheduled time)")
    server_num_issue_query_threads: int = Field(0, ge=0, description="server: LoadGen's issuing threads; only 0 "
                                                "works from Python (its thread registration is not bound)")
    accuracy_log_sampling_target: int | None = Field(None, ge=0, description="performance mode: about this many "
                                                     "responses go to LoadGen's accuracy log")
    accuracy_log_probability: float | None = Field(None, ge=0, le=1, description="performance mode: the chance each "
                                                   "response goes to LoadGen's accuracy log")
    accuracy_log_rng_seed: int | None = Field(None, ge=0, description="the seed of that sampling")
    audit: str | None = Field(None, min_length=1, description="a compliance test: TEST01 (performance-mode "
                              "responses equal accuracy mode's), TEST04 (the same sample again is not much faster), "
                              "or the path of an audit.config to run with; none by default (an audit.config in the "
                              "working directory is never read)")
    user_conf: str | None = Field(None, min_length=1, description="a LoadGen user.conf read after mlperf.conf (rules "
                                  "mlperf): target_qps and expected latencies there are a submitter's own; a changed "
                                  "duration, count, seed or bound makes the row not MLPerf-compliant")
    batch_timeout_s: float | None = Field(None, gt=0, description="a batch not back within this long counts as its "
                                          "worker's death (hung, not answering); default 20 x the warmed batch time, "
                                          "at least 30 s")
    hand_over: Literal["direct", "actor_call"] = Field(
        "direct", description="how the driver hands a batch to a Ray worker: direct (a connection to each worker, "
        "opened once; about 2 ms less per query) or actor_call (a Ray task per batch); --no-ray runs in process")
    trace: bool | None = Field(None, description="LoadGen's trace log (the per-query latencies and issue delays are "
                               "read from it); default on, off with rules mlperf (gigabytes at MLPerf's length)")
    find_peak_tolerance: float = Field(0.05, gt=0, lt=1, description="find_peak stops when the highest VALID and "
                                       "the lowest INVALID QPS are this close (fraction)")
    find_peak_max_runs: int = Field(8, ge=2, description="at most this many LoadGen runs in a find_peak search")

    @property
    def keeps_trace(self) -> bool:
        return self.trace if self.trace is not None else self.rules != "mlperf"

    def check(self) -> None:
        """What the fields alone cannot serve (a ValueError naming it); checks that need the rest
        of the job are the job's (orchestrator/spec/job.py)."""
        if self.scenario == "server" and self.target_qps is None:
            raise ValueError("target_qps is missing: a server run offers queries at this rate (queries per second)")
        if self.mode == "find_peak" and self.scenario != "server":
            raise ValueError(f"mode find_peak searches a server QPS; scenario is {self.scenario}")
        if self.target_qps is not None and self.scenario != "server":
            raise ValueError(f"target_qps is for scenario server; scenario {self.scenario} issues a query when the "
                             "last one is done" if self.scenario != "offline" else
                             "target_qps is for scenario server; offline takes expected_qps")
        for name in ("ttft_latency_ms", "tpot_latency_ms"):
            if getattr(self, name) is not None and self.scenario != "server":
                raise ValueError(f"{name} is a server bound (LoadGen holds the streams to their query latency); "
                                 f"scenario is {self.scenario}")
            if getattr(self, name) is not None and self.use_token_latencies is False:
                raise ValueError(f"{name} needs use_token_latencies (it is false)")
        if self.max_batch_wait_ms and self.scenario in ("single_stream", "multi_stream"):
            raise ValueError(f"max_batch_wait_ms: scenario {self.scenario} issues the next query only when the last "
                             "is done, so a partial batch never fills: every query would wait it out (leave it 0)")
        if self.server_num_issue_query_threads:
            raise ValueError("server_num_issue_query_threads: LoadGen's Python bindings cannot register issue "
                             "threads (RegisterIssueQueryThread is not bound), so LoadGen would wait for them forever; "
                             "leave it 0")
        self._check_model()
        self._check_audit()

    def _check_audit(self) -> None:
        if self.audit is None:
            return
        if self.audit.upper() in ("TEST06", "TEST07", "TEST08", "TEST09"):
            raise ValueError(f"audit: {self.audit} checks generated tokens (LLM benchmarks); this load runs "
                             "TEST01, TEST04 or an audit.config path")
        if self.audit.upper() not in ("TEST01", "TEST04") and not Path(self.audit).expanduser().is_file():
            raise ValueError(f"audit: '{self.audit}' is neither TEST01, TEST04 nor an audit.config file")
        if self.mode != "performance":
            raise ValueError(f"audit: a compliance test runs beside a performance run; mode is {self.mode}")

    def _check_model(self) -> None:
        from orchestrator.spec.mlperf_conf import models

        if self.rules == "mlperf" and self.mlperf_model is None:
            raise ValueError(f"rules mlperf reads mlperf.conf for mlperf_model; name one of: {', '.join(models())}")
        if self.mlperf_model is not None and self.mlperf_model not in models():
            raise ValueError(f"mlperf_model: '{self.mlperf_model}' is not in LoadGen's mlperf.conf (MLPerf's own "
                             f"names: bert, not bert-99); one of: {', '.join(models())}")

    def token_model(self) -> bool:
        """An LLM of mlperf.conf (its token latencies on) named with rules: mlperf."""
        from orchestrator.spec.mlperf_conf import token_models

        return self.rules == "mlperf" and self.mlperf_model in token_models()

    def uses_tokens(self, generates: bool) -> bool:
        """Whether LoadGen measures token latencies for a job whose task does (not) generate."""
        if self.use_token_latencies is not None:
            return self.use_token_latencies
        return generates or self.token_model()


Arrival = Literal["constant", "poisson", "gamma"]


class EndpointLoad(StrictModel):
    """`load: {kind: endpoint, rate: 8, ...}`: when each request to a running server is sent.

    Open loop (`rate` or `trace`): every send time is scheduled before the run starts and does not
    wait for answers, so a slow server meets requests at the rate users would send them. Closed
    loop (`concurrency`): a request is sent when one of the `concurrency` in flight ends."""

    kind: Literal["endpoint"] = "endpoint"
    rate: float | None = Field(None, gt=0, description="open loop: requests per second offered, over every client "
                               "(find_peak: where the search starts)")
    arrival: Arrival = Field("poisson", description="with rate: constant (evenly spaced), poisson (exponential "
                             "gaps) or gamma (gaps of shape `burstiness`)")
    burstiness: float = Field(1.0, gt=0, description="gamma's shape: 1 is Poisson, below 1 burstier, above 1 more "
                              "even (the gaps' CV is 1/sqrt(burstiness))")
    concurrency: int | None = Field(None, gt=0, description="closed loop: requests in flight at once, over every "
                                    "client (a request is sent when one ends)")
    trace: str | None = Field(None, description="open loop replayed from a JSONL file, one request a line: "
                              "{\"t\": send time in s from the start, \"input_tokens\": n, \"output_tokens\": m} "
                              "(lengths optional)")
    requests: int | None = Field(None, gt=0, description="measured requests (default 100, or the whole trace); with "
                                 "duration_s, whichever ends first")
    duration_s: float | None = Field(None, gt=0, description="the measured schedule's length, s (with rate or "
                                     "trace)")
    warmup_requests: int = Field(0, ge=0, description="requests sent (one at a time per client) before the measured "
                                 "schedule starts, and left out of every figure")
    seed: int = Field(0, description="seed of the arrival times and of which prompt each request takes")
    mode: Literal["performance", "find_peak"] = Field(
        "performance", description="performance: one schedule; find_peak: the highest rate whose requests meet the "
        "job's slo at p99 (docs/endpoint.md states the rule), searched from `rate`")
    find_peak_tolerance: float = Field(0.1, gt=0, lt=1, description="find_peak stops when the highest passing and "
                                       "the lowest failing rates are this close (fraction)")
    find_peak_max_runs: int = Field(8, ge=2, description="at most this many probes in a find_peak search")

    def check(self) -> None:
        """What the fields alone cannot serve (a ValueError naming it)."""
        given = [name for name in ("rate", "concurrency", "trace") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of rate (open loop), trace (open loop, replayed) or concurrency "
                             f"(closed loop){'; got ' + ', '.join(given) if given else ''}")
        if self.concurrency is not None and self.duration_s is not None:
            raise ValueError("duration_s is for an open loop (rate or trace); a closed loop runs `requests`")
        if self.mode == "find_peak" and self.rate is None:
            raise ValueError("find_peak searches a rate: give rate (where the search starts)")

    @property
    def measured_requests(self) -> int | None:
        """How many requests the schedule has, where the fields say (a trace says for itself)."""
        if self.requests is not None:
            return self.requests
        return None if self.trace is not None or self.duration_s is not None else 100


Load = Annotated[Union[OfflineLoad, LoadGenLoad, EndpointLoad], Field(discriminator="kind")]
EndpointJobLoad = Annotated[Union[EndpointLoad, LoadGenLoad], Field(discriminator="kind")]  # an endpoint job's
LOAD_KINDS = ("offline", "loadgen", "endpoint")


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
