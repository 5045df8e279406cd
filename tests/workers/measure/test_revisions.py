"""Cache keys follow `model.revision`: two revisions of one hub id share neither prepared data nor engines.

The hub is a Hugging Face cache laid out as huggingface_hub writes it (`models--org--name/refs/<ref>`
holding a commit, `snapshots/<commit>/` its files), in a temporary folder, read offline with
`local_files_only`: the same lookup transformers makes. Revision "main" and tag "v2" point at two
commits whose weights differ.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.spec import validate
from tests.builders import bert_vocab, job, save_tiny_bert, worker_runtime
from workers.data.dataprep import key_fields
from workers.measure import versions
from workers.models import load_config

REPO = "org/tiny-bert"
MAIN, V2 = "a" * 40, "b" * 40


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    import huggingface_hub.constants

    root = tmp_path / "hub"
    repo = root / ("models--" + REPO.replace("/", "--"))
    for ref, commit, seed_vocab in (("main", MAIN, 512), ("v2", V2, 640)):
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
        snapshot = save_tiny_bert(repo / "snapshots" / commit, vocab_size=seed_vocab)
        shutil.copy(bert_vocab(), snapshot / "vocab.txt")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(versions, "_HASH_CACHE", tmp_path / "file-digests.json")
    return root


def hub_job(tmp_path, revision: str | None, **overrides):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    raw = job(model={"source": REPO, "revision": revision}, data=str(text), engine_cache=str(tmp_path / "e"),
              passes=["val"])
    return validate({**raw, **overrides}, "x").worker_config()


def test_revisions_of_one_hub_id_get_their_own_prepared_data_key(hub, tmp_path):
    keys = {}
    for revision in (None, "main", "v2", V2):
        config = hub_job(tmp_path, revision)
        keys[revision] = key_fields(config, load_config(config.model))
    assert keys["v2"]["revision"] == V2 and keys[None]["revision"] == MAIN
    assert keys["v2"] != keys[None]
    assert keys["v2"] == keys[V2] and keys["main"] == keys[None]  # a tag and its commit are one entry


def test_revisions_of_one_hub_id_get_their_own_engine_key(hub, tmp_path):
    """The weights' digest in every engine key (workers/engines/cache.key_fields) is the revision's."""
    digests = {}
    for revision in (None, "v2"):
        runtime, _ = worker_runtime(hub_job(tmp_path, revision, data={"synthetic": {"size": 8}}))
        digests[revision] = runtime.build_context("fp32").model_files_hash()
        runtime.close()
    assert digests[None] != digests["v2"]
    assert versions.files_digest(REPO, revision="v2") == digests["v2"] == versions.files_digest(REPO, revision=V2)


def test_a_hub_id_not_cached_is_keyed_by_its_revision(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    assert versions.files_digest("org/absent", revision="v1") != versions.files_digest("org/absent", revision="v2")
    assert versions.resolved_revision("org/absent", None) == "default-branch"


def test_files_are_named_by_their_path_in_the_folder_not_their_base_name(tmp_path, monkeypatch):
    """A checkpoint moved into a subfolder loads differently; with base names the digests were equal."""
    monkeypatch.setattr(versions, "_HASH_CACHE", tmp_path / "file-digests.json")
    for folder, sub in (("a", "sub1"), ("b", "sub2")):
        (tmp_path / folder / sub).mkdir(parents=True)
        (tmp_path / folder / sub / "model.safetensors").write_bytes(b"weights")
        (tmp_path / folder / "config.json").write_text("{}")
    assert versions.files_digest(str(tmp_path / "a")) != versions.files_digest(str(tmp_path / "b"))
