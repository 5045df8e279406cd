"""BenchWorker in-process: the same object Ray wraps, called directly."""


from orchestrator.spec import validate
from tests.builders import WIKITEXT, bert_vocab, job, minilm_dir
from workers.actor import BenchWorker
from workers.contract import ShardTask


def worker_for(**overrides) -> BenchWorker:
    return BenchWorker(validate(job(**overrides), "x").worker_config())


def test_setup_then_shards_count_every_example():
    w = worker_for()
    info = w.setup()
    assert info.error is None and info.num_examples == 48 and info.item_unit == "seq"
    r1 = w.run_shard(ShardTask(0, 0, 20, "infer"))
    r2 = w.run_shard(ShardTask(1, 20, 48, "infer"))
    assert (r1.items, r2.items) == (20, 28)
    assert r1.warmup_batches == 1 and r2.warmup_batches == 0  # warm-up once per pass per worker
    assert len(r1.batch_core_seconds) == 5 and len(r2.batch_core_seconds) == 7
    assert 0 < r1.core_seconds <= r1.wall_seconds
    assert r1.bytes_per_batch == 4 * 32 * 8  # bs x seq_len x int64
    assert r1.mem_source == "cpu-rss-peak" and r1.peak_mem_bytes > 0
    w.close()


def test_fp16_on_cpu_is_refused_unless_fallback_allowed():
    info = worker_for(precision="fp16").setup()
    assert info.error is not None and info.error.kind == "user"
    assert info.error.message.startswith("precision: fp16 is not supported on a CPU")
    info = worker_for(precision="fp16", precision_fallback=True).setup()
    assert info.error is None and info.precision_effective == "fp32"


def test_seq_len_above_model_maximum():
    info = worker_for(seq_len=65).setup()
    assert info.error.message == "seq_len: 65 is above the model's maximum of 64 positions"


def test_a_crash_in_a_shard_comes_back_as_a_value():
    w = worker_for(engine={"name": "synthetic", "latency_ms": 0, "fail_shards": [1]}, passes=["infer"])
    result = w.run_shard(ShardTask(1, 0, 4, "infer"))
    assert result.error is not None and result.error.kind == "crash" and "injected failure" in result.error.message
    assert result.items == 0 and result.batch_core_seconds == []


def test_user_error_in_a_shard_comes_back_as_a_user_value(monkeypatch):
    """A UserError raised in a shard is kind 'user' (never retried), its one line kept as the message."""
    from workers.engines.synthetic import Synthetic
    from workers.errors import UserError

    def refuse(self, shard):
        raise UserError("engine: shard 2 is outside the profile (min_bs: 8)")

    monkeypatch.setattr(Synthetic, "before_shard", refuse)
    w = worker_for(engine={"name": "synthetic", "latency_ms": 0}, passes=["infer"])
    result = w.run_shard(ShardTask(2, 0, 4, "infer"))
    assert result.error is not None and result.error.kind == "user"
    assert result.error.message == "engine: shard 2 is outside the profile (min_bs: 8)"
    assert result.items == 0 and result.batch_core_seconds == []


def test_real_minilm_weights_and_real_vocab_on_wikitext():
    """Real BERT weights (all-MiniLM-L6-v2; its MLM head is absent, so accuracy means nothing) load and run."""
    w = worker_for(
        model={"source": str(minilm_dir()), "tokenizer": str(bert_vocab())},
        data=str(WIKITEXT), task={"name": "masked_lm", "limit": 16}, seq_len=128, bs=8,
    )
    info = w.setup()
    assert info.error is None, info.error
    assert info.num_examples == 16
    result = w.run_shard(ShardTask(0, 0, 16, "val"))
    assert result.error is None and result.items == 16
    assert 0.07 * 16 * 128 < result.scored < 0.13 * 16 * 128
    assert 0 <= result.correct <= result.scored
    assert result.items / result.core_seconds > 0
    w.close()
