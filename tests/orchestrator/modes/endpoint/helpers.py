from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


def endpoint_job(url: str, **fields: Any) -> dict[str, Any]:
    """An endpoint job against `url` (the mock's model), short: 10 tokens per answer."""
    given = fields.pop("load", {})
    pace = {} if {"concurrency", "trace"} & set(given) else {"rate": 20.0}
    load = {**pace, "requests": 40, **given}
    endpoint = {"url": url, "model": "mock-model", **fields.pop("endpoint", {})}
    prompts = {"max_tokens": 10, "input_tokens": 16, **fields.pop("prompts", {})}
    return {"name": "ep", "endpoint": endpoint, "load": load, "prompts": prompts, **fields}


def run_endpoint(raw: dict, results: Path, **options):
    """Validate and run a job in this process (clients as threads), as `bench submit --no-ray` does."""
    from orchestrator.driver import run_all
    from orchestrator.spec import validate

    return run_all(validate(raw, "job.yaml"), results_dir=results, in_process=options.pop("in_process", True),
                   **options)


def requests_table(run) -> list[dict]:
    return pq.read_table(Path(run.run_dir) / "requests.parquet").to_pylist()
