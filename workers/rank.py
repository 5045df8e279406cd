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
  `FollowerWatch` (workers/watch.py) aborts the communicator once a follower died or failed, so a
  dead rank costs `parallel.fault_timeout_s`, not NCCL's `parallel.timeout_s`.
- failure: an attempt that fails on any rank leaves the ranks out of step (one may wait inside a
  collective the others left), so the whole group is restarted: rank 0 has Ray restart every
  follower that is still running (`ray.kill(no_restart=False)`: Ray's actor fault tolerance, in
  the group's placement group, so a restarted rank lands on the same node), leaves the process
  group, and returns the error like any crashed attempt. The driver re-queues the shard as usual
  (the merge counts it once) and the next shard forms the group again with the fresh followers.
  A dead rank 0 is restarted by Ray (the driver's `max_restarts`, pings and retries, as for any
  worker); the followers then re-join its new group (`join` leaves any old one first).
  Followers restart without limit: the group's budget is rank 0's `max_restarts`.

This module stays light (no torch at import), like `workers.actor`: the driver imports it.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers.actor import BenchWorker
from workers.contract import DataHandle, DeviceHealth, RankInfo, ShardResult, ShardTask, WorkerError, WorkerInfo
from workers.errors import UserError, first_line
from workers.specs import WorkerConfig
from workers.watch import FollowerWatch

if TYPE_CHECKING:
    from workers.parallel import Rendezvous

LOOPBACK = "127.0.0.1"  # where the group's rendezvous listens (secrets: nothing off the node can join)
FOLLOWER_GRACE_S = 5.0  # how long a failed attempt's followers get to finish before they are restarted
POLL_S = 0.2  # between checks that a follower Ray restarted is up


@dataclass
class RankReport:
    """What a follower sends back for a shard: its memory peak and energy, or why it failed."""

    rank: int
    pid: int
    peak_mem_bytes: int | None
    mem_total_bytes: int | None
    mem_source: str
    error: WorkerError | None
    energy_joules: float | None = None
    energy_note: str = ""
    restarted: bool = False  # this rank is a new process that never joined the group (its old one died)
    energy_counters: dict[str, list[float]] | None = None  # its GPU's counter before and after (ShardResult's)
    health: DeviceHealth | None = None  # what NVML saw on this rank's GPU during the shard


class GroupFailed(RuntimeError):
    """A follower failed or vanished: the group must be restarted."""


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
        from workers.device import choose_device

        return choose_device(self.rank if self._group_gpus else 0)

    def _build_runtime(self, device, info: WorkerInfo):
        from workers.parallel import join_group

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
        super().close()
        if self._rendezvous is not None:
            from workers.parallel import leave_group

            leave_group()

    # ---------------------------------------------------------------------------- followers
    def join(self, rendezvous: Rendezvous, data: DataHandle | None = None) -> WorkerInfo:
        """Become rank `self.rank` of the group at `rendezvous`, leaving any group this rank was in;
        `data` is the run's prepared dataset, which rank 0 was handed."""
        self.close()
        self._rendezvous = rendezvous
        self._see_group_gpus(rendezvous.gpu_ids)
        return self.setup(data)

    def follow(self, shard: ShardTask, generation: str) -> RankReport:
        """Run `shard` beside rank 0 (its counts are rank 0's to report); only for the group it joined."""
        joined = self._rendezvous is not None and self._rendezvous.generation == generation
        if not joined or self._info is None:
            why = WorkerError("crash", f"rank {self.rank} is not set up in group {generation}"
                                       f"{'' if joined else ' (a new process: the old one died)'}")
            return RankReport(self.rank, os.getpid(), None, None, "", why, restarted=not joined)
        result = self._run(shard, self._info)
        return RankReport(self.rank, os.getpid(), result.peak_mem_bytes, result.mem_total_bytes, result.mem_source,
                          result.error, result.energy_joules, result.energy_note,
                          energy_counters=result.energy_counters, health=result.health)

    # ------------------------------------------------------------------------------- rank 0
    def setup(self, data: DataHandle | None = None) -> WorkerInfo:
        if self.rank == 0 and self._info is None and not self._group_gpus:
            self._see_group_gpus(self._collect_gpu_ids())
        return super().setup(data)

    def _collect_gpu_ids(self) -> tuple[str, ...]:
        """Every rank's GPU id, rank 0 first; () for CPU ranks or when a follower cannot say (the group's
        formation then fails with the reason)."""
        import ray

        mine = self.gpu_ids()
        if len(mine) != 1:
            return ()
        try:
            theirs = ray.get([f.gpu_ids.remote() for f in self.followers], timeout=self.config.parallel.timeout_s)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return ()
        return tuple(mine + [ids[0] for ids in theirs]) if all(len(ids) == 1 for ids in theirs) else ()

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
            result = _failed(result, WorkerError("crash", cause[:300]))
        if result.error is None:
            result = self._with_followers(result, follows)
        if result.error is not None:
            dead = self._restart_group(follows, restarting=watch.killed)
            if dead and "died" not in result.error.message:  # name the cause, not only rank 0's broken collective
                cause = f"rank {dead[0]} died (the group restarts): {result.error.message}"
                result = _failed(result, WorkerError("crash", cause[:300]))
        return result

    def _watch(self, info: WorkerInfo, follows: list[Any]) -> FollowerWatch:
        """The watch over this shard's followers; their pids are checked where they share rank 0's node."""
        from workers.parallel import abort_group

        pids = {r.rank: r.pid for r in info.ranks[1:] if r.node_id == info.node_id}
        return FollowerWatch(self.followers, follows, pids, self.config.parallel.fault_timeout_s, abort_group)

    def _form_group(self, device, info: WorkerInfo):
        """Rank 0's setup: followers join a new rendezvous while rank 0 joins and builds; then their reports."""
        from workers.parallel import join_group

        self._follower_pids = self._await_followers()
        self._rendezvous = self._new_rendezvous()
        joins = [f.join.remote(self._rendezvous, self._data) for f in self.followers]
        try:
            join_group(self._rendezvous, 0, device)
            runtime = super()._build_runtime(device, info)
            try:
                info.ranks = [self._own_rank(info), *self._gather(joins)]
            except BaseException:
                runtime.close()
                raise
        except BaseException:
            self._restart_group(joins)
            raise
        info.peak_flops = group_peak_flops(info.ranks)
        return runtime

    def _new_rendezvous(self) -> Rendezvous:
        """Loopback and a port free there now: every rank is on rank 0's node (STRICT_PACK), so the
        group's TCP store (anyone reaching it could join or disturb the group) listens only there."""
        from workers.parallel import Rendezvous

        address = LOOPBACK
        with socket.socket() as s:
            s.bind((address, 0))
            port = s.getsockname()[1]
        parallel = self.config.parallel
        return Rendezvous(address, port, 1 + len(self.follower_names), parallel.timeout_s, secrets.token_hex(4),
                          self._group_gpus)

    def _own_rank(self, info: WorkerInfo) -> RankInfo:
        return RankInfo(0, info.node_id, info.pid, info.device, info.device_name, info.peak_flops, info.device_uuid,
                        info.peak_flops_measured)

    def _gather(self, joins: list[Any]) -> list[RankInfo]:
        """The followers' setup reports, in rank order; a failed one fails the group in one line."""
        import ray

        deadline = time.monotonic() + self.config.parallel.timeout_s
        ranks = []
        for rank, ref in enumerate(joins, start=1):
            try:
                theirs: WorkerInfo = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except ray.exceptions.RayActorError as exc:
                raise GroupFailed(f"rank {rank} died while setting up: {first_line(exc)}") from exc
            except ray.exceptions.GetTimeoutError as exc:
                raise GroupFailed(f"rank {rank} did not finish setting up within {self.config.parallel.timeout_s:g} s "
                                  "(parallel.timeout_s)") from exc
            if theirs.error is not None:
                message = f"rank {rank}: {theirs.error.message}"
                raise UserError(message) if theirs.error.kind == "user" else GroupFailed(message)
            ranks.append(RankInfo(rank, theirs.node_id, theirs.pid, theirs.device, theirs.device_name,
                                  theirs.peak_flops, theirs.device_uuid, theirs.peak_flops_measured))
        return ranks

    def _with_followers(self, result: ShardResult, follows: list[Any]) -> ShardResult:
        """Rank 0's result with the largest rank's memory peak and every rank's energy (each GPU of the
        group works on every batch), or an error if any follower failed. The followers ran the same
        batches and collectives, so each gets `fault_timeout_s` after rank 0 to report."""
        import ray

        wait_s = self.config.parallel.fault_timeout_s
        deadline = time.monotonic() + wait_s
        peak = result
        reports = []
        for rank, ref in enumerate(follows, start=1):
            try:
                report: RankReport = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except ray.exceptions.RayActorError as exc:
                return _failed(result, WorkerError("crash", f"rank {rank} died: {first_line(exc)}"))
            except ray.exceptions.GetTimeoutError:
                return _failed(result, WorkerError("crash", f"rank {rank} did not finish the shard within "
                                                            f"{wait_s:g} s of rank 0 (parallel.fault_timeout_s)"))
            if report.error is not None:
                return _failed(result, WorkerError(report.error.kind, f"rank {rank}: {report.error.message}",
                                                   report.error.detail))
            if (report.peak_mem_bytes or 0) > (peak.peak_mem_bytes or 0):
                peak = report
            reports.append(report)
        result.peak_mem_bytes, result.mem_total_bytes = peak.peak_mem_bytes, peak.mem_total_bytes
        result.mem_source = peak.mem_source
        unmeasured = next((r for r in reports if r.energy_joules is None), None)
        if result.energy_joules is not None and unmeasured is not None:
            result.energy_joules, result.energy_note = None, f"rank {unmeasured.rank}: {unmeasured.energy_note}"
        elif result.energy_joules is not None:
            result.energy_joules += sum(r.energy_joules for r in reports)
            for report in reports:
                result.energy_counters.update(report.energy_counters or {})
        if result.health is not None:  # every GPU of the group; its ranks' own processes are not foreign
            healths = [result.health, *(r.health for r in reports if r.health is not None)]
            result.health = DeviceHealth.combined(healths, ours={os.getpid(), *self._follower_pids})
        return result

    def _restart_group(self, pending: list[Any], restarting: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Have Ray restart every follower still running `pending` (or idle after it), and leave the group.
        Returns the ranks that had died.

        Followers get FOLLOWER_GRACE_S to finish: one that died is already being restarted by Ray
        (so is one in `restarting`, which the watch had Ray restart); the others (still in a
        collective rank 0 left, or idle in a group that failed) are killed with restart, so the next
        group starts from fresh processes.
        """
        import ray

        deadline = time.monotonic() + FOLLOWER_GRACE_S
        dead = []
        for rank, (follower, ref) in enumerate(zip(self.followers, pending), start=1):
            if rank in restarting:
                continue  # killed once already: a second kill would hit the process that replaces it
            try:
                answer = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except ray.exceptions.RayActorError:
                dead.append(rank)  # Ray restarts it on its own
                continue
            except ray.exceptions.GetTimeoutError:
                answer = None
            if isinstance(answer, RankReport) and answer.restarted:
                dead.append(rank)  # already a new process
                continue
            ray.kill(follower, no_restart=False)
        self._stale_pids = list(self._follower_pids)
        self.close()
        return dead

    def _await_followers(self) -> list[int]:
        """The followers' pids, once every follower this rank 0 had restarted is a new process."""
        import ray

        timeout_s = self.config.parallel.timeout_s
        deadline = time.monotonic() + timeout_s
        pids = []
        for rank, follower in enumerate(self.followers, start=1):
            stale = self._stale_pids[rank - 1] if self._stale_pids else None
            while True:
                try:
                    pid = ray.get(follower.pid.remote(), timeout=max(0.0, deadline - time.monotonic()))
                    if pid != stale:
                        break
                except ray.exceptions.RayActorError:
                    pass  # the old process is going; calls reach the new one once Ray has it up
                except ray.exceptions.GetTimeoutError as exc:
                    raise GroupFailed(f"rank {rank} did not answer within {timeout_s:g} s (parallel.timeout_s)") from exc
                if time.monotonic() > deadline:
                    raise GroupFailed(f"rank {rank} was not restarted within {timeout_s:g} s (parallel.timeout_s)")
                time.sleep(POLL_S)
            pids.append(pid)
        self._stale_pids = []
        return pids

    def __repr__(self) -> str:
        return f"RankWorker(worker={self.worker_id}, rank={self.rank})"


def group_peak_flops(ranks: list[RankInfo]) -> float | None:
    """The group's peak FLOP/s: every rank's device counts, since every rank computes its slice of
    each batch (the FLOPs are counted once, from the whole model). None if any peak is unknown."""
    peaks = [r.peak_flops for r in ranks]
    return sum(peaks) if peaks and all(peaks) else None


def _failed(result: ShardResult, error: WorkerError) -> ShardResult:
    """A failed attempt keeps its identity and the error, never partial counts."""
    return ShardResult(shard_id=result.shard_id, pass_name=result.pass_name, attempt=result.attempt,
                       worker_id=result.worker_id, node_id=result.node_id, device_name=result.device_name,
                       pid=result.pid, repeat=result.repeat, error=error)
