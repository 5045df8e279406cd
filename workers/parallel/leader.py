"""Rank 0's dealings with its followers over Ray: their GPUs, the rendezvous, their setup and shard
reports, and restarting them when the group fails.

Each function waits on the followers with a deadline (`parallel.timeout_s` for setup,
`parallel.fault_timeout_s` for a shard), so a follower that never answers fails the group in one
line instead of hanging it. Light at import (no torch): Ray is imported inside the functions.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from workers.contract import RankInfo, ShardResult, WorkerError, WorkerInfo
from workers.errors import UserError, first_line
from workers.parallel.reports import RankReport, failed, rank_info

if TYPE_CHECKING:
    from workers.parallel.process_group import Rendezvous

LOOPBACK = "127.0.0.1"  # where the group's rendezvous listens (secrets: nothing off the node can join)
FOLLOWER_GRACE_S = 5.0  # how long a failed attempt's followers get to finish before they are restarted
POLL_S = 0.2  # between checks that a follower Ray restarted is up


class GroupFailed(RuntimeError):
    """A follower failed or vanished: the group must be restarted."""


def collect_gpu_ids(mine: list[str], followers: list[Any], timeout_s: float) -> tuple[str, ...]:
    """Every rank's GPU id, rank 0 (`mine`) first; () for CPU ranks or when a follower cannot say (the
    group's formation then fails with the reason)."""
    import ray

    if len(mine) != 1:
        return ()
    try:
        theirs = ray.get([f.gpu_ids.remote() for f in followers], timeout=timeout_s)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return ()
    return tuple(mine + [ids[0] for ids in theirs]) if all(len(ids) == 1 for ids in theirs) else ()


def new_rendezvous(world_size: int, timeout_s: float, gpu_ids: tuple[str, ...]) -> Rendezvous:
    """Loopback and a port free there now: every rank is on rank 0's node (STRICT_PACK), so the
    group's TCP store (anyone reaching it could join or disturb the group) listens only there."""
    from workers.parallel.process_group import Rendezvous

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    return Rendezvous(LOOPBACK, port, world_size, timeout_s, secrets.token_hex(4), gpu_ids, leader_pid=os.getpid())


def gather_joins(joins: list[Any], timeout_s: float) -> list[RankInfo]:
    """The followers' setup reports, in rank order; a failed one fails the group in one line."""
    import ray

    deadline = time.monotonic() + timeout_s
    ranks = []
    for rank, ref in enumerate(joins, start=1):
        try:
            theirs: WorkerInfo = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        except ray.exceptions.RayActorError as exc:
            raise GroupFailed(f"rank {rank} died while setting up: {first_line(exc)}") from exc
        except ray.exceptions.GetTimeoutError as exc:
            raise GroupFailed(f"rank {rank} did not finish setting up within {timeout_s:g} s "
                              "(parallel.timeout_s)") from exc
        if theirs.error is not None:
            message = f"rank {rank}: {theirs.error.message}"
            raise UserError(message) if theirs.error.kind == "user" else GroupFailed(message)
        ranks.append(rank_info(rank, theirs))
    return ranks


def shard_reports(result: ShardResult, follows: list[Any], wait_s: float) -> list[RankReport] | ShardResult:
    """The followers' reports of the shard rank 0 ran (`result`), or rank 0's result failed with the
    first follower's failure. The followers ran the same batches and collectives, so each gets
    `wait_s` (`parallel.fault_timeout_s`) after rank 0 to report."""
    import ray

    deadline = time.monotonic() + wait_s
    reports = []
    for rank, ref in enumerate(follows, start=1):
        try:
            report: RankReport = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        except ray.exceptions.RayActorError as exc:
            return failed(result, WorkerError("crash", f"rank {rank} died: {first_line(exc)}"))
        except ray.exceptions.GetTimeoutError:
            return failed(result, WorkerError("crash", f"rank {rank} did not finish the shard within "
                                                       f"{wait_s:g} s of rank 0 (parallel.fault_timeout_s)"))
        if report.error is not None:
            return failed(result, WorkerError(report.error.kind, f"rank {rank}: {report.error.message}",
                                              report.error.detail))
        reports.append(report)
    return reports


def restart_followers(followers: list[Any], pending: list[Any], restarting: set[int] | frozenset[int]) -> list[int]:
    """Have Ray restart every follower still running `pending` (or idle after it). Returns the
    ranks that had died.

    Followers get FOLLOWER_GRACE_S to finish: one that died is already being restarted by Ray
    (so is one in `restarting`, which the watch had Ray restart); the others (still in a
    collective rank 0 left, or idle in a group that failed) are killed with restart, so the next
    group starts from fresh processes.
    """
    import ray

    deadline = time.monotonic() + FOLLOWER_GRACE_S
    dead = []
    for rank, (follower, ref) in enumerate(zip(followers, pending), start=1):
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
    return dead


def await_followers(followers: list[Any], stale_pids: list[int], timeout_s: float) -> list[int]:
    """The followers' pids, once every follower whose old pid is in `stale_pids` (rank order; empty:
    none was restarted) is a new process."""
    import ray

    deadline = time.monotonic() + timeout_s
    pids = []
    for rank, follower in enumerate(followers, start=1):
        stale = stale_pids[rank - 1] if stale_pids else None
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
    return pids
