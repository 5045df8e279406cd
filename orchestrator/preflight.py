"""Checks that need no cluster: run before Ray starts, so bad input fails in a second, in one line.

Nothing here imports torch or transformers (they cost seconds at every submit); what needs them
(a hub model's config, the tokenizer, the data as tokens) is checked by the workers.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.spec import EndpointJob, JobBase, JobSpec
from workers.data.package_files import on_this_machine
from workers.errors import UserError
from workers.models import check_model_type, declared_max_positions


def preflight(spec: JobBase, data_on_nodes: bool = False, in_process: bool = False) -> None:
    """`data_on_nodes`: the job runs on a cluster (--address), where a data path that does not exist
    here may exist on the nodes (each node with workers then prepares its own copy). `in_process`:
    it runs in this process (--no-ray). A job whose target is a running server is checked by its
    mode (orchestrator/modes/endpoint/checks.py: its files, then the server, in seconds)."""
    if isinstance(spec, EndpointJob):
        from orchestrator.modes.endpoint.checks import check_job

        return check_job(spec)
    _engine_preflight(spec, data_on_nodes)
    if in_process and spec.workers not in ("auto", 1):
        raise UserError("workers: in-process mode (--no-ray) runs exactly one worker")
    if in_process and spec.parallel.tp > 1:
        raise UserError(f"parallel.tp: in-process mode (--no-ray) is one process; a worker of tp={spec.parallel.tp} "
                        "ranks needs Ray (drop --no-ray)")


def _engine_preflight(spec: JobSpec, data_on_nodes: bool) -> None:
    spec = on_this_machine(spec)  # pkg: paths checked where this command runs; the spec keeps the names
    here = spec.data.path is not None and Path(spec.data.path).expanduser().exists()
    if spec.data.path is not None and not here and not data_on_nodes:
        raise UserError(f"data.path: '{spec.data.path}' does not exist")
    check_model_type(spec.model)
    limit = declared_max_positions(spec.model)
    if limit is not None and spec.seq_len > limit:
        raise UserError(f"seq_len: {spec.seq_len} is above the model's maximum of {limit} positions")
    if spec.task.name == "generate" and (problem := spec.task.beyond_positions(limit)):
        raise UserError(problem)  # the data preparation checks it again against the loaded config
    if spec.task.name == "mmlu" and here:
        from workers.tasks.mmlu_data import load_mmlu

        task = spec.task
        load_mmlu(Path(spec.data.path).expanduser(), task.split, task.subjects, task.limit, task.shots)
