"""scaling: how well the orchestrator keeps N workers busy.

The synthetic engine waits a fixed latency per batch (a wait, not a computation), so on this 2-core
machine N workers do not compete for cores and ideal throughput is N x a single worker. Each worker
count gets the same amount of work per worker; the figure is p_infer_whole (items over the span
from the first shard start to the last shard end, dispatch and result handling included).
Headline: p_infer_whole(32) / (32 x p_infer_whole(1)). Target >= 0.95.

    python benchmarks/scaling.py [--counts 1,2,4,8,16,32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._ray import local_ray  # noqa: E402

LATENCY_MS = 50.0
BATCHES_PER_WORKER = 160  # 8 s of waiting per worker
BS = 4


def job(workers: int, batches: int = BATCHES_PER_WORKER) -> dict:
    return {
        "name": f"scaling-{workers}",
        "task": "masked_lm",
        "model": {"random": {"model_type": "bert", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1,
                             "num_attention_heads": 1, "intermediate_size": 16, "max_position_embeddings": 16}},
        "data": {"synthetic": {"seed": 0, "size": workers * batches * BS}},
        "bs": BS,
        "seq_len": 16,
        "engine": {"name": "synthetic", "latency_ms": LATENCY_MS},
        "passes": ["infer"],
        "workers": workers,
        "gpus_per_worker": 0,
        "cpus_per_worker": 0,
        "shard_size": 10 * BS,  # 10 batches: 0.5 s shards, about 16 per worker (then the tapered tail)
        "warmup": 1,
    }


def main(argv: list[str] | None = None) -> None:
    from orchestrator.driver import run_job
    from orchestrator.spec import validate

    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1,2,4,8,16,32")
    parser.add_argument("--tiny", action="store_true", help="1 and 2 workers, 20 batches each: seconds")
    args = parser.parse_args(argv)
    counts = [1, 2] if args.tiny else [int(c) for c in args.counts.split(",")]
    batches = 20 if args.tiny else BATCHES_PER_WORKER
    rates: dict[int, float] = {}
    with local_ray(num_cpus=2), tempfile.TemporaryDirectory() as results:
        for n in counts:
            rates[n] = run_job(validate(job(n, batches), "scaling"), results_dir=results).row.p_infer_whole
            print(f"{n:>3} workers: p_infer_whole {rates[n]:8.1f} seq/s   efficiency {rates[n] / (n * rates[counts[0]] / counts[0]):.3f}",
                  flush=True)
    top = counts[-1]
    print(f"scaling_efficiency_at_{top}: {rates[top] / (top * rates[counts[0]] / counts[0]):.3f}")


if __name__ == "__main__":
    main()
