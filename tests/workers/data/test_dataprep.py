"""Data prepared once and cached: the same arrays as the per-worker path, from the same pure functions.

The reference in each test is what every worker computed in its constructor before the data was
prepared once per run: the task's pure steps (read, tokenise, mask, build and encode prompts) run
right here. The prepared table, made now or read back from the disk cache, must hold exactly that.
"""

import hashlib
import shutil

import numpy as np
import pytest
import torch

from orchestrator.spec import validate
from tests.builders import (
    MMLU_DIR,
    SMOLLM2_GGUF,
    WIKITEXT,
    bert_vocab,
    job,
    mmlu_job,
    save_bpe_tokenizer,
    smollm2_package_dir,
)
from workers.data.dataprep import DATA_FILE, key_fields, prepare_dataset
from workers.models import load_config, load_tokenizer
from workers.tasks.masked_lm import MaskedLM, mask_stream, read_text
from workers.tasks.mmlu import MMLU, choice_token_ids, encode_prompts, prompt_limit
from workers.tasks.mmlu_data import load_mmlu, prompt_format

BERT_30522 = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}
TINY_LLAMA_49152 = {"model_type": "llama", "vocab_size": 49152, "hidden_size": 32, "intermediate_size": 64,
                    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "max_position_embeddings": 2048}


def wikitext_config(cache, **overrides):
    raw = job(**{"model": {"random": BERT_30522, "tokenizer": str(bert_vocab())}, "data": str(WIKITEXT),
                 "seq_len": 128, "data_cache": str(cache), **overrides})
    return validate(raw, "t").worker_config()


def per_worker_windows(config):
    """Masked-LM windows exactly as each worker built them: tokenise the whole text, mask, cut."""
    tokenizer = load_tokenizer(config.model)
    text = read_text(WIKITEXT, skip_headings=True)
    tokens = np.asarray(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64)
    inputs, labels = mask_stream(tokens, tokenizer.mask_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
                                 config.task.mask_prob, config.seed)
    n = len(inputs) // config.seq_len
    return inputs[: n * config.seq_len].reshape(n, -1), labels[: n * config.seq_len].reshape(n, -1)


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def test_real_wikitext_prepared_and_cached_equals_the_per_worker_windows(tmp_path):
    config = wikitext_config(tmp_path / "cache")
    inputs, labels = per_worker_windows(config)
    made, table = prepare_dataset(config)
    again, cached = prepare_dataset(config)
    assert (made.cache_hit, again.cache_hit) == (False, True) and made.cache_key == again.cache_key
    assert made.num_examples == again.num_examples == len(inputs) == (267_411 + 2) // 128
    assert made.fingerprint == again.fingerprint == digest(inputs, labels)  # the fingerprint workers compared
    for t in (table, cached):
        task = MaskedLM(t)
        assert np.array_equal(task.inputs, inputs) and np.array_equal(task.labels, labels)
        assert task.mask_id == 103 and task.fingerprint() == made.fingerprint
    assert made.costs is None  # every window costs the same: plans cut by count
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")) == [
        f"data-{made.cache_key}"]
    assert (tmp_path / "cache" / f"data-{made.cache_key}" / DATA_FILE).stat().st_size > inputs.nbytes * 2


def test_the_cache_key_follows_every_input_of_the_preparation(tmp_path):
    config = wikitext_config(tmp_path / "cache")
    model_config = load_config(config.model)
    key = key_fields(config, model_config)
    same = [wikitext_config(tmp_path / "cache", bs=32, engine="onnxruntime", workers=4, warmup=0)]
    assert all(key_fields(c, model_config) == key for c in same)  # what only runs the data: same entry
    text = tmp_path / "elsewhere" / WIKITEXT.name
    text.parent.mkdir()
    shutil.copy(WIKITEXT, text)
    differ = [wikitext_config(tmp_path / "cache", seed=1), wikitext_config(tmp_path / "cache", seq_len=64),
              wikitext_config(tmp_path / "cache", task={"name": "masked_lm", "mask_prob": 0.15}),
              validate(dict(job(model={"random": BERT_30522, "tokenizer": str(bert_vocab())}, data=str(text),
                                seq_len=128)), "t").worker_config()]
    keys = [key_fields(c, model_config) for c in differ]
    text.write_text(text.read_text() + "\nOne more line .\n")
    keys.append(key_fields(differ[-1], model_config))
    assert keys[3]["data"] == key["data"] and keys[4]["data"] != key["data"]  # its content, not its folder
    assert all(k != key for k in keys[:3] + keys[4:]) and keys[3] == key
    assert key_fields(config, load_config(config.model.model_copy(update={"random": dict(BERT_30522, vocab_size=30600)}))) != key
    assert key["tokenizer"] is not None and key["code"]


def test_synthetic_data_is_generated_not_cached(tmp_path):
    config = validate(job(data_cache=str(tmp_path / "cache")), "t").worker_config()
    info, table = prepare_dataset(config)
    assert info.cache_hit is None and info.cache_key is None and not (tmp_path / "cache").exists()
    again = MaskedLM.prepare(config.task, config.data, None, load_config(config.model), config.seq_len, config.seed)
    assert table.equals(again) and info.num_examples == 48


