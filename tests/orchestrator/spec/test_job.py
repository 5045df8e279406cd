import re
from pathlib import Path

import pytest

from orchestrator.spec import EndpointJob, JobSpec, apply_overrides, load_spec, validate
from tests.builders import JOB_FILE_SETS, job
from workers.errors import UserError
from workers.specs import MaskedLMTask, SyntheticEngineOptions


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


# Shipped on purpose for what is not built yet, each refused in one line naming it.
REFUSED = {"llama2_70b_server.yaml": "parallel.tp=8: generation on tensor-parallel workers is not built yet"}


def test_shipped_jobs_validate():
    for path in sorted(Path("jobs").glob("*.yaml")):
        if path.name in REFUSED:
            with pytest.raises(UserError, match=re.escape(REFUSED[path.name])):
                load_spec(path)
            continue
        kind = EndpointJob if path.name in JOB_FILE_SETS else JobSpec
        assert isinstance(load_spec(path, JOB_FILE_SETS.get(path.name, [])), kind), path


def test_shorthands_expand():
    spec = validate(job(model="random:bert-base-uncased", data="synthetic", engine="synthetic"), "x")
    assert spec.model.random == "bert-base-uncased" and spec.model.source is None
    assert spec.data.synthetic is not None and spec.data.synthetic.size == 64
    assert isinstance(spec.engine, SyntheticEngineOptions)
    assert isinstance(spec.task, MaskedLMTask)
    assert validate(job(model="org/name"), "x").model.source == "org/name"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"bs": 0}, "bs"),
        ({"bs": "big"}, "bs"),
        ({"seq_len": -1}, "seq_len"),
        ({"colour": "red"}, "colour"),
        ({"engine": "tensorrtt"}, "engine"),
        ({"engine": {"name": "synthetic", "latency": 3}}, "engine.latency"),
        ({"task": {"name": "masked_lm", "mask_prob": 2}}, "task.mask_prob"),
        ({"precision": "fp8"}, "precision"),
        ({"model": {"source": "a", "random": {"model_type": "bert"}}}, "model"),
        ({"data": {}}, "data"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_fields_name_the_field(overrides, field):
    with pytest.raises(UserError) as err:
        validate(job(**overrides), "job.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"job.yaml: {field}:"), message


def test_typo_gets_a_suggestion():
    with pytest.raises(UserError, match="Did you mean: tensorrt"):
        validate(job(engine="tensorrtt"), "job.yaml")


def test_missing_name():
    raw = job()
    del raw["name"]
    with pytest.raises(UserError, match="name: Field required"):
        validate(raw, "job.yaml")


def test_malformed_yaml_names_line(tmp_path):
    path = write(tmp_path, "name: x\nbs: [1, 2\n")
    with pytest.raises(UserError, match=r"malformed YAML at line \d+"):
        load_spec(path)


def test_not_a_mapping(tmp_path):
    with pytest.raises(UserError, match="must be a YAML mapping"):
        load_spec(write(tmp_path, "- a\n- b\n"))


def test_missing_job_file(tmp_path):
    with pytest.raises(UserError, match="job file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_set_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, "name: x\nmodel: random:bert-base-uncased\ndata: synthetic\nengine: torch\n")
    spec = load_spec(path, ["bs=16", "engine=synthetic", "engine.latency_ms=5", "data.synthetic.size=7"])
    assert spec.bs == 16 and spec.engine.latency_ms == 5 and spec.data.synthetic.size == 7
    with pytest.raises(UserError, match="bs: Input should be greater than 0"):
        load_spec(path, ["bs=0"])
    with pytest.raises(UserError, match="expected key=value"):
        load_spec(path, ["bs"])


def test_override_descends_into_shorthand():
    raw = apply_overrides(job(engine="synthetic"), ["engine.latency_ms=2"])
    assert raw["engine"] == {"name": "synthetic", "latency_ms": 2}


def test_worker_config_carries_worker_fields_only():
    spec = validate(job(workers=3, bs=2), "x")
    config = spec.worker_config()
    assert config.bs == 2 and not hasattr(config, "workers")


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graphs_on_variable_length_work_are_refused_in_one_line(mode):
    """torch.compile's CUDA graphs are recorded per input shape: on mmlu a new prompt length would
    record one inside a timed batch. Fixed-length masked_lm keeps the mode."""
    from tests.builders import mmlu_job

    with pytest.raises(UserError) as err:
        validate(mmlu_job("some/model", engine={"name": "torch_compile", "mode": mode}), "job.yaml")
    assert str(err.value) == (f"job.yaml: engine: mode {mode} records a CUDA graph for every new input shape, and "
                              "mmlu's inputs vary in length (graphs would be recorded inside timed batches); use mode "
                              "default or max-autotune-no-cudagraphs")
    assert validate(mmlu_job("some/model", engine={"name": "torch_compile", "mode": "max-autotune-no-cudagraphs"}), "j")
    assert validate(job(engine={"name": "torch_compile", "mode": mode}), "j").engine.mode == mode


def test_tf32_is_a_precision_of_its_own_and_fault_timeout_has_a_default():
    spec = validate(job(precision="tf32", parallel={"tp": 1}), "j")
    assert spec.precision == "tf32" and spec.parallel.fault_timeout_s == 60.0
