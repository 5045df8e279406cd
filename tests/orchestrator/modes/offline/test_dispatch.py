"""The dispatcher's behaviour over a simulated pool (no Ray, no processes): queue depth, the end of a
pass, retries placed on other workers, bad workers taken out and replaced, pings, starvation."""

import random
from collections import Counter

import pytest

from tests.fakes.simulated_pool import SimulatedPool, info_of
from orchestrator.modes.offline import dispatch
from orchestrator.modes.offline.dispatch import QUEUE_DEPTH, Dispatcher
from orchestrator.cluster.policy import FAILURES_IN_A_ROW, broken_at_setup, judge_worker, may_run
from workers.contract import ShardResult, ShardTask, WorkerError
from workers.errors import RunFailed


def shards(n: int) -> list[ShardTask]:
    return [ShardTask(i, 10 * i, 10 * i + 10, "infer") for i in range(n)]


def drawn(rng: random.Random) -> float:
    return rng.uniform(0.5, 1.5)


def run(pool: SimulatedPool, n: int, max_attempts: int = 3):
    seen: list[ShardResult] = []
    dispatcher = Dispatcher(pool, max_attempts, seen.append)
    accepted = dispatcher.run(shards(n))
    assert sorted(r.shard_id for r in accepted) == list(range(n))  # every shard once
    return dispatcher, accepted, seen


def test_queue_depth_and_the_end_of_pass_rule():
    """Up to QUEUE_DEPTH shards per worker while more shards wait than there are workers; from
    then on a shard goes only to a worker with nothing to do."""
    workers, n = 4, 40
    pool = SimulatedPool(workers, lambda rng: 1.0)
    run(pool, n)
    loads = [load for _, _, load in pool.log]
    assert max(loads) == QUEUE_DEPTH - 1  # never a third shard in flight
    assert Counter(w for w, _, _ in pool.log[:workers * QUEUE_DEPTH]) == {w: QUEUE_DEPTH for w in range(workers)}
    left = [n - i for i in range(n)]  # shards not yet handed out at each submit (no retries here)
    assert all(load == 0 for load, waiting in zip(loads, left) if waiting <= workers)
    assert any(load == 1 for load in loads)


def test_a_failing_worker_never_gets_its_own_shard_back_and_is_taken_out_and_replaced():
    pool = SimulatedPool(4, drawn, seed=1, fail_workers=[1], spares=1)
    dispatcher, accepted, seen = run(pool, 60)
    failed = [r for r in seen if r.error is not None]
    assert failed and {r.worker_id for r in failed} == {1}
    retried = {r.shard_id for r in failed}
    final = {r.shard_id: r for r in accepted}
    assert all(final[s].worker_id != 1 and final[s].attempt == 2 for s in retried)
    assert sum(1 for w, _, _ in pool.log if w == 1) <= FAILURES_IN_A_ROW + QUEUE_DEPTH - 1
    assert list(dispatcher.lost) == [1] and "3 failed shards in a row" in dispatcher.lost[1]
    assert 1 in pool.retired
    assert [i.worker_id for i in dispatcher.joined] == [4]
    assert any(r.worker_id == 4 for r in accepted)  # the replacement took work


def test_without_room_for_a_replacement_the_run_goes_on_with_the_rest():
    pool = SimulatedPool(4, drawn, seed=2, fail_workers=[0, 3], spares=0)
    dispatcher, accepted, _ = run(pool, 40)
    assert sorted(dispatcher.lost) == [0, 3] and dispatcher.joined == []
    assert {r.worker_id for r in accepted} == {1, 2}


def test_a_lone_worker_gets_its_retry_back_and_a_lone_bad_worker_ends_the_run():
    pool = SimulatedPool(1, drawn, die_after={0: 2})  # dies once, Ray restarts it
    dispatcher, accepted, seen = run(pool, 6)
    assert {r.worker_id for r in accepted} == {0} and any(r.error for r in seen) and not dispatcher.lost
    with pytest.raises(RunFailed, match=r"every worker was lost \(worker 0: 3 failed shards in a row"):
        run(SimulatedPool(1, drawn, fail_workers=[0]), 6)


def test_a_dead_worker_comes_back_after_a_ping_or_is_dropped():
    pool = SimulatedPool(3, drawn, seed=3, die_after={1: 2, 2: 2}, stay_dead={2})
    dispatcher, accepted, seen = run(pool, 30)
    died_at = dict(pool.deaths)
    assert sorted(died_at) == [1, 2]
    assert any(w == 1 for w, _, _ in pool.log[died_at[1]:])  # restarted: it got shards again
    assert not any(w == 2 for w, _, _ in pool.log[died_at[2]:])  # gone for good: none
    assert list(dispatcher.lost) == [2] and "did not restart" in dispatcher.lost[2]
    assert all(r.attempt == 2 for r in accepted if any(f.shard_id == r.shard_id for f in seen if f.error))


def test_no_usable_worker_for_too_long_fails_the_run(monkeypatch):
    monkeypatch.setattr(dispatch, "RESTART_WAIT_S", 0.2)
    monkeypatch.setattr(dispatch, "WAIT_SLICE_S", 0.02)
    pool = SimulatedPool(2, drawn, die_after={0: 1, 1: 1}, silent={0, 1})  # restarts that never answer
    with pytest.raises(RunFailed, match="no worker came back within"):
        Dispatcher(pool, 3, lambda r: None).run(shards(10))


def test_workers_dropped_at_setup_get_no_shards():
    pool = SimulatedPool(3, drawn)
    pool.lost = {1: "died while loading its model or engine, twice"}
    dispatcher, accepted, _ = run(pool, 12)
    assert {w for w, _, _ in pool.log} == {0, 2} and dispatcher.lost == pool.lost


def result(worker: int, kind: str | None) -> ShardResult:
    return ShardResult(shard_id=0, pass_name="infer", attempt=1, worker_id=worker, node_id="", device_name="", pid=0,
                       error=WorkerError(kind, "x") if kind else None)


def test_worker_policy():
    assert judge_worker(2, result(0, None), died=False) == (0, "keep")
    assert judge_worker(1, result(0, "crash"), died=False) == (2, "keep")
    assert judge_worker(2, result(0, "crash"), died=False) == (3, "take_out")
    assert judge_worker(2, result(0, "crash"), died=True) == (2, "keep")  # a death is Ray's to restart
    assert may_run(1, frozenset({0}), {0, 1}) and not may_run(0, frozenset({0}), {0, 1})
    assert may_run(0, frozenset({0, 1}), {0, 1})  # every live worker failed it: anyone may try


def test_setup_crashes_drop_those_workers_unless_every_worker_crashed():
    def info(worker, kind=None):
        i = info_of(worker)
        i.error = WorkerError(kind, f"boom {worker}") if kind else None
        return i

    assert broken_at_setup([info(0), info(1, "crash"), info(2)]) == {1: "boom 1"}
    assert broken_at_setup([info(0, "crash"), info(1, "crash")]) == {}  # no bad device: the job is broken
    assert broken_at_setup([info(0), info(1, "user")]) == {}  # user errors fail the run (check_workers_agree)
