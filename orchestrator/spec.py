"""The job spec: the only place YAML becomes objects.

`JobSpec` extends the worker's `WorkerConfig` with what only the driver needs (how many workers,
resources, sharding, retries). Loading is strict: unknown keys, wrong types and impossible values
are `UserError`s naming the field. `--set key=value` overrides are applied to the raw mapping and
validated the same way.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from orchestrator.loadgen.settings import LoadGenSpec, Scenario, check_loadgen
from orchestrator.metrics.verdict import VerdictSpec
from workers.errors import UserError
from workers.package_files import is_package_path
from workers.specs import SHORTHANDS, WorkerConfig, looks_like_local_path

# Fields a `sweep:` may list several values for; each grid point is validated as a full job.
SWEEPABLE = ("bs", "precision", "seq_len", "engine", "workers", "val_precision", "parallel")
DEFAULT_INVARIANCE_EXAMPLES = 32  # mmlu: enough to catch batch-size-dependent kernels, seconds on one worker


class JobSpec(WorkerConfig):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="the job's name: in the run id, the results table and the report")
    workers: Annotated[int, Field(gt=0)] | Literal["auto"] = Field(
        "auto", description="worker actors (or groups of parallel.tp ranks); auto = one per GPU (per tp GPUs) in "
        "the cluster, or 1 without GPUs"
    )
    gpus_per_worker: float | None = Field(
        None, ge=0, description="default: 1 when the cluster has GPUs, else 0; per rank with parallel.tp > 1")
    cpus_per_worker: float = Field(1.0, ge=0, description="per worker actor; per rank with parallel.tp > 1")
    shard_size: int | None = Field(None, gt=0, description="examples per shard; default from dataset size and bs")
    max_attempts: int = Field(3, ge=1, description="attempts per shard before the run fails")
    max_restarts: int = Field(2, ge=0, description="times Ray restarts a dead worker actor")
    acc_tolerance: float = Field(
        0.01, ge=0, description="largest |acc_infer - acc_val| (fraction: 0.01 = 1 point) before a row is flagged"
    )

    repeats: int = Field(1, ge=1, description="measured passes, each on fresh workers (a 95 % CI needs >= 2)")
    invariance_check: int | None = Field(
        None, ge=0, description="after the measured pass, run this many of its examples (spread over the data) again "
        "at bs 1 on one worker through the infer engine and count the predictions that changed (invariance_flips; "
        "any makes the row INVALID); 0 = off; default 32 for mmlu, off for masked_lm (no per-example predictions)"
    )
    verdict: VerdictSpec = Field(default_factory=VerdictSpec, description="VALID/INVALID rules: profile + overrides")
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description=f"grid of values for {', '.join(SWEEPABLE)}: one run and row per point"
    )

    scenario: Scenario = Field("offline", description="offline: every example as fast as possible (sharded); "
                               "server, single_stream, multi_stream: MLPerf LoadGen decides when queries arrive")
    # The default {} is validated (into LoadGenSpec's defaults) and then checked against the scenario;
    # offline jobs end with None.
    loadgen: LoadGenSpec | None = Field(default_factory=dict, validate_default=True, description="the LoadGen "
                                        "scenario's settings (orchestrator/loadgen/settings.py)")

    @field_validator("loadgen")
    @classmethod
    def _loadgen(cls, value: LoadGenSpec | None, info: ValidationInfo) -> LoadGenSpec | None:
        return check_loadgen(info.data.get("scenario", "offline"), value, info.data)

    @field_validator("sweep")
    @classmethod
    def _sweepable(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if key not in SWEEPABLE:
                raise ValueError(f"cannot sweep '{key}'; sweepable: {', '.join(SWEEPABLE)}")
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep.{key} must be a non-empty list of values")
        return value

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

    @property
    def invariance_examples(self) -> int:
        """How many examples the invariance check reruns at bs 1 (0: no check)."""
        if self.invariance_check is not None:
            return self.invariance_check
        return DEFAULT_INVARIANCE_EXAMPLES if self.task.name == "mmlu" and "infer" in self.passes else 0

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig.model_validate(self.model_dump(include=set(WorkerConfig.model_fields)))

    def points(self) -> list["JobSpec"]:
        """The grid of a sweep as full specs (without `sweep`), in the order the keys are listed."""
        if not self.sweep:
            return [self]
        base = self.model_dump(mode="json", exclude={"sweep"})
        keys = list(self.sweep)
        return [
            JobSpec.model_validate({**base, **dict(zip(keys, combo))})
            for combo in itertools.product(*(self.sweep[k] for k in keys))
        ]


_TYPE_NAMES = {"int", "str", "float", "bool", "dict", "list", "none", "tuple"}


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    # Discriminated unions put the branch name in the path (engine.synthetic.latency): drop it.
    if len(parts) > 2 and parts[0] in ("engine", "task"):
        del parts[1]
    # Plain unions add the branch type (workers.constrained-int, workers.literal['auto']): drop those too.
    parts = [p for p in parts if p.isidentifier() and p not in _TYPE_NAMES or p.isdigit()]
    return ".".join(parts) or "(top level)"


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line: the first problem, naming the field, plus how many other fields have problems."""
    errors = exc.errors()
    first = errors[0]
    msg = first["msg"].removeprefix("Value error, ")
    where = _where(first["loc"])
    got = ""
    if first["type"] not in ("missing", "extra_forbidden") and "input" in first and not isinstance(first["input"], dict):
        got = f" (got {first['input']!r})"
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    others = len({_where(e["loc"]) for e in errors} - {where})
    more = f" (and {others} more field{'s' if others > 1 else ''} with problems)" if others else ""
    return f"{source}: {where}: {msg}{got}{more}"


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected key=value (e.g. --set bs=16 or --set engine.latency_ms=5)")
    key, _, raw = text.partition("=")
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise UserError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise UserError(f"--set {text!r}: value is not valid YAML ({exc.problem if hasattr(exc, 'problem') else exc})") from exc
    return keys, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a copy of the raw mapping, expanding shorthands (engine: torch) on the way."""
    data = dict(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if depth == 0 and key in SHORTHANDS:
                child = SHORTHANDS[key](child)
            child = dict(child) if isinstance(child, dict) else {}
            node[key] = child
            node = child
        node[keys[-1]] = value
    return data


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UserError(f"{path}: job file not found") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text file (byte {exc.start} is not UTF-8); a job spec is YAML text") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read job file ({exc.strerror})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a job spec must be a YAML mapping (name: ..., model: ..., data: ...)")
    return raw


def _absolute(name: str | None) -> str | None:
    """A local path that exists here, made absolute (and ~ expanded); anything else as given.
    `pkg:` names stay as written: each machine resolves them itself (workers/package_files.py)."""
    if name is None or is_package_path(name) or not looks_like_local_path(name):
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def resolve_paths(spec: JobSpec) -> JobSpec:
    """Local paths as absolute paths, so workers (whose working directory is Ray's) and the stored
    job.yaml mean the same files as the command line did. Paths that do not exist here are kept
    as written: they may exist on the cluster's nodes."""
    model = spec.model.model_copy(update={
        "source": _absolute(spec.model.source),
        "tokenizer": _absolute(spec.model.tokenizer),
        "random": _absolute(spec.model.random) if isinstance(spec.model.random, str) else spec.model.random,
    })
    data = spec.data.model_copy(update={"path": _absolute(spec.data.path)})
    return spec.model_copy(update={"model": model, "data": data})


def validate(raw: dict[str, Any], source: str) -> JobSpec:
    """The spec, with every sweep point validated too (so a bad grid value fails at load)."""
    try:
        spec = JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from exc
    try:
        spec.points()
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, f"{source} (sweep point)")) from exc
    return resolve_paths(spec)


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    path = Path(path)
    return validate(apply_overrides(read_yaml(path), overrides or []), str(path))


def load_spec_text(text: str, source: str, overrides: list[str] | None = None) -> JobSpec:
    """A spec kept as text where no local path reaches it (a run's job.yaml in an object store)."""
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a job spec must be a YAML mapping")
    return validate(apply_overrides(raw, overrides or []), source)


def dump_spec(spec: JobSpec) -> str:
    """The resolved spec as YAML (every default spelled out), for the run folder."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
