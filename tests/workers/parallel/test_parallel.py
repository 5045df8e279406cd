"""A tensor-parallel rank without Ray: two processes over gloo, each holding half of a tiny Llama.

The logits of the sharded model must equal the single-process model's within fp32 tolerance on
real MMLU prompts (5-shot, right-padded batches), for both ways a model is loaded: random weights
(built under the seed, then sharded by transformers' `maybe_distribute_model`) and a saved folder
(`from_pretrained` with a `DistributedConfig`). Ray's part (placement, restarts) is tested in
tests/orchestrator/cluster/test_groups.py.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from tests.builders import MMLU_DIR, TINY_LLAMA, mmlu_job, save_tiny_llama_with_tokenizer
from tests.cluster import free_port
from workers.errors import UserError
from workers.measure.flops import matmul_params
from workers.specs import DataSpec, MMLUTask, ModelSpec

TP = 2
SUBJECTS = ["abstract_algebra", "anatomy", "virology"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return save_tiny_llama_with_tokenizer(tmp_path_factory.mktemp("tp-llama"))


def mmlu_batches(llama: Path) -> list[dict[str, torch.Tensor]]:
    """Three batches of four real 5-shot MMLU prompts, right-padded as the mmlu task feeds them."""
    from workers.tasks.mmlu import MMLU

    task = MMLU(MMLU.prepare(MMLUTask(subjects=SUBJECTS, limit=4), DataSpec(path=str(MMLU_DIR)),
                             AutoTokenizer.from_pretrained(llama), AutoConfig.from_pretrained(llama), 2048, seed=0))
    return [batch.inputs for batch in task.batches(0, 12, 4)]


def _rank(rank: int, port: int, specs: dict[str, dict], batches: list, out: dict) -> None:
    """One rank: join the group, load each model's slice, run every batch; rank 0 reports."""
    from workers.models import load_config
    from workers.parallel.process_group import Rendezvous, join_group, leave_group, load_sharded_model

    torch.set_num_threads(1)
    join_group(Rendezvous("127.0.0.2", port, TP, 60.0, "test"), rank, torch.device("cpu"))
    try:
        for name, raw in specs.items():
            spec = ModelSpec.model_validate(raw)
            model = load_sharded_model(spec, load_config(spec), "causal_lm", torch.float32, torch.device("cpu"), seed=3)
            q_proj = model.model.layers[0].self_attn.q_proj.weight
            with torch.inference_mode():
                logits = [model(**inputs, use_cache=False).logits for inputs in batches]
            if rank == 0:
                out[name] = {"logits": logits, "matmul_params": matmul_params(model),
                             "local_rows": q_proj.to_local().shape[0], "rows": q_proj.shape[0]}
    finally:
        leave_group()


def run_ranks(specs: dict[str, dict], batches: list) -> dict:
    context = multiprocessing.get_context("spawn")
    port = free_port()
    with context.Manager() as manager:
        out = manager.dict()
        procs = [context.Process(target=_rank, args=(rank, port, specs, batches, out)) for rank in range(TP)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=240)
        assert [p.exitcode for p in procs] == [0] * TP
        return dict(out)


def single_process(spec: ModelSpec, batches: list) -> tuple[list[torch.Tensor], int]:
    from workers.models import load_config, load_model

    model = load_model(spec, load_config(spec), "causal_lm", torch.float32, torch.device("cpu"), seed=3)
    with torch.inference_mode():
        return [model(**inputs, use_cache=False).logits for inputs in batches], matmul_params(model)


@pytest.mark.slow
def test_sharded_logits_equal_the_single_process_model_on_mmlu_prompts(llama):
    vocab = len(AutoTokenizer.from_pretrained(llama))
    specs = {"folder": {"source": str(llama)},
             "random": {"random": dict(TINY_LLAMA, vocab_size=vocab), "tokenizer": str(llama)}}
    batches = mmlu_batches(llama)
    assert any((b["attention_mask"] == 0).any() for b in batches)  # padded rows are in the comparison
    sharded = run_ranks(specs, batches)
    for name, raw in specs.items():
        want, params = single_process(ModelSpec.model_validate(raw), batches)
        got = sharded[name]
        assert got["local_rows"] * TP == got["rows"]  # each rank holds half of q_proj
        assert got["matmul_params"] == params  # FLOPs are counted once, from the whole model
        for g, w in zip(got["logits"], want):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-4)
        assert [g[:, -1].argmax(-1).tolist() for g in got["logits"]] == [w[:, -1].argmax(-1).tolist() for w in want]


