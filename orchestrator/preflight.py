"""Checks that need no cluster: run before Ray starts, so bad input fails in a second, in one line."""

from __future__ import annotations

from pathlib import Path

from orchestrator.spec import JobSpec
from workers.errors import UserError
from workers.models import check_local_paths, load_config, max_positions
from workers.specs import looks_like_local_path


def _config_is_local(spec: JobSpec) -> bool:
    model = spec.model
    if isinstance(model.random, dict):
        return True
    name = model.source if model.source is not None else str(model.random)
    return looks_like_local_path(name)


def preflight(spec: JobSpec) -> None:
    check_local_paths(spec.model)
    if spec.data.path is not None and not Path(spec.data.path).expanduser().exists():
        raise UserError(f"data.path: '{spec.data.path}' does not exist")
    # The config of a hub model may not be reachable from the driver; the workers check it then.
    if _config_is_local(spec):
        limit = max_positions(load_config(spec.model))
        if limit is not None and spec.seq_len > limit:
            raise UserError(f"seq_len: {spec.seq_len} is above the model's maximum of {limit} positions")
