"""No torch.compile compile inside a timed batch, counted by a real compile backend on the CPU.

`counting` is a torch.compile backend (registered with dynamo, run by the real torch.compile) that
records every graph dynamo hands it, with the shapes it was compiled for (a `SymInt` is a dynamic
axis) and returns the graph to run eagerly. The runtime then builds, warms (as LoadGen's warm-up
does), and runs LoadGen-sized batches (1..bs rows, any prompt length): the count must not move.
"""

from __future__ import annotations

import pytest
import torch

from orchestrator.spec import validate
from tests.builders import job, mmlu_job, save_tiny_llama_with_tokenizer, worker_runtime
from workers.contract import SampleBatch, ShardResult

COMPILED: list[list[tuple]] = []  # per compiled graph: each tensor input's shape as dynamo traced it


@torch._dynamo.register_backend
def counting(gm: torch.fx.GraphModule, example_inputs: list) -> object:
    traced = [n.meta.get("example_value") for n in gm.graph.nodes if n.op == "placeholder"]
    COMPILED.append([tuple(t.shape) for t in traced if isinstance(t, torch.Tensor)])
    return gm.forward


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Dynamo caches compiled frames per code object: every test starts from none."""
    torch._dynamo.reset()
    COMPILED.clear()
    yield
    torch._dynamo.reset()


def run_samples(runtime, batches: list[list[int]]) -> list[ShardResult]:
    results = []
    for i, indices in enumerate(batches):
        result = ShardResult(shard_id=i, pass_name="infer", attempt=1, worker_id=0, node_id="local",
                             device_name="test", pid=0)
        results.append(runtime.run_samples(SampleBatch(i, tuple(indices), "infer"), result))
    return results


def symbolic(dim: object) -> bool:
    return isinstance(dim, torch.SymInt)


def test_a_fixed_length_task_keeps_its_sequence_axis_static(tmp_path):
    """masked_lm batches are always seq_len long: only the batch axis is marked dynamic. Before: the
    sequence axis was marked too, and every kernel was compiled for a symbolic length."""
    engine = {"name": "torch_compile", "backend": "counting"}
    runtime, _ = worker_runtime(validate(job(engine=engine, passes=["infer"], engine_cache=str(tmp_path)),
                                         "x").worker_config())
    runtime.close()
    ids_shapes = [shapes[0] for shapes in COMPILED]  # input_ids is the first tensor input
    assert ids_shapes and all(shape[1] == 32 and not symbolic(shape[1]) for shape in ids_shapes)
    assert any(symbolic(shape[0]) for shape in ids_shapes)  # the batch axis of the full batch is dynamic


def test_static_shapes_are_warmed_at_every_batch_size_loadgen_sends(tmp_path):
    """`dynamic: false` compiles one graph per shape. LoadGen's bridge sends 1..bs rows: before, only
    full batches were warmed and each smaller size compiled inside its timed query. (A CUDA graph
    mode records one graph per size the same way, on a GPU.)"""
    engine = {"name": "torch_compile", "backend": "counting", "dynamic": False}
    runtime, _ = worker_runtime(validate(job(engine=engine, passes=["infer"], engine_cache=str(tmp_path)),
                                         "x").worker_config())
    warmed = runtime.warm("infer")
    before = len(COMPILED)
    results = run_samples(runtime, [[5], [6, 7], [8, 9, 10], [11, 12, 13, 14], [15]])
    runtime.close()
    assert warmed == 1 + 3  # one full warm-up batch, then one of each size 1..3
    assert len(COMPILED) == before, COMPILED[before:]
    assert [r.examples for r in results] == [1, 2, 3, 4, 1]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return save_tiny_llama_with_tokenizer(tmp_path_factory.mktemp("llama-compile"))


@pytest.mark.parametrize("automatic_dynamic", [True, False])
def test_one_row_batches_of_any_prompt_length_reuse_the_warm_graphs(llama, tmp_path, automatic_dynamic):
    """mmlu at bs 2: one-row batches (routine under LoadGen) of lengths other than seq_len. Before,
    the one-row warm batch was left unmarked: torch 2.13's dynamo still compiles its sequence axis
    dynamic, carrying the full batch's mark over (automatic dynamic shapes, its default), but without
    that rule it was compiled for seq_len alone and each one-row batch of another length recompiled
    inside its timed batch (3 compiles here). Marked explicitly, it no longer depends on the rule."""
    with torch._dynamo.config.patch(automatic_dynamic_shapes=automatic_dynamic):
        no_compile_in_timed_batches(llama, tmp_path)


def no_compile_in_timed_batches(llama, tmp_path) -> None:
    raw = mmlu_job(str(llama), engine={"name": "torch_compile", "backend": "counting"}, bs=2, warmup=1,
                   passes=["infer"], seq_len=512, engine_cache=str(tmp_path))
    runtime, _ = worker_runtime(validate(raw, "x").worker_config())
    runtime.warm("infer")
    before = len(COMPILED)
    lengths = {i: runtime.task.length(i) for i in range(runtime.task.num_examples())}
    one_row = sorted(lengths, key=lengths.get)[::4][:3]  # three prompts of different lengths, none 512 long
    assert len({lengths[i] for i in one_row}) == 3 and 512 not in {lengths[i] for i in one_row}
    results = run_samples(runtime, [[i] for i in one_row] + [[one_row[0], one_row[-1]]])
    runtime.close()
    assert all(r.error is None for r in results)
    assert len(COMPILED) == before, COMPILED[before:]
