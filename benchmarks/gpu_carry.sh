#!/usr/bin/env bash
# What benchmarks/gpu_check.py needs on a lone GPU machine that has torch, transformers, pyarrow,
# typer, rich, scipy, pyyaml and pynvml but not pydantic, and no ../shared beside the checkout:
#   .whl/            pydantic and its three dependencies as CPython 3.12 manylinux wheels, at the
#                    versions installed here (pydantic pins pydantic-core exactly)
#   .gpu_data/mmlu/  the MMLU subjects gpu_check reads (gpu_check.SUBJECTS), dev and test
# Both folders are git-ignored. On the GPU machine (the device tool: carry [".whl", ".gpu_data"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --mmlu .gpu_data/mmlu
#   python3 -m pytest -q -rs tests/gpu tests/workers/engines/test_onnx_export.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MMLU=${MMLU:-../shared/data/mmlu}
versions=$("$PY" -c 'from importlib.metadata import version as v; print(" ".join(f"{n}=={v(n)}" for n in ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")))')
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $versions
mkdir -p .gpu_data/mmlu/dev .gpu_data/mmlu/test
for subject in abstract_algebra anatomy astronomy business_ethics; do
  cp "$MMLU/dev/${subject}_dev.csv" .gpu_data/mmlu/dev/
  cp "$MMLU/test/${subject}_test.csv" .gpu_data/mmlu/test/
done
du -sh .whl .gpu_data