def test_a_workers_view_maps_the_table_without_copying_it(tmp_path):
    """The worker reads numpy views of the table's own (read-only) buffers: no copy of the dataset."""
    _, table = prepare_dataset(wikitext_config(tmp_path / "cache"))  # memory-mapped from the cache file
    task = MaskedLM(table)
    buffer = table.column("input_ids").chunk(0).flatten().to_numpy()
    assert np.shares_memory(task.inputs, buffer) and not task.inputs.flags.writeable
    batch = next(task.batches(5, 9, 4))
    assert batch.inputs["input_ids"].numpy().flags.writeable  # a batch is its own small copy
    assert np.array_equal(batch.inputs["input_ids"].numpy(), task.inputs[5:9])


@pytest.fixture(scope="module")
def bpe_folder(tmp_path_factory):
    return save_bpe_tokenizer(tmp_path_factory.mktemp("bpe"))


def per_worker_prompts(config):
    """MMLU prompts exactly as each worker built them: load the CSVs, build and encode every prompt."""
    tokenizer = load_tokenizer(config.model)
    task = config.task
    data = load_mmlu(MMLU_DIR, task.split, task.subjects, task.limit, task.shots)
    limit = prompt_limit(task, config.seq_len, load_config(config.model))
    return data, encode_prompts(data, tokenizer, task.shots, limit, prompt_format(task.scoring)), choice_token_ids(tokenizer)


def check_mmlu_table(config, reference, table, info):
    data, encoded, choice_ids = reference
    task = MMLU(table)
    assert task.num_examples() == info.num_examples == len(encoded)
    assert task.choice_ids == choice_ids and task.scoring == config.task.scoring
    for i, (q, e) in enumerate(zip(data.questions, encoded)):
        assert task.prompt(i).tolist() == e.ids.tolist() and task.gold(i) == q.answer
    batch = next(task.batches(0, 3, 3))
    records = task.score(batch, torch.zeros(3, max(batch.lengths), max(choice_ids) + 1)).records
    order = sorted(range(3), key=lambda i: (len(encoded[i].ids), i))  # a batch is sorted by length
    assert [(r["example"], r["subject"], r["question_index"], r["gold"], r["shots_used"], r["prompt_tokens"])
            for r in records] == [(i, data.questions[i].subject, data.questions[i].index, data.questions[i].answer,
                                   encoded[i].shots_used, len(encoded[i].ids)) for i in order]
    assert info.costs is not None and len(info.costs) == len(encoded)
    lengths = [len(e.ids) for e in encoded]
    longest, shortest = int(np.argmax(lengths)), int(np.argmin(lengths))
    assert info.costs[longest] > info.costs[shortest] * lengths[longest] / lengths[shortest]  # + attention


def test_mmlu_prepared_and_cached_equals_the_per_worker_prompts(tmp_path, bpe_folder):
    raw = mmlu_job({"random": dict(TINY_LLAMA_49152, vocab_size=1024), "tokenizer": str(bpe_folder)},
                   data_cache=str(tmp_path / "cache"), seq_len=600)  # some prompts lose shots at 600 tokens
    config = validate(raw, "t").worker_config()
    made, table = prepare_dataset(config)
    again, cached = prepare_dataset(config)
    assert (made.cache_hit, again.cache_hit) == (False, True) and made.fingerprint == again.fingerprint
    reference = per_worker_prompts(config)
    check_mmlu_table(config, reference, table, made)
    check_mmlu_table(config, reference, cached, again)
    assert {e.shots_used for e in reference[1]} != {5}


@pytest.mark.slow
def test_mmlu_with_smollm2s_tokenizer_prepared_and_cached_equals_the_per_worker_prompts(tmp_path):
    raw = mmlu_job({"random": TINY_LLAMA_49152, "tokenizer": str(smollm2_package_dir() / SMOLLM2_GGUF)},
                   data_cache=str(tmp_path / "cache"))
    config = validate(raw, "t").worker_config()
    made, table = prepare_dataset(config)
    again, cached = prepare_dataset(config)
    assert (made.cache_hit, again.cache_hit) == (False, True)
    reference = per_worker_prompts(config)
    check_mmlu_table(config, reference, table, made)
    check_mmlu_table(config, reference, cached, again)


def test_two_nodes_preparing_one_entry_of_a_shared_cache_both_get_it(monkeypatch, tmp_path):
    """A data cache on NFS: the flock holds on one node only, so two nodes can prepare the same
    entry at once. The one that publishes second uses the first one's entry (before: ENOTEMPTY)."""
    from tests.two_nodes import TwoNodes
    from workers.data import dataprep

    nodes = TwoNodes(monkeypatch)  # the flock taken away: both nodes miss and prepare
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    raw = job(model={"random": BERT_30522, "tokenizer": str(bert_vocab())}, data=str(text), seq_len=32,
              data_cache=str(tmp_path / "cache"))
    config = validate(raw, "t").worker_config()
    load_config(config.model), load_tokenizer(config.model)  # transformers' lazy imports are not thread-safe
    (tmp_path / "cache").mkdir()  # (the real lock would have made it)
    real_write = dataprep.write_table

    def write_table(path, table):
        nodes.gate()
        real_write(path, table)

    monkeypatch.setattr(dataprep, "write_table", write_table)
    out, errors = nodes.run(lambda: prepare_dataset(config))
    assert errors == []
    (info_a, table_a), (info_b, table_b) = out["a"], out["b"]
    assert info_a.cache_key == info_b.cache_key and info_a.fingerprint == info_b.fingerprint
    assert table_a.equals(table_b)
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1  # one entry, no leftover copy
