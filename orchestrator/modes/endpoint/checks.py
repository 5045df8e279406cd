"""An endpoint job's checks before anything starts or is stored (run by the driver's preflight): its
files (prompts, trace), then the server itself, asked one request of one token with the job's own
body (orchestrator/targets/endpoint.py: unreachable, a refused key, a model it does not serve, a
field it does not take: one line each, in seconds). A LoadGen load has no schedule of its own to
check: LoadGen's settings are checked as its test starts."""

from __future__ import annotations

from pathlib import Path

from orchestrator.modes.endpoint.point import base_schedule
from orchestrator.modes.endpoint.prompts import Prompt, request_body
from orchestrator.spec.job import EndpointJob
from orchestrator.targets.endpoint import check_endpoint
from workers.errors import UserError


def check_job(spec: EndpointJob) -> None:
    prompts = spec.prompts
    if prompts.path is not None and not Path(prompts.path).expanduser().exists():
        raise UserError(f"prompts.path: '{prompts.path}' does not exist")
    if spec.load.kind == "endpoint":
        base_schedule(spec)  # a trace that cannot be read, too few requests for find_peak
    check_endpoint(spec, request_body(spec, Prompt("Hello", 0), 1))
