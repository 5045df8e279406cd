"""A dead or stuck rank 0 and the failure paths of a tensor-parallel group, on gloo (no GPU here).

NCCL does not notice a dead peer, so the ranks watch each other's processes (they share the node):
rank 0 its followers (FollowerWatch, tests in tests/orchestrator/cluster/test_groups.py), each follower
rank 0 (LeaderWatch, here). gloo notices a dead peer by itself and its abort does not wake a waiting
collective, so what these tests show is the watch and what it reports, and that every failure path
aborts the communicator (torch's `_abort_process_group`) instead of destroying it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time

import pytest
import torch
import torch.distributed as dist
from torch.distributed import distributed_c10d

from orchestrator.spec import validate
from tests.builders import job
from tests.cluster import free_port
from workers.contract import ShardTask
from workers.parallel.process_group import Rendezvous, join_group, leave_group
from workers.rank import RankWorker


@pytest.mark.parametrize("stop, state", [(signal.SIGKILL, "gone"), (signal.SIGSTOP, "stopped")])
def test_a_follower_aborts_once_rank_0_is_gone_or_stopped(stop, state):
    """Before: nothing watched rank 0, and its followers waited out parallel.timeout_s (600-1,200 s)."""
    from workers.parallel.watch import LeaderWatch

    leader = subprocess.Popen(["sleep", "60"])
    aborted: list[float] = []
    try:
        with LeaderWatch(leader.pid, fault_timeout_s=0.4, abort=lambda: aborted.append(time.monotonic())) as watch:
            t0 = time.monotonic()
            time.sleep(0.3)
            assert aborted == []  # a running rank 0 is left alone
            os.kill(leader.pid, stop)
            deadline = time.monotonic() + 5
            while not aborted and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        leader.kill()
        leader.wait()
    assert len(aborted) == 1 and aborted[0] - t0 < 1.0
    assert watch.reason == f"rank 0 (pid {leader.pid}) is {state}"


def _rank_0(port: int, joined) -> None:
    """Rank 0 that joins the group and then never enters a collective (until it is stopped and killed)."""
    join_group(Rendezvous("127.0.0.1", port, 2, 30.0, "g"), 0, torch.device("cpu"))
    joined.set()
    time.sleep(300)


def test_a_follower_following_a_shard_reports_that_rank_0_stopped_and_aborted(tmp_path):
    """A follower (a real RankWorker, synthetic engine, gloo) waits at the shard's barrier for a rank 0
    that stopped (NCCL's view of a dead peer). Its watch aborts the communicator and the report
    names rank 0; gloo's wait itself ends at the group's timeout_s (4 s here), NCCL's at the abort."""
    context = multiprocessing.get_context("spawn")
    port, joined = free_port(), context.Event()
    leader = context.Process(target=_rank_0, args=(port, joined))
    leader.start()
    spec = job(engine={"name": "synthetic", "latency_ms": 1}, passes=["infer"],
               parallel={"tp": 2, "timeout_s": 4, "fault_timeout_s": 0.4})
    follower = RankWorker(validate(spec, "x").worker_config(), rank=1)
    try:
        info = follower.join(Rendezvous("127.0.0.1", port, 2, 4.0, "g", leader_pid=leader.pid))
        assert info.error is None and joined.wait(30)
        os.kill(leader.pid, signal.SIGSTOP)
        report = follower.follow(ShardTask(0, 0, 8, "infer"), "g")
    finally:
        follower.close()
        leader.kill()
        leader.join(10)
    assert report.error is not None and report.error.kind == "crash"
    assert report.error.message.startswith(f"rank 0 (pid {leader.pid}) is stopped; rank 1 aborted its communicator")
    assert not dist.is_initialized()


def test_a_failed_attempt_aborts_the_communicator_instead_of_destroying_it(monkeypatch):
    """Before: rank 0's `_restart_group` (and a failed setup) left the group with
    `destroy_process_group`, which may wait on the hung communicator of a dead peer."""
    calls: list[str] = []
    destroy, abort = dist.destroy_process_group, distributed_c10d._abort_process_group
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: calls.append("destroy") or destroy(*a))
    monkeypatch.setattr(distributed_c10d, "_abort_process_group", lambda *a: calls.append("abort") or abort(*a))
    rendezvous = Rendezvous("127.0.0.1", free_port(), 1, 30.0, "g")
    worker = RankWorker(validate(job(engine="synthetic", parallel={"tp": 2}), "x").worker_config(), rank=0)
    try:
        join_group(rendezvous, 0, torch.device("cpu"))
        worker._rendezvous = rendezvous
        worker._restart_group([])  # an attempt failed; no follower left to restart here
        assert calls == ["abort"] and not dist.is_initialized()
        join_group(rendezvous, 0, torch.device("cpu"))
        worker.close()  # the end of a run that went well: a graceful leave
        assert calls == ["abort", "destroy"]
    finally:
        leave_group()
