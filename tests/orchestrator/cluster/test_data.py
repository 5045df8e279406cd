"""The run's dataset through Ray: prepared by one Ray task, mapped by the workers from the object store."""

import hashlib

import pytest

from orchestrator.cluster.data import LocalDataset, RayDataset, check_preparations_agree
from orchestrator.spec import validate
from tests.builders import WIKITEXT, bert_vocab, data_info, job
from workers.errors import RunFailed, UserError

BERT_30522 = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128}


def wikitext_config(cache, **overrides):
    return validate(job(**{"model": {"random": BERT_30522, "tokenizer": str(bert_vocab())}, "data": str(WIKITEXT),
                           "seq_len": 128, "data_cache": str(cache), **overrides}), "t").worker_config()


def windows_digest(handle) -> str:
    from workers.tasks.masked_lm import MaskedLM

    task = MaskedLM(handle.table())
    return hashlib.sha256(task.inputs.tobytes() + task.labels.tobytes()).hexdigest()


def worker_view(handle) -> dict:
    """What a worker process sees through its handle: run in Ray worker processes (pickled by value)."""
    import os

    import numpy as np
    import pyarrow as pa
    import ray

    from workers.tasks.masked_lm import MaskedLM

    ray.get(ray.put(pa.table({"warm": np.zeros(1 << 18)})))  # Ray's first get in a process costs ~10 MiB itself

    def rss_kib() -> int:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))

    before = rss_kib()
    table = handle.table()
    task = MaskedLM(table)
    grew = rss_kib() - before
    buffer = table.column("input_ids").chunk(0).flatten().to_numpy()
    return {"pid": os.getpid(), "digest": hashlib.sha256(task.inputs.tobytes() + task.labels.tobytes()).hexdigest(),
            "writeable": task.inputs.flags.writeable, "shares": bool(np.shares_memory(task.inputs, buffer)),
            "grew_kib": grew, "fingerprint": task.fingerprint()}


@pytest.mark.slow
def test_one_preparation_of_real_wikitext_shared_through_the_object_store(ray_local, tmp_path):
    local = LocalDataset(wikitext_config(tmp_path / "local-cache"))  # --no-ray: prepared in this process
    (reference,) = local.infos()
    config = wikitext_config(tmp_path / "cache")
    data = RayDataset(config)
    node = ray_local.get_runtime_context().get_node_id()
    handles = data.handles([node, node, node])
    (info,) = data.infos()  # one preparation for three workers
    assert (info.cache_hit, info.num_examples, info.fingerprint) == (False, reference.num_examples,
                                                                      reference.fingerprint)
    assert info.where == "127.0.0.2" and info.cpu_seconds > 0
    look = ray_local.remote(num_cpus=0)(worker_view)
    views = ray_local.get([look.remote(h) for h in handles])
    expected = windows_digest(local.handles(["here"])[0])
    for view in views:
        assert view["digest"] == expected and view["fingerprint"] == info.fingerprint
        assert view["shares"] and not view["writeable"]  # numpy views of the shared object, read-only
    again = RayDataset(config)
    again.handles([node])
    assert again.infos()[0].cache_hit is True


@pytest.mark.slow
def test_workers_map_the_object_instead_of_copying_it(ray_local, tmp_path):
    config = validate(job(data={"synthetic": {"seed": 0, "size": 20_000}}, seq_len=128), "t").worker_config()
    data = RayDataset(config)
    node = ray_local.get_runtime_context().get_node_id()
    (info,) = data.infos()
    assert info.table_bytes == 2 * 20_000 * 128 * 8  # inputs and labels, 40 MiB
    look = ray_local.remote(num_cpus=0)(worker_view)
    for view in ray_local.get([look.remote(h) for h in data.handles([node, node])]):
        assert view["shares"] and not view["writeable"]
        assert view["grew_kib"] < info.table_bytes / 1024 / 4, view  # a worker touches only the rows it reads


@pytest.mark.slow
def test_a_preparation_error_is_the_users_one_line(ray_local, tmp_path):
    config = wikitext_config(tmp_path / "cache", model={"random": dict(BERT_30522, vocab_size=512),
                                                        "tokenizer": str(bert_vocab())})
    data = RayDataset(config)
    data.handles([ray_local.get_runtime_context().get_node_id()])
    with pytest.raises(UserError, match=r"^model.tokenizer: token id \d+ is outside the model's vocabulary \(512\)"):
        data.infos()


def test_preparations_on_several_nodes_must_agree():
    same = [data_info(num_examples=10, where="10.0.0.1"), data_info(num_examples=10, where="10.0.0.2")]
    assert check_preparations_agree(same) is same[0]
    with pytest.raises(RunFailed, match="the nodes prepared different datasets .*10.0.0.2: 11 examples"):
        check_preparations_agree([same[0], data_info(num_examples=11, where="10.0.0.2")])


@pytest.mark.slow
def test_synthetic_data_and_a_cache_hit_are_prepared_by_the_first_worker_not_a_new_process(ray_local, tmp_path):
    """A new Ray worker process costs seconds of imports before it runs anything (the startup
    benchmark waited 8.5 s for one); data that needs no tokenising is prepared by the first worker
    (on the driver's node, for a cache hit), which is such a process already. A miss still gets a
    preparation process of its own, which exits with the tokenizer's memory."""
    from workers.actor import BenchWorker

    node = ray_local.get_runtime_context().get_node_id()
    remote = ray_local.remote(num_cpus=0)(BenchWorker)

    def prepared_by(config) -> tuple:
        workers = [remote.remote(config, i) for i in range(2)]
        data = RayDataset(config)
        handles = data.handles([node, node], workers)
        (info,) = data.infos()
        first = ray_local.get(workers[0].pid.remote())
        ray_local.get([w.setup.remote(h) for w, h in zip(workers, handles)])  # the handles work for every worker
        for w in workers:
            ray_local.kill(w)
        return info, info.pid == first

    synthetic = validate(job(data={"synthetic": {"seed": 0, "size": 64}}), "t").worker_config()
    info, by_worker = prepared_by(synthetic)
    assert by_worker and info.num_examples == 64 and info.cache_hit is None
    config = wikitext_config(tmp_path / "cache", task={"name": "masked_lm", "limit": 40})
    info, by_worker = prepared_by(config)  # a miss: tokenising, in a process of its own
    assert not by_worker and info.cache_hit is False and info.pid > 0
    info, by_worker = prepared_by(config)  # now in the cache
    assert by_worker and info.cache_hit is True and info.num_examples == 40


def test_whether_the_cache_has_the_data_is_known_without_torch_or_transformers(tmp_path):
    """The driver asks before it decides who prepares the data; torch and transformers cost it seconds."""
    import subprocess
    import sys

    from workers.data.dataprep import cached_here, prepare_dataset

    config = wikitext_config(tmp_path / "cache", task={"name": "masked_lm", "limit": 8})
    assert not cached_here(config)
    prepare_dataset(config)
    assert cached_here(config)
    assert not cached_here(wikitext_config(tmp_path / "cache", task={"name": "masked_lm", "limit": 8}, seq_len=64))
    assert not cached_here(validate(job(), "t").worker_config())  # synthetic data is never cached
    code = ("import sys, json; from workers.specs import WorkerConfig; from workers.data.dataprep import cached_here; "
            f"hit = cached_here(WorkerConfig.model_validate_json({config.model_dump_json()!r})); "
            "print(hit, sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "[]"]
