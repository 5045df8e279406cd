"""A job: what every job has (name, load, repeats, verdict, sweep) and what answers it (its target).

A job is composed, not one flat class: its `load:` is a union of the ways to drive load
(orchestrator/spec/load.py), and its target is chosen by what the job names. Today that is always
engines on worker actors: `EngineJob` is `WorkerConfig` (the model, engine, precision, task and data
every worker is given, workers/specs.py) plus what only the driver needs (how many workers, their
resources, sharding, retries). A target that brings no model (a running server) is another
`JobBase` subclass with its own fields, and `TARGETS` maps the key that names it to its class:
`EndpointJob`, named by `endpoint:` (orchestrator/spec/endpoint.py has its parts), driven by its own
load (`kind: endpoint`) or by LoadGen's (`kind: loadgen`, server and single_stream).
Cross-checks between the load and the target are `model_validator(mode="after")`s, so they see the
whole job whatever the order of its fields.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from orchestrator.spec.endpoint import EndpointSpec, PromptsSpec, SloSpec
from orchestrator.spec.load import EndpointJobLoad, EndpointLoad, Load, LoadGenLoad, OfflineLoad, legacy_load
from orchestrator.spec.verdict import VerdictSpec
from workers.specs import StrictModel, WorkerConfig

# Fields a `sweep:` may list several values for; each grid point is validated as a full job.
SWEEPABLE = ("bs", "precision", "seq_len", "engine", "workers", "val_precision", "parallel")
ENDPOINT_SWEEPABLE = ("load.rate", "load.concurrency", "load.burstiness", "load.target_qps", "clients",
                      "prompts.max_tokens", "prompts.input_tokens")
DEFAULT_SLOTS_PER_CLIENT = 64  # a client actor streams hundreds of requests at once (workers/client.py)
SINGLE_STREAM_SLOTS = 2  # EndpointJob.slots says why
NOT_AGAINST_AN_ENDPOINT = {  # LoadGen's scenarios an endpoint job refuses, and why
    "offline": "LoadGen's Offline issues every sample in one query and measures no latency",
    "multi_stream": "LoadGen's MultiStream times queries of samples_per_query samples at once (a camera's frames)",
}
# The invariance check's default (mmlu with an infer pass, greedy generate): 3 % of the measured
# pass's examples, at least 4 (all of them below that), run at bs 1 spread over the workers: a bounded
# share of the run (orchestrator/metrics/invariance.py says what it catches and why bs 1).
DEFAULT_INVARIANCE_PERCENT = 3
MIN_INVARIANCE_EXAMPLES = 4


class JobBase(StrictModel):
    """What every job has, whatever answers it."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="the job's name: in the run id, the results table and the report")
    load: Load = Field(default_factory=OfflineLoad, description="who decides when work arrives: offline (every "
                       "example as fast as possible, sharded), loadgen (MLPerf LoadGen's scenarios) or endpoint (a "
                       "schedule of requests to a running server; the default of endpoint jobs)")
    repeats: int = Field(1, ge=1, description="measured passes, each on fresh workers (a 95 % CI needs >= 2)")
    verdict: VerdictSpec = Field(default_factory=VerdictSpec, description="VALID/INVALID rules: profile + overrides")
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description=f"grid of values for {', '.join(SWEEPABLE)} (endpoint jobs: "
        f"{', '.join(ENDPOINT_SWEEPABLE)}): one run and row per point"
    )

    SWEEPABLE: ClassVar[tuple[str, ...]] = SWEEPABLE

    @model_validator(mode="before")
    @classmethod
    def _legacy_load(cls, value: Any) -> Any:
        return legacy_load(value) if isinstance(value, dict) else value

    @field_validator("sweep")
    @classmethod
    def _sweepable(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if key not in cls.SWEEPABLE:
                raise ValueError(f"cannot sweep '{key}'; sweepable: {', '.join(cls.SWEEPABLE)}")
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep.{key} must be a non-empty list of values")
        return value

    @property
    def load_kind(self) -> str:
        return self.load.kind

    def points(self) -> list["JobBase"]:
        """The grid of a sweep as full specs (without `sweep`), in the order the keys are listed."""
        if not self.sweep:
            return [self]
        base = self.model_dump(mode="json", exclude={"sweep"})
        keys = list(self.sweep)
        return [
            type(self).model_validate(_with_values(base, dict(zip(keys, combo))))
            for combo in itertools.product(*(self.sweep[k] for k in keys))
        ]


def _with_values(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """`base` with each (dotted) key set: `load.rate` sets the rate inside `load`."""
    out = dict(base)
    for key, value in values.items():
        *parents, last = key.split(".")
        node = out
        for name in parents:
            node[name] = dict(node.get(name) or {})
            node = node[name]
        node[last] = value
    return out


class EngineJob(JobBase, WorkerConfig):
    """A job whose target is an engine on each worker actor: the model, engine and precision are
    the workers' (WorkerConfig); the rest says how many workers and how the driver treats them."""

    workers: Annotated[int, Field(gt=0)] | Literal["auto"] = Field(
        "auto", description="worker actors (or groups of parallel.tp ranks); auto = one per GPU (per tp GPUs) in "
        "the cluster, or 1 without GPUs"
    )
    gpus_per_worker: float | None = Field(
        None, ge=0, description="default: 1 when the cluster has GPUs, else 0; per rank with parallel.tp > 1")
    cpus_per_worker: float = Field(1.0, ge=0, description="per worker actor; per rank with parallel.tp > 1")
    shard_size: int | None = Field(None, gt=0, description="examples per shard; default from dataset size and bs")
    max_attempts: int = Field(3, ge=1, description="attempts per shard (or LoadGen batch) before the run fails")
    max_restarts: int = Field(2, ge=0, description="times Ray restarts a dead worker actor")
    acc_tolerance: float = Field(
        0.01, ge=0, description="largest |acc_infer - acc_val| (fraction: 0.01 = 1 point) before a row is flagged"
    )
    invariance_check: int | None = Field(
        None, ge=0, description="after the measured pass, run this many of its examples (spread over the data) again "
        "at bs 1, dealt over the workers, through the infer engine and count the predictions that changed (invariance_flips; "
        "any makes the row INVALID); generate: plain greedy generate of each prompt alone, its tokens against the "
        "measured ones; 0 = off; default for mmlu and greedy generate: 3 % of the measured pass's examples, at least "
        "4, spread over the workers; off for masked_lm (no per-example predictions)"
    )

    @field_validator("invariance_check")
    @classmethod
    def _invariance_check(cls, value: int | None, info: ValidationInfo) -> int | None:
        task, passes = info.data.get("task"), info.data.get("passes", ())
        if value and task is not None and task.name == "masked_lm":
            raise ValueError("masked_lm keeps no per-example predictions to compare; only mmlu supports it (leave "
                             "it out or set 0)")
        if value and "infer" not in passes:
            raise ValueError("it reruns examples through the infer engine; add infer to passes or set 0")
        if value and task is not None and task.name == "generate" and not task.greedy:
            raise ValueError("task generate samples (temperature > 0): its tokens cannot be compared with greedy "
                             "generate; set 0")
        return value

    @model_validator(mode="after")
    def _load_fits_the_target(self) -> "EngineJob":
        """A LoadGen load hands single-device workers batches of 1 to bs samples, in one run."""
        load = self.load
        if isinstance(load, EndpointLoad):
            raise ValueError("load: kind endpoint sends requests to a running server: name it with endpoint: {url, "
                             "model} (and no model/engine of its own)")
        if not isinstance(load, LoadGenLoad):
            return self
        try:
            load.check()
        except ValueError as exc:
            raise ValueError(f"load: {exc}") from None
        what = f"load: scenario {load.scenario}"
        if self.parallel.tp > 1:
            raise ValueError(f"{what} runs single-device workers; parallel.tp={self.parallel.tp} serves offline runs "
                             "only")
        if getattr(self.engine, "min_bs", 1) > 1:
            raise ValueError(f"{what} hands the engine batches of 1 to bs samples; engine.min_bs is "
                             f"{self.engine.min_bs} (set it to 1)")
        if self.repeats > 1:
            raise ValueError(f"{what} is one LoadGen run; repeats={self.repeats} is for offline runs")
        self._tokens_fit_the_task(load)
        return self

    def _tokens_fit_the_task(self, load: LoadGenLoad) -> None:
        """Token latencies (TTFT, TPOT) need a task that makes tokens; a task that makes them needs
        at least two per sample (LoadGen's TPOT divides by tokens - 1, and logs an error below 2)."""
        generates = type(self.task).generates
        if not generates:
            bound = next((n for n in ("ttft_latency_ms", "tpot_latency_ms") if getattr(load, n) is not None), None)
            if bound is not None or load.use_token_latencies:
                raise ValueError(f"load: {bound or 'use_token_latencies'} measures tokens; task {self.task.name} "
                                 "makes none (one forward pass per sample): use task generate")
            if load.token_model():
                raise ValueError(f"load: mlperf_model {load.mlperf_model} is an LLM of mlperf.conf (its rules are "
                                 f"TTFT and TPOT); task {self.task.name} makes no tokens: use task generate")
            return
        shortest = self.task.max_new_tokens.shortest
        if load.uses_tokens(True) and shortest < 2:
            raise ValueError(f"task.max_new_tokens: LoadGen's token latencies need at least 2 tokens per sample "
                             f"(TPOT = (latency - TTFT) / (tokens - 1)); the shortest is {shortest}")

    def invariance_examples(self, num_examples: int) -> int:
        """How many of the measured pass's `num_examples` the invariance check reruns at bs 1 (0: no
        check): the job's number, or by default 3 % of them, at least 4 (mmlu with an infer pass, greedy generate)."""
        if self.invariance_check is not None:
            return min(self.invariance_check, num_examples)
        if self.task.name == "generate":  # greedy tokens against plain greedy generate of each prompt alone
            if not self.task.greedy:
                return 0
        elif self.task.name != "mmlu" or "infer" not in self.passes:
            return 0
        share = -(-DEFAULT_INVARIANCE_PERCENT * num_examples // 100)  # rounded up, in integers
        return min(num_examples, max(MIN_INVARIANCE_EXAMPLES, share))

    @property
    def measured_pass(self) -> str:
        """The pass the row's headline figures come from: infer, or val when only val runs."""
        return "infer" if "infer" in self.passes else "val"

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig.model_validate(self.model_dump(include=set(WorkerConfig.model_fields)))


class EndpointJob(JobBase):
    """A job whose target is a running OpenAI-compatible server: no model, engine or precision of its
    own; client actors spread over the cluster send it a schedule of streamed requests
    (`load: {kind: endpoint}`), or LoadGen's Server or SingleStream queries, one streamed request
    per sample (`load: {kind: loadgen}`)."""

    SWEEPABLE: ClassVar[tuple[str, ...]] = ENDPOINT_SWEEPABLE

    endpoint: EndpointSpec = Field(..., description="the server: url(s), api, model, key, timeouts")
    load: EndpointJobLoad = Field(
        default_factory=lambda: EndpointLoad(rate=1.0), description="when each request is sent: kind endpoint "
        "(the default): an open loop at a rate (constant, Poisson, gamma), a replayed trace, or a closed loop at a "
        "concurrency; warm-up; a request count or duration; find_peak. Kind loadgen: LoadGen's server or "
        "single_stream scenario decides, one request per sample (docs/endpoint.md)")
    prompts: PromptsSpec = Field(default_factory=PromptsSpec, description="what each request asks, and max_tokens")
    slo: SloSpec | None = Field(None, description="bounds a request must meet to count in goodput (and find_peak's "
                                "p99 rule): ttft_ms, tpot_ms, e2e_ms")
    clients: int = Field(1, gt=0, description="client actors the schedule is split among, spread over the nodes; "
                         "more when the row says the client was the bottleneck")
    cpus_per_client: float = Field(1.0, gt=0, description="CPUs Ray reserves for each client actor")
    slots_per_client: int = Field(
        DEFAULT_SLOTS_PER_CLIENT, gt=0, description="load kind loadgen, scenario server: requests each client actor "
        "keeps in flight at once (clients x slots_per_client in all); a sample that finds every slot busy waits in "
        "the driver, its wait counted in LoadGen's latency and shown as schedule lag (single_stream: one in flight, "
        "whatever this says)")

    @field_validator("load", mode="before")
    @classmethod
    def _endpoint_load(cls, value: Any) -> Any:
        if isinstance(value, dict) and "kind" not in value:
            return {**value, "kind": "endpoint"}  # an endpoint job's load is a schedule unless it says otherwise
        if isinstance(value, dict) and value["kind"] not in ("endpoint", "loadgen"):
            raise ValueError(f"an endpoint job's load is kind endpoint (a schedule of requests to the running "
                             f"server) or loadgen (LoadGen's server or single_stream; got kind {value['kind']})")
        return value

    @model_validator(mode="after")
    def _load_fits_the_endpoint(self) -> "EndpointJob":
        try:
            self.load.check()
        except ValueError as exc:
            raise ValueError(f"load: {exc}") from None
        if isinstance(self.load, LoadGenLoad):
            return self._loadgen_fits()
        if self.slots_per_client != DEFAULT_SLOTS_PER_CLIENT:
            raise ValueError("slots_per_client: is for load kind loadgen; an endpoint schedule says itself what is in "
                             "flight (rate, or concurrency)")
        if self.load.mode == "find_peak" and self.slo is None:
            raise ValueError("load: find_peak searches the highest rate that meets the slo: give slo: {ttft_ms, "
                             "tpot_ms, e2e_ms}")
        if self.load.mode == "find_peak" and self.repeats > 1:
            raise ValueError(f"load: find_peak runs one schedule per rate it tries; repeats={self.repeats} is for "
                             "performance runs")
        if self.load.concurrency is not None and self.load.concurrency < self.clients:
            raise ValueError(f"load.concurrency: {self.load.concurrency} in flight cannot be split among "
                             f"{self.clients} clients (at least one each)")
        return self

    def _loadgen_fits(self) -> "EndpointJob":
        """What of LoadGen applies to a server asked over HTTP (docs/endpoint.md says why for each)."""
        load, what = self.load, f"load: scenario {self.load.scenario}"
        if load.scenario in NOT_AGAINST_AN_ENDPOINT:
            raise ValueError(f"{what} is not run against an endpoint (server and single_stream are): "
                             f"{NOT_AGAINST_AN_ENDPOINT[load.scenario]}; for a server's throughput use load kind "
                             "endpoint with a concurrency")
        if load.mode == "accuracy":
            raise ValueError("load: mode accuracy scores the responses, and an endpoint job has no task to score "
                             "them with: use mode performance or find_peak")
        if load.audit is not None:
            raise ValueError("load.audit: LoadGen's compliance tests audit an MLPerf submission (TEST01 scores its "
                             "responses), which a server asked over HTTP is not; leave it out")
        for name, default, why in (
                ("hand_over", "direct", "it is how batches reach engine workers; a client actor sends HTTP"),
                ("max_batch_wait_ms", 0.0, "a server batches its own requests: each sample is one request"),
                ("batch_timeout_s", None, "each request is bounded by endpoint.timeout_s")):
            if getattr(load, name) != default:
                raise ValueError(f"load.{name}: not for an endpoint job ({why}); leave it out")
        if self.repeats > 1:
            raise ValueError(f"{what} is one LoadGen run; repeats={self.repeats} is for load kind endpoint")
        if load.uses_tokens(True) and self.prompts.max_tokens < 2:
            raise ValueError(f"prompts.max_tokens: LoadGen's token latencies need at least 2 tokens per sample "
                             f"(TPOT = (latency - TTFT) / (tokens - 1)); it is {self.prompts.max_tokens}")
        return self

    @property
    def slots(self) -> int:
        """Places per client actor under a LoadGen load, one sample in flight each. single_stream
        issues one query at a time: two places per client, so the next query, issued the moment the
        last one's answer ended, finds a place free without waiting for the last call's own end
        (its counts, a message behind the answer)."""
        return self.slots_per_client if self.load.scenario == "server" else SINGLE_STREAM_SLOTS


# What answers a job, by the key that names it; a job without one of these keys is an EngineJob.
TARGETS: dict[str, type[JobBase]] = {"endpoint": EndpointJob}
JobSpec = EngineJob


def job_class(raw: dict[str, Any]) -> type[JobBase]:
    """The job's class: the target its keys name (TARGETS), engines on workers otherwise."""
    return next((cls for key, cls in TARGETS.items() if key in raw), EngineJob)
