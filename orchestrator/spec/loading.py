"""YAML text -> a validated job: the only place job files become objects.

Loading is strict: unknown keys, wrong types and impossible values are `UserError`s naming the
field. `--set key=value` overrides are applied to the raw mapping and validated the same way, and
so is every point of a sweep, so a bad grid value fails at load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestrator.spec.job import EndpointJob, EngineJob, JobBase, job_class
from workers.data.package_files import is_package_path
from workers.errors import UserError
from workers.specs import SHORTHANDS, looks_like_local_path

_TYPE_NAMES = {"int", "str", "float", "bool", "dict", "list", "none", "tuple"}


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    # Discriminated unions put the branch name in the path (engine.synthetic.latency): drop it.
    if len(parts) > 2 and parts[0] in ("engine", "task", "load"):
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
    `pkg:` names stay as written: each machine resolves them itself (workers/data/package_files.py)."""
    if name is None or is_package_path(name) or not looks_like_local_path(name):
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def resolve_paths(spec: JobBase) -> JobBase:
    """Local paths as absolute paths, so workers (whose working directory is Ray's) and the stored
    job.yaml mean the same files as the command line did. Paths that do not exist here are kept
    as written: they may exist on the cluster's nodes."""
    if isinstance(spec, EndpointJob):
        return spec.model_copy(update={
            "prompts": spec.prompts.model_copy(update={"path": _absolute(spec.prompts.path)}),
            "load": spec.load.model_copy(update={"trace": _absolute(spec.load.trace)}),
            "endpoint": spec.endpoint.model_copy(update={"tokenizer": _absolute(spec.endpoint.tokenizer)}),
        })
    assert isinstance(spec, EngineJob)
    model = spec.model.model_copy(update={
        "source": _absolute(spec.model.source),
        "tokenizer": _absolute(spec.model.tokenizer),
        "random": _absolute(spec.model.random) if isinstance(spec.model.random, str) else spec.model.random,
    })
    data = spec.data.model_copy(update={"path": _absolute(spec.data.path)})
    return spec.model_copy(update={"model": model, "data": data})


def validate(raw: dict[str, Any], source: str) -> JobBase:
    """The spec, with every sweep point validated too (so a bad grid value fails at load)."""
    try:
        spec = job_class(raw).model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, source)) from exc
    try:
        spec.points()
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, f"{source} (sweep point)")) from exc
    return resolve_paths(spec)


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobBase:
    path = Path(path)
    return validate(apply_overrides(read_yaml(path), overrides or []), str(path))


def load_spec_text(text: str, source: str, overrides: list[str] | None = None) -> JobBase:
    """A spec kept as text where no local path reaches it (a run's job.yaml in an object store)."""
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a job spec must be a YAML mapping")
    return validate(apply_overrides(raw, overrides or []), source)


def dump_spec(spec: JobBase) -> str:
    """The resolved spec as YAML (every default spelled out), for the run folder."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
