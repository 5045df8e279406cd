"""workers/models.py: a local config is read once per process (the --no-ray run reads it twice)."""

from __future__ import annotations

import json
import os

from tests.builders import save_tiny_llama
from workers.models import load_config
from workers.specs import ModelSpec


def test_a_local_config_is_read_once_and_again_when_its_file_changes(tmp_path):
    folder = save_tiny_llama(tmp_path / "m", vocab_size=64)
    spec = ModelSpec(source=str(folder))
    first, second = load_config(spec), load_config(spec)
    assert first is not second and first.to_dict() == second.to_dict()  # a copy: a caller's edit stays its own
    second.hidden_size = 999
    assert load_config(spec).hidden_size == 32
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "num_hidden_layers": 3}))
    stat = (folder / "config.json").stat()
    os.utime(folder / "config.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # later, whatever the clock
    assert load_config(spec).num_hidden_layers == 3
