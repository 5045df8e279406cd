"""The generated reference (docs/job-spec.md, docs/job.schema.json, docs/columns.md) matches the
models, the schema takes every shipped job file and agrees with the loader, and nothing is undescribed."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.metrics.row import MetricsRow
from orchestrator.reference import DOCS, REGENERATE, generated
from orchestrator.spec import EndpointJob, JobSpec, apply_overrides
from tests.builders import JOB_FILE_SETS

ROOT = Path(__file__).resolve().parents[2]
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=../docs/job.schema.json"


def committed_schema() -> dict:
    return json.loads((ROOT / "docs" / "job.schema.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(generated()))
def test_committed_reference_is_what_the_models_generate(name):
    assert DOCS == ROOT / "docs"
    path = DOCS / name
    assert path.exists() and path.read_text(encoding="utf-8") == generated()[name], (
        f"docs/{name} differs from the models: regenerate it with `{REGENERATE}` and commit it")


def test_bench_schema_prints_the_committed_schema():
    out = CliRunner().invoke(app, ["schema"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == committed_schema()


@pytest.mark.parametrize("path", JOBS, ids=[p.name for p in JOBS])
def test_shipped_job_files_name_the_schema_and_validate_against_it(path):
    schema = committed_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == MODELINE
    assert (path.parent / MODELINE.split("$schema=")[1]).resolve() == ROOT / "docs" / "job.schema.json"
    raw = apply_overrides(yaml.safe_load(text), JOB_FILE_SETS.get(path.name, []))  # fields a user gives with --set
    jsonschema.validate(raw, schema, cls=jsonschema.Draft7Validator)


BASE = {"name": "t", "model": {"random": {"model_type": "bert"}}, "data": "synthetic"}
ACCEPTED = [
    {"engine": "torch"}, {"engine": "synthetic"}, {"engine": {"name": "synthetic", "latency_ms": 5}},
    {"task": "mmlu", "data": "path/to/mmlu"}, {"task": {"name": "mmlu", "shots": 0}, "data": "/data/mmlu"},
    {"model": "bert-large-uncased"}, {"model": "random:bert-base-uncased"}, {"data": "path/to/text.txt"},
    {"data": {"synthetic": {"size": 8}}}, {"workers": "auto"}, {"workers": 3}, {"passes": ["infer"]},
    {"sweep": {"bs": [8, 16], "engine": ["torch", "onnxruntime"]}},
    {"verdict": {"profile": "rigorous", "max_latency_cv": float("inf")}},
]
REJECTED = [
    {"engine": "tensorrtt"}, {"task": "mmlux"}, {"bss": 8}, {"bs": 0}, {"precision": "fp8"}, {"workers": "many"},
    {"engine": {"latency_ms": 5}},  # a union's options without the tag that selects them
    {"engine": {"name": "torch", "opset": 18}}, {"task": {"name": "masked_lm", "mask_prob": 1.5}},
    {"sweep": {"name": ["a", "b"]}}, {"sweep": {"bs": []}}, {"verdict": {"profile": "strict"}},
    {"data": 7}, {"model": {"source": "x", "colour": "red"}},
]


ENDPOINT = {"name": "e", "endpoint": {"url": "http://127.0.0.1:8000", "model": "m"}}
ENDPOINT_ACCEPTED = [{}, {"load": {"rate": 4, "arrival": "gamma", "burstiness": 0.5}}, {"load": {"concurrency": 8}},
                     {"endpoint": {"url": ["http://a:1", "http://b:1"], "model": "m", "api": "chat"}},
                     {"slo": {"ttft_ms": 200, "tpot_ms": 50}}, {"sweep": {"load.rate": [1, 2]}},
                     {"prompts": {"source": "text", "path": "a.txt", "max_tokens": 8}},
                     {"load": {"kind": "loadgen", "scenario": "single_stream"}},
                     {"load": {"kind": "loadgen", "scenario": "server", "target_qps": 5}, "slots_per_client": 8}]
ENDPOINT_REJECTED = [{"load": {"rate": 0}}, {"slo": {"p99_ms": 3}}, {"sweep": {"bs": [1]}}, {"bs": 8},
                     {"endpoint": {"url": "http://a:1"}}, {"load": {"kind": "offline"}}, {"clients": 0},
                     {"load": {"kind": "loadgen", "scenario": "server", "rate": 4}}, {"slots_per_client": 0}]


@pytest.mark.parametrize("change", ENDPOINT_ACCEPTED, ids=str)
def test_schema_accepts_the_endpoint_jobs_the_loader_accepts(change):
    raw = {**ENDPOINT, **change}
    EndpointJob.model_validate(raw)
    jsonschema.validate(raw, committed_schema(), cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize("change", ENDPOINT_REJECTED, ids=str)
def test_schema_rejects_the_endpoint_jobs_the_loader_rejects(change):
    raw = {**ENDPOINT, **change}
    with pytest.raises(ValidationError):
        EndpointJob.model_validate(raw)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, committed_schema(), cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize("change", ACCEPTED, ids=str)
def test_schema_accepts_what_the_loader_accepts(change):
    raw = {**BASE, **change}
    JobSpec.model_validate(raw)
    jsonschema.validate(raw, committed_schema(), cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize("change", REJECTED, ids=str)
def test_schema_rejects_what_the_loader_rejects(change):
    raw = {**BASE, **change}
    with pytest.raises(ValidationError):
        JobSpec.model_validate(raw)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, committed_schema(), cls=jsonschema.Draft7Validator)


def test_every_spec_field_and_every_column_says_what_it_is():
    schema = committed_schema()
    undescribed = [f"{owner}.{name}" for owner, node in schema["$defs"].items()
                   for name, prop in node["properties"].items() if "const" not in prop and not prop.get("description")]
    assert undescribed == []
    assert [name for name, field in MetricsRow.model_fields.items() if not field.description] == []
    units = {name: (field.json_schema_extra or {}).get("unit") for name, field in MetricsRow.model_fields.items()}
    assert units["e2e_time"] == "s" and units["mem"] == "GiB" and units["p_infer_core"] == "items/s"
    assert "| **`p_infer_core`** | float \\| None | items/s |" in generated()["columns.md"]
