"""Both cases with every engine this machine can run: MMLU through ONNX Runtime and torch.compile.

The infer pass (the engine) and the val pass (torch eager) score the same questions; predictions
must agree on >= 99 % of them and the accuracies within 1 point.
"""

import pyarrow.parquet as pq
import pytest

from orchestrator.driver import run_job
from orchestrator.spec import validate
from tests.builders import mmlu_job, save_tiny_llama_with_tokenizer


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return save_tiny_llama_with_tokenizer(tmp_path_factory.mktemp("llama-engines"))


@pytest.mark.parametrize("engine", ["onnxruntime", pytest.param("torch_compile", marks=pytest.mark.slow)])
def test_mmlu_infer_matches_val(llama, tmp_path, engine):
    spec = validate(mmlu_job(str(llama), engine=engine, passes=["val", "infer"], bs=4,
                             engine_cache=str(tmp_path / "cache")), "t")
    result = run_job(spec, results_dir=tmp_path, in_process=True)
    predictions = pq.read_table(result.run_dir / "predictions.parquet").to_pylist()
    val = {p["example"]: p["predicted"] for p in predictions if p["pass"] == "val"}
    infer = {p["example"]: p["predicted"] for p in predictions if p["pass"] == "infer"}
    assert len(val) == len(infer) == 12
    agree = sum(val[k] == infer[k] for k in val) / len(val)
    assert agree >= 0.99
    assert abs(result.row.acc_infer - result.row.acc_val) <= 0.01
    assert result.row.engine == engine and result.row.build_time > 0