def test_a_model_without_a_tp_plan_is_refused_in_one_line():
    from workers.parallel.process_group import check_tp_plan

    config = AutoConfig.for_model("bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=128)
    with pytest.raises(UserError, match=r"^parallel.tp: BertForMaskedLM has no tensor-parallel plan in transformers"):
        check_tp_plan(config, "masked_lm")
    check_tp_plan(AutoConfig.for_model("llama", **{k: v for k, v in TINY_LLAMA.items() if k != "model_type"}),
                  "causal_lm")


def test_a_sharded_model_outside_a_group_is_refused(llama):
    from workers.models import load_config
    from workers.parallel.process_group import load_sharded_model

    spec = ModelSpec(source=str(llama))
    with pytest.raises(UserError, match="parallel.tp: a sharded model needs its group of ranks"):
        load_sharded_model(spec, load_config(spec), "causal_lm", torch.float32, torch.device("cpu"), seed=0)


def _compiled_rank(rank: int, port: int, raw_job: dict, out: dict) -> None:
    """One rank's WorkerRuntime (task, sharded model, torch eager val and torch_compile infer) on a shard."""
    from orchestrator.spec import validate
    from tests.builders import run_on, worker_runtime
    from workers.contract import ShardTask
    from workers.parallel.process_group import Rendezvous, join_group, leave_group

    torch.set_num_threads(1)
    join_group(Rendezvous("127.0.0.2", port, TP, 300.0, "test"), rank, torch.device("cpu"))
    try:
        runtime, _ = worker_runtime(validate(raw_job, "t").worker_config())
        try:
            results = {p: run_on(runtime, ShardTask(0, 0, 8, p)) for p in ("val", "infer")}
        finally:
            runtime.close()
        if rank == 0:
            out.update({p: r.records for p, r in results.items()})
    finally:
        leave_group()


@pytest.mark.slow
def test_torch_compile_runs_a_sharded_model_as_eager_does(llama, tmp_path):
    raw = mmlu_job(str(llama), engine={"name": "torch_compile"}, bs=4, passes=["val", "infer"], warmup=1,
                   parallel={"tp": TP}, engine_cache=str(tmp_path / "cache"))
    context = multiprocessing.get_context("spawn")
    port = free_port()
    with context.Manager() as manager:
        out = manager.dict()
        procs = [context.Process(target=_compiled_rank, args=(rank, port, raw, out)) for rank in range(TP)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=500)
        assert [p.exitcode for p in procs] == [0] * TP
        val, infer = out["val"], out["infer"]
    assert len(val) == len(infer) == 8
    for v, i in zip(val, infer):
        assert (v["example"], v["predicted"]) == (i["example"], i["predicted"])
        assert i["logit_A"] == pytest.approx(v["logit_A"], abs=1e-4)
    entries = [p for p in (tmp_path / "cache").glob("torch_compile-*") if p.is_dir()]
    assert len(entries) == TP  # one cache entry per rank's slice of the weights


def test_a_rank_that_never_comes_fails_the_group_in_one_line_within_the_timeout():
    import time

    from workers.parallel.process_group import GroupJoinFailed, Rendezvous, join_group, leave_group

    t0 = time.monotonic()
    with pytest.raises(GroupJoinFailed) as err:
        join_group(Rendezvous("127.0.0.2", free_port(), TP, 2.0, "test"), 0, torch.device("cpu"))
    leave_group()
    assert time.monotonic() - t0 < 30
    message = str(err.value)
    assert message.startswith("rank 0 of 2 could not join its group at 127.0.0.2:") and "within 2 s" in message
    assert "\n" not in message


def _silent_peer(port: int, joined) -> None:
    """Rank 1: joins the group, then never enters a collective (a rank that failed, or an NCCL peer
    that died: rank 0 is not told), until it is killed."""
    import time

    from workers.parallel.process_group import Rendezvous, join_group

    join_group(Rendezvous("127.0.0.1", port, TP, 120.0, "test"), 1, torch.device("cpu"))
    joined.set()
    time.sleep(300)


def test_abort_frees_a_rank_waiting_for_a_silent_peer_and_the_group_forms_again():
    """What rank 0's watch does on a fault (workers/parallel/watch.py), on gloo: abort the communicator
    (torch's abort, which NCCL needs) and stop the failed peer (which gloo needs: its abort does not
    wake a waiting collective). The all-reduce returns an error at once instead of after
    timeout_s (120 s here), the group is gone, and a new one forms in the same process. The group
    itself is formed after a failed formation, as rank 0 does when it restarts its group."""
    import os
    import signal
    import threading
    import time

    import torch.distributed as dist

    from workers.parallel.process_group import GroupJoinFailed, Rendezvous, abort_group, join_group, leave_group
    from workers.parallel.watch import process_state

    with pytest.raises(GroupJoinFailed):  # rank 0's last formation failed (a peer never came) ...
        join_group(Rendezvous("127.0.0.1", free_port(), TP, 1.0, "failed"), 0, torch.device("cpu"))
    context = multiprocessing.get_context("spawn")  # ... and the next one meets a fresh process
    port = free_port()
    joined = context.Event()
    peer = context.Process(target=_silent_peer, args=(port, joined))
    peer.start()
    try:
        join_group(Rendezvous("127.0.0.1", port, TP, 120.0, "test"), 0, torch.device("cpu"))
        assert joined.wait(60) and process_state(peer.pid) == "running"
        os.kill(peer.pid, signal.SIGSTOP)  # what NCCL's silence looks like to gloo: the connection stays open
        deadline = time.monotonic() + 10
        while process_state(peer.pid) != "stopped" and time.monotonic() < deadline:  # signals arrive a bit later
            time.sleep(0.01)
        assert process_state(peer.pid) == "stopped"

        def watch() -> None:
            time.sleep(1.0)
            abort_group()
            os.kill(peer.pid, signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
        t0 = time.monotonic()
        with pytest.raises(RuntimeError):
            dist.all_reduce(torch.ones(4))
        assert time.monotonic() - t0 < 30  # not the 120 s timeout
        assert not dist.is_initialized()
        peer.join(10)
        assert process_state(peer.pid) == "gone"
        join_group(Rendezvous("127.0.0.1", free_port(), 1, 30.0, "again"), 0, torch.device("cpu"))
        ones = torch.ones(2)
        dist.all_reduce(ones)
        assert ones.tolist() == [1.0, 1.0]
    finally:
        leave_group()
        if peer.is_alive():
            peer.kill()


def test_the_rendezvous_listens_on_loopback_only():
    """Every rank shares rank 0's node (STRICT_PACK): the group's store is never on the network."""
    from workers.parallel.leader import new_rendezvous

    rendezvous = new_rendezvous(2, 60.0, ())
    assert rendezvous.address == "127.0.0.1" and rendezvous.world_size == 2 and rendezvous.port > 0
