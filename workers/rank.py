"""RankWorker: one process of a tensor-parallel worker, a group of `tp` ranks that share one model.

To the driver a group is one worker: it talks to rank 0 alone, through BenchWorker's calls
(`setup`, `run_shard`, `pid`). Rank 0 drives the other ranks (its followers) over Ray:

- setup: rank 0 picks a rendezvous on its node's loopback (127.0.0.1: the ranks always share the
  node, STRICT_PACK, so the group's store is never reachable from the network), asks every
  follower to `join` it, joins itself,
  builds its model slice and engines while they build theirs, and reports the group: every rank's
  node, pid and device (`WorkerInfo.ranks`), and the sum of their peak FLOP/s (MFU divides by it).
- run_shard: rank 0 asks every follower to `follow` the same shard and runs it too; every rank
  runs every batch (the collectives inside the model need all of them) after a barrier, so the
  core time rank 0 measures is its synchronised model call, which ends when the collectives end.
  Only rank 0's counts reach the driver; `mem` is the largest rank's peak. While it runs, a
  `FollowerWatch` (workers/parallel/watch.py) aborts the communicator once a follower died or failed, so a
  dead rank costs `parallel.fault_timeout_s`, not NCCL's `parallel.timeout_s`.
- failure: an attempt that fails on any rank leaves the ranks out of step (one may wait inside a
  collective the others left), so the whole group is restarted: rank 0 has Ray restart every
  follower that is still running (`ray.kill(no_restart=False)`: Ray's actor fault tolerance, in
  the group's placement group, so a restarted rank lands on the same node), aborts its
  communicator (never `destroy_process_group`, which may wait on a hung peer), and returns the
  error like any crashed attempt. The driver re-queues the shard as usual (the merge counts it
  once) and the next shard forms the group again with the fresh followers.
  A dead rank 0 is restarted by Ray (the driver's `max_restarts`, pings and retries, as for any
  worker). Its followers watch its pid while they follow a shard (`LeaderWatch`): once it is gone
  they abort their communicator within `parallel.fault_timeout_s` instead of waiting
  `parallel.timeout_s` in a collective, so the restarted rank 0's calls reach them; they then
  re-join its new group (`join` aborts any old one first).
  Followers restart without limit: the group's budget is rank 0's `max_restarts`.

This module is the actor and its state; what rank 0 asks of its followers over Ray is in
`workers.parallel.leader`, how their reports fold into one result in `workers.parallel.reports`.
It stays light (no torch at import), like `workers.actor`: the driver imports it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from workers.actor import BenchWorker
from workers.contract import DataHandle, ShardResult, ShardTask, WorkerError, WorkerInfo
from workers.parallel.leader import (
    GroupFailed,
    await_followers,
    collect_gpu_ids,
    gather_joins,
    new_rendezvous,
    restart_followers,
    shard_reports,
)
from workers.parallel.reports import RankReport, combine, failed, group_peak_flops, rank_info, report_of
from workers.parallel.watch import FollowerWatch, LeaderWatch
from workers.specs import WorkerConfig

if TYPE_CHECKING:
    from workers.parallel.process_group import Rendezvous


class RankWorker(BenchWorker):
    def __init__(self, config: WorkerConfig, worker_id: int = 0, run_id: str = "", rank: int = 0,
                 follower_names: list[str] | None = None) -> None:
        """Rank 0 gets its followers' actor names, not handles: Ray keeps a restartable actor's
        constructor arguments for its restarts, and handles among them may not survive that."""
        super().__init__(config, worker_id, run_id if rank == 0 else "")  # followers report no live metrics
        self.rank = rank
        self.follower_names = list(follower_names or [])
        self._followers: list[Any] | None = None
        self._rendezvous: Rendezvous | None = None
        self._follower_pids: list[int] = []
        self._stale_pids: list[int] = []  # pids of followers this rank 0 asked Ray to restart
        self._group_gpus: tuple[str, ...] = ()  # the group's Ray GPU ids, in rank order, once this rank sees them all

    @property
    def followers(self) -> list[Any]:
        if self._followers is None:
            import ray

            self._followers = [ray.get_actor(name) for name in self.follower_names]
        return self._followers

    # ------------------------------------------------------------------------------ every rank
    def gpu_ids(self) -> list[str]:
        """The GPU ids Ray gave this rank (one, or none for a CPU rank)."""
        import ray

        return [str(i) for i in ray.get_gpu_ids()]

    def _see_group_gpus(self, ids: tuple[str, ...]) -> None:
        """Show this process every GPU of its group, in rank order, and own `cuda:<rank>` among them.

        Ray shows each actor only its own GPU; NCCL ranks that see disjoint GPU sets meet known NCCL
        problems on NVSwitch nodes (slow cuMem handle import, NVLS rank order), which is why torchrun
        and Ray Train (`share_cuda_visible_devices`) show a node's ranks all of their GPUs. It has to
        happen before CUDA starts in the process; a process that started it already (a rank 0 that
        forms its group again) keeps the set it has, which is the same GPUs: a restarted rank comes
        back in its own placement-group bundle.
        """
        if ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
            self._group_gpus = ids

    def _choose_device(self):
        from workers.measure.device import choose_device

        return choose_device(self.rank if self._group_gpus else 0)

    def _assigned_gpus(self) -> list[str] | None:
        """A rank sees its whole group's GPUs, in rank order (`_see_group_gpus`); else only Ray's own."""
        return list(self._group_gpus) or None

    def _build_runtime(self, device, info: WorkerInfo):
        from workers.parallel.process_group import join_group

        if self.rank != 0:
            if self._rendezvous is None:
                raise GroupFailed(f"rank {self.rank} has no group to join (it was restarted): rank 0 forms it again")
            join_group(self._rendezvous, self.rank, device)
            return super()._build_runtime(device, info)
        return self._form_group(device, info)

    def _measure(self, shard: ShardTask, result: ShardResult) -> ShardResult:
        """Every rank meets at a barrier before the shard (outside every timer), so rank 0's first
        timed batch does not include a follower's late start."""
        import torch.distributed as dist

        dist.barrier()
        return super()._measure(shard, result)

    def close(self) -> None:
        """Leave the group gracefully: the run is over and every rank is done with it."""
        super().close()
        if self._rendezvous is not None:
            from workers.parallel.process_group import leave_group

            leave_group()

    def _close_after_failure(self) -> None:
        """Leave a group that failed: abort its communicator (a peer may be dead or stuck in a
        collective; `destroy_process_group` could wait on it, NCCL's abort does not)."""
        BenchWorker.close(self)
        if self._rendezvous is not None:
            from workers.parallel.process_group import abort_group

            abort_group()

    # ---------------------------------------------------------------------------- followers
    def join(self, rendezvous: Rendezvous, data: DataHandle | None = None) -> WorkerInfo:
        """Become rank `self.rank` of the group at `rendezvous`, leaving any group this rank was in
        (a group rank 0 forms again has failed: its communicator is aborted); `data` is the run's
        prepared dataset, which rank 0 was handed."""
        self._close_after_failure()
        self._rendezvous = rendezvous
        self._see_group_gpus(rendezvous.gpu_ids)
        return self.setup(data)

    def follow(self, shard: ShardTask, generation: str) -> RankReport:
        """Run `shard` beside rank 0 (its counts are rank 0's to report); only for the group it joined.
        Rank 0 is watched meanwhile (`LeaderWatch`): once its process is gone, this rank aborts its
        communicator instead of waiting `parallel.timeout_s` in a collective rank 0 will never join."""
        from workers.parallel.process_group import abort_group

        joined = self._rendezvous is not None and self._rendezvous.generation == generation
        if not joined or self._info is None:
            why = WorkerError("crash", f"rank {self.rank} is not set up in group {generation}"
                                       f"{'' if joined else ' (a new process: the old one died)'}")
            return RankReport(self.rank, os.getpid(), None, None, "", why, restarted=not joined)
        with LeaderWatch(self._rendezvous.leader_pid, self.config.parallel.fault_timeout_s, abort_group) as watch:
            result = self._run(shard, self._info)
        if watch.reason is not None:
            cause = f"{watch.reason}; rank {self.rank} aborted its communicator after {watch.seconds:.1f} s"
            result = failed(result, WorkerError("crash", cause[:300]))
        return report_of(self.rank, result)

    # ------------------------------------------------------------------------------- rank 0
    def setup(self, data: DataHandle | None = None) -> WorkerInfo:
        if self.rank == 0 and self._info is None and not self._group_gpus:
            self._see_group_gpus(collect_gpu_ids(self.gpu_ids(), self.followers, self.config.parallel.timeout_s))
        return super().setup(data)

    def run_shard(self, shard: ShardTask, data: DataHandle | None = None) -> ShardResult:
        if self.rank != 0:
            raise RuntimeError(f"rank {self.rank} follows rank 0; only rank 0 runs shards for the driver")
        info = self.setup(data)
        if info.error is not None or not self.follower_names:
            return self._run(shard, info)
        follows = [f.follow.remote(shard, self._rendezvous.generation) for f in self.followers]
        with self._watch(info, follows) as watch:
            result = self._run(shard, info)
        if watch.reason is not None:  # the communicator is aborted: whatever rank 0 got, the attempt failed
            cause = f"{watch.reason}; rank 0 aborted the group's communicator after {watch.seconds:.1f} s"
            result = failed(result, WorkerError("crash", cause[:300]))
        if result.error is None:
            result = self._with_followers(result, follows)
        if result.error is not None:
            dead = self._restart_group(follows, restarting=watch.killed)
            if dead and "died" not in result.error.message:  # name the cause, not only rank 0's broken collective
                cause = f"rank {dead[0]} died (the group restarts): {result.error.message}"
                result = failed(result, WorkerError("crash", cause[:300]))
        return result

    def _watch(self, info: WorkerInfo, follows: list[Any]) -> FollowerWatch:
        """The watch over this shard's followers; their pids are checked where they share rank 0's node."""
        from workers.parallel.process_group import abort_group

        pids = {r.rank: r.pid for r in info.ranks[1:] if r.node_id == info.node_id}
        return FollowerWatch(self.followers, follows, pids, self.config.parallel.fault_timeout_s, abort_group)

    def _form_group(self, device, info: WorkerInfo):
        """Rank 0's setup: followers join a new rendezvous while rank 0 joins and builds; then their reports."""
        from workers.parallel.process_group import join_group

        self._follower_pids = self._await_followers()
        timeout_s = self.config.parallel.timeout_s
        self._rendezvous = new_rendezvous(1 + len(self.follower_names), timeout_s, self._group_gpus)
        joins = [f.join.remote(self._rendezvous, self._data) for f in self.followers]
        try:
            join_group(self._rendezvous, 0, device)
            runtime = super()._build_runtime(device, info)
            try:
                info.ranks = [rank_info(0, info), *gather_joins(joins, timeout_s)]
            except BaseException:
                runtime.close()
                raise
        except BaseException:
            self._restart_group(joins)
            raise
        info.peak_flops = group_peak_flops(info.ranks)
        return runtime

    def _with_followers(self, result: ShardResult, follows: list[Any]) -> ShardResult:
        """Rank 0's result combined with its followers' reports, or an error if any follower failed."""
        reports = shard_reports(result, follows, self.config.parallel.fault_timeout_s)
        if isinstance(reports, ShardResult):
            return reports
        return combine(result, reports, {os.getpid(), *self._follower_pids})

    def _restart_group(self, pending: list[Any], restarting: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Have Ray restart every follower still in `pending`, and leave the group; the ranks that had died."""
        dead = restart_followers(self.followers, pending, restarting)
        self._stale_pids = list(self._follower_pids)
        self._close_after_failure()
        return dead

    def _await_followers(self) -> list[int]:
        """The followers' pids, once every follower this rank 0 had restarted is a new process."""
        pids = await_followers(self.followers, self._stale_pids, self.config.parallel.timeout_s)
        self._stale_pids = []
        return pids

    def __repr__(self) -> str:
        return f"RankWorker(worker={self.worker_id}, rank={self.rank})"
