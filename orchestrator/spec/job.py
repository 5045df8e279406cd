"""A job: what every job has (name, load, repeats, verdict, sweep) and what answers it (its target).

A job is composed, not one flat class: its `load:` is a union of the ways to drive load
(orchestrator/spec/load.py), and its target is chosen by what the job names. Today that is always
engines on worker actors: `EngineJob` is `WorkerConfig` (the model, engine, precision, task and data
every worker is given, workers/specs.py) plus what only the driver needs (how many workers, their
resources, sharding, retries). A target that brings no model (a running server) is another
`JobBase` subclass with its own fields, and `TARGETS` maps the key that names it to its class.
Cross-checks between the load and the target are `model_validator(mode="after")`s, so they see the
whole job whatever the order of its fields.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from orchestrator.spec.load import Load, LoadGenLoad, OfflineLoad, legacy_load
from orchestrator.spec.verdict import VerdictSpec
from workers.specs import StrictModel, WorkerConfig

# Fields a `sweep:` may list several values for; each grid point is validated as a full job.
SWEEPABLE = ("bs", "precision", "seq_len", "engine", "workers", "val_precision", "parallel")
# The invariance check's default (mmlu with an infer pass): 3 % of the measured pass's examples, at
# least 4 (all of them below that), run at bs 1 spread over the workers: a bounded share of the run
# (orchestrator/metrics/invariance.py says what it catches and why bs 1).
DEFAULT_INVARIANCE_PERCENT = 3
MIN_INVARIANCE_EXAMPLES = 4


class JobBase(StrictModel):
    """What every job has, whatever answers it."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="the job's name: in the run id, the results table and the report")
    load: Load = Field(default_factory=OfflineLoad, description="who decides when work arrives: offline (every "
                       "example as fast as possible, sharded) or loadgen (MLPerf LoadGen's scenarios)")
    repeats: int = Field(1, ge=1, description="measured passes, each on fresh workers (a 95 % CI needs >= 2)")
    verdict: VerdictSpec = Field(default_factory=VerdictSpec, description="VALID/INVALID rules: profile + overrides")
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description=f"grid of values for {', '.join(SWEEPABLE)}: one run and row per point"
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_load(cls, value: Any) -> Any:
        return legacy_load(value) if isinstance(value, dict) else value

    @field_validator("sweep")
    @classmethod
    def _sweepable(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if key not in SWEEPABLE:
                raise ValueError(f"cannot sweep '{key}'; sweepable: {', '.join(SWEEPABLE)}")
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
            type(self).model_validate({**base, **dict(zip(keys, combo))})
            for combo in itertools.product(*(self.sweep[k] for k in keys))
        ]


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
        "any makes the row INVALID); 0 = off; default for mmlu: 3 % of the measured pass's examples, at least 4, "
        "spread over the workers; off for masked_lm (no per-example predictions)"
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
        return value

    @model_validator(mode="after")
    def _load_fits_the_target(self) -> "EngineJob":
        """A LoadGen load hands single-device workers batches of 1 to bs samples, in one run."""
        load = self.load
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
        return self

    def invariance_examples(self, num_examples: int) -> int:
        """How many of the measured pass's `num_examples` the invariance check reruns at bs 1 (0: no
        check): the job's number, or by default 3 % of them, at least 4 (mmlu with an infer pass)."""
        if self.invariance_check is not None:
            return min(self.invariance_check, num_examples)
        if self.task.name != "mmlu" or "infer" not in self.passes:
            return 0
        share = -(-DEFAULT_INVARIANCE_PERCENT * num_examples // 100)  # rounded up, in integers
        return min(num_examples, max(MIN_INVARIANCE_EXAMPLES, share))

    @property
    def measured_pass(self) -> str:
        """The pass the row's headline figures come from: infer, or val when only val runs."""
        return "infer" if "infer" in self.passes else "val"

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig.model_validate(self.model_dump(include=set(WorkerConfig.model_fields)))


# What answers a job, by the key that names it; a job without one of these keys is an EngineJob.
TARGETS: dict[str, type[JobBase]] = {}
JobSpec = EngineJob


def job_class(raw: dict[str, Any]) -> type[JobBase]:
    """The job's class: the target its keys name (TARGETS), engines on workers otherwise."""
    return next((cls for key, cls in TARGETS.items() if key in raw), EngineJob)
