"""The ranks' watches over each other while a shard runs: a dead rank must not hang the group.

`FollowerWatch`, rank 0's over its followers, is below; `LeaderWatch`, each follower's over rank
0, at the end.

NCCL, unlike gloo, does not notice a dead peer: a collective that waits for it waits until
`parallel.timeout_s` (600 s by default). So while rank 0 runs a shard, a thread looks at the
followers every POLL_S, without blocking on them:
- a follower's `follow` call ended in an error (Ray's actor error: the process died; or the
  rank's own error report: it failed before or inside a collective rank 0 is now waiting in);
- a follower's process is gone or stopped on this node (its pid; the ranks share the node);
- a follower finished the shard `fault_timeout_s` ago and rank 0 is still in it.
On the first of these it aborts rank 0's communicator (`abort`: torch's `_abort_process_group`,
ncclCommAbort on NCCL, which makes the waiting collective return an error) and has Ray restart the
failed follower if its process is still there (`ray.kill(no_restart=False)`: gloo's abort does not
wake a waiting collective, the peer's connection closing does). Rank 0's attempt then fails like
any crashed attempt, the group restarts (workers/rank.py) and the shard is retried: within
`fault_timeout_s` of the fault, not `timeout_s`.

Light at import (no torch, no Ray): `workers.rank` imports it on the driver too.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from workers.errors import first_line

POLL_S = 1.0  # at most; a shorter fault_timeout_s polls 4 times within it


def process_state(pid: int) -> str:
    """'gone' (no such process, or a zombie), 'stopped' (SIGSTOP, a debugger) or 'running'."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return "gone"
    return "gone" if state in ("Z", "X", "x") else "stopped" if state in ("T", "t") else "running"


class FollowerWatch:
    """`with FollowerWatch(...) as watch: <run the shard>`; afterwards `watch.reason` is why it aborted
    (None when it did not) and `watch.killed` the ranks it had Ray restart."""

    def __init__(self, followers: list[Any], follows: list[Any], pids: dict[int, int], fault_timeout_s: float,
                 abort: Callable[[], None]) -> None:
        self.followers, self.follows, self.pids = followers, follows, pids
        self.fault_timeout_s = fault_timeout_s
        self.abort = abort
        self.reason: str | None = None
        self.seconds = 0.0  # from the start of the shard to the abort
        self.killed: set[int] = set()
        self._finished: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="raybench-follower-watch", daemon=True)

    def __enter__(self) -> FollowerWatch:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        poll = min(POLL_S, self.fault_timeout_s / 4)
        while not self._stop.wait(poll):
            fault = self.fault()
            if fault is not None:
                self._act(*fault)
                return

    def fault(self) -> tuple[int, str, bool] | None:
        """(rank, why, whether its process is still there) of the first failed follower, or None."""
        import ray

        now = time.monotonic()
        for rank, ref in enumerate(self.follows, start=1):
            if rank in self._finished:
                if now - self._finished[rank] > self.fault_timeout_s:
                    return rank, (f"rank {rank} finished the shard {now - self._finished[rank]:.0f} s ago and rank 0 "
                                  "is still in it"), True
                continue
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                try:
                    report = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    return rank, f"rank {rank} died: {first_line(exc)}", False
                if report.error is not None:
                    return rank, f"rank {rank}: {report.error.message}", not report.restarted
                self._finished[rank] = now
            elif rank in self.pids and (state := process_state(self.pids[rank])) != "running":
                return rank, f"rank {rank} (pid {self.pids[rank]}) is {state}", state == "stopped"
        return None

    def _act(self, rank: int, why: str, alive: bool) -> None:
        import ray

        self.seconds = time.monotonic() - self._t0
        self.reason = why
        self.abort()
        if alive:  # a process Ray does not know to be dead: restart it, which closes its connections
            ray.kill(self.followers[rank - 1], no_restart=False)
            self.killed.add(rank)


class LeaderWatch:
    """A follower's watch over rank 0 while it follows a shard: `with LeaderWatch(pid, ...) as watch:`.

    A dead rank 0 (segfault, Xid, host OOM kill) leaves its followers waiting in an NCCL collective
    until `parallel.timeout_s` (600 to 1,200 s), and the restarted rank 0's first calls to them
    (`pid`, `join`) queue behind those waits. The ranks share the node (STRICT_PACK), so a follower
    looks at rank 0's process every POLL_S (at most a quarter of `fault_timeout_s`): once it is gone
    or stopped, `abort` (torch's `_abort_process_group`: ncclCommAbort on NCCL) makes the waiting
    collective return an error, and the follower reports why (`reason`) and is free for rank 0's
    restart. (gloo notices a dead peer by itself, and its abort does not wake a waiting collective.)
    """

    def __init__(self, pid: int | None, fault_timeout_s: float, abort: Callable[[], None]) -> None:
        self.pid, self.fault_timeout_s, self.abort = pid, fault_timeout_s, abort
        self.reason: str | None = None
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="raybench-leader-watch", daemon=True)

    def __enter__(self) -> LeaderWatch:
        self._t0 = time.monotonic()
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        poll = min(POLL_S, self.fault_timeout_s / 4)
        while not self._stop.wait(poll):
            state = process_state(self.pid)
            if state != "running":
                self.seconds = time.monotonic() - self._t0
                self.reason = f"rank 0 (pid {self.pid}) is {state}"
                self.abort()
                return
