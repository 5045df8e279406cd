"""Engines on worker actors as a Target (orchestrator/targets/base.py): calls that return futures.

A batch handed to a worker comes back as a `concurrent.futures.Future`, whichever way the worker
runs: over its direct lane (`load.hand_over: direct`, the default; lane.py), as a Ray actor call
(`actor_call`: `ObjectRef.future()`, which Ray's own thread completes) or in this process
(`--no-ray`: a one-thread executor per worker). The bridge adds a done-callback that puts the
future on its inbox, so its one thread sleeps on one queue and wakes for arrivals and completions
alike, instead of polling `ray.wait`.

The lanes open before the warm-up, one per worker, and the warm-up goes over them. A worker whose
lane breaks is a dead worker to the bridge; once Ray has restarted it, it is set up and warmed
again, over a new lane, before it takes samples. Where the lanes cannot be opened (a node whose
free ports the driver cannot reach) the run says so in one warning and uses actor calls; where a
restarted worker's new lane cannot be opened, that worker alone gets actor calls. The row's
`hand_over` says which workers used which (`hand_over_record`). On a cluster with Ray's TLS on
(`RAY_USE_TLS`), both ends of each lane use Ray's certificates (workers/lane_transport.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from orchestrator.cluster.policy import REPING_S
from orchestrator.cluster.pool import InProcessPool, Pool
from orchestrator.targets.base import Event, Target, follow_stream
from orchestrator.targets.lane_client import DirectLane, LaneFailed, LaneLost
from workers.contract import DataHandle, SampleBatch, ShardResult
from workers.errors import RunFailed, first_line
from workers.lane_transport import TLSFiles, tls_from_env

log = logging.getLogger(__name__)


class RayWorkers:
    """The pool's actors. The data handle goes with the warm-up and with the first batch after a
    restart (a restarted actor rebuilds from it), not with every batch: an argument holding an
    ObjectRef costs about a millisecond per call in Ray's reference counting, on every query."""

    def __init__(self, pool: Any, hand_over: str = "direct", slots: int = 1) -> None:
        import ray

        self._ray = ray
        kept = [w for w in range(pool.size) if w not in pool.lost]  # bring-up dropped the others
        self.workers = [pool.actors[w] for w in kept]
        # a place per slot of each worker (`engine_target`): each place holds one batch at a time
        self.actors = [a for a in self.workers for _ in range(slots)]
        self.handles = [pool.handles[w] for w in kept for _ in range(slots)]
        self.worker_of = [i for i in range(len(kept)) for _ in range(slots)]
        self.size = len(self.actors)
        self._worker_ids = kept  # worker -> its id in the pool, for the row
        self._mode = hand_over  # actor_call once the lanes could not be opened
        self._no_lanes = ""  # why they could not
        self._actor_calls: dict[int, str] = {}  # places that got actor calls while the others had lanes -> why
        self._tls: TLSFiles | None = None  # Ray's TLS files where Ray's TLS is on (read as the lanes open)
        self.lanes: list[DirectLane | None] = [None] * self.size
        self._needs_data: set[int] = set()  # restarted workers whose rebuild failed: the next call carries data
        self._pass_name = ""
        self.warmed_again = 0  # warm-up batches of restarted workers
        self.lost: dict[int, str] = {}  # workers gone for good during the run (their ping failed)
        self._back: dict[int, Future] = {}  # workers being brought back -> the answer their pings share

    @property
    def restarting(self) -> set[int]:
        return set(self._back)

    @property
    def hand_over(self) -> str:
        """For the row: how batches reached the workers, worker by worker where that differed."""
        return hand_over_record(self._mode, self._no_lanes,
                                {self._worker_ids[self.worker_of[p]]: why for p, why in self._actor_calls.items()})

    def warm_up(self, pass_name: str) -> list[int]:
        """Open the lanes, then warm each worker over its lane (on the thread that will run its
        batches: workers/lane_server.py says why), or as an actor call without lanes."""
        self._pass_name = pass_name
        if self._mode == "direct":
            self._open_lanes()
        try:
            if self._mode == "direct":
                return [f.result() for f in [lane.call("warm_up", pass_name) for lane in self.lanes]]
            return self._ray.get([a.warm_up.remote(pass_name, h) for a, h in zip(self.actors, self.handles)])
        except (self._ray.exceptions.RayActorError, LaneLost) as exc:
            raise RunFailed(f"a worker died while warming up: {first_line(exc)}") from exc
        except (self._ray.exceptions.RayTaskError, LaneFailed) as exc:  # the engine failed on its warm-up batches
            why = str(exc) if isinstance(exc, LaneFailed) else first_line(exc)  # LaneFailed: the worker's line
            raise RunFailed(f"a worker failed while warming up: {why}") from exc

    def _open_lanes(self) -> None:
        keys = [os.urandom(32) for _ in self.actors]  # each sent through Ray, behind its token
        try:
            self._tls = tls_from_env(os.environ)  # Ray's own switch and files, as the workers read them
            addresses = self._ray.get([a.open_lane.remote(k) for a, k in zip(self.actors, keys)], timeout=60)
        except Exception as exc:  # noqa: BLE001 - actor calls still work
            return self._without_lanes(f"the workers could not listen ({first_line(exc)})")
        for worker, ((host, port), key) in enumerate(zip(addresses, keys)):
            try:
                self.lanes[worker] = DirectLane((host, port), key, worker, self._tls)
            except Exception as exc:  # noqa: BLE001 - actor calls still work
                return self._without_lanes(f"no direct connection to worker {self._worker_id(worker)} at "
                                           f"{host}:{port} ({first_line(exc)})")
        return None

    def _without_lanes(self, why: str) -> None:
        """Say once why, and hand every batch over as an actor call."""
        log.warning("load.hand_over: %s; batches go as actor calls", why)
        self.close()
        self._mode, self._no_lanes = "actor_call", why

    def run(self, worker: int, batch: SampleBatch, on_event: Callable[[Event], None] | None = None) -> Future:
        lane = self.lanes[worker]
        if lane is not None:
            return lane.run(batch, on_event)
        data = self.handles[worker] if worker in self._needs_data else None
        self._needs_data.discard(worker)
        if on_event is not None:
            return self._streamed(worker, batch, data, on_event)
        return self.actors[worker].run_samples.remote(batch, data).future()

    def _streamed(self, worker: int, batch: SampleBatch, data: Any, on_event: Callable[[Event], None]) -> Future:
        """`run_samples` as a Ray streaming generator call: its events to `on_event` as they arrive
        (on a thread of this call's), then its result on the future. A death fails the future as an
        actor call's would."""
        stream = self.actors[worker].run_samples_streaming.options(num_returns="streaming").remote(batch, data)
        answer: Future = Future()
        threading.Thread(target=follow_stream, args=(stream, on_event, answer, self._ray.get, f"worker {worker}"),
                         name=f"raybench-stream-w{worker}", daemon=True).start()
        return answer

    def begin_watch(self, pass_name: str) -> None:
        """Actor calls (Ray's thread; the lanes keep their own): the watch runs beside the batches."""
        handles = [self.handles[self.worker_of.index(w)] for w in range(len(self.workers))]
        self._ray.get([a.begin_watch.remote(pass_name, h) for a, h in zip(self.workers, handles)])

    def end_watch(self) -> list[ShardResult]:
        """Each worker's watched span; a worker gone for good gives none."""
        refs = {w: a.end_watch.remote(self._pass_name) for w, a in enumerate(self.workers) if w not in self.lost}
        out = []
        for worker, ref in refs.items():
            try:
                out.append(self._ray.get(ref))
            except self._ray.exceptions.RayActorError as exc:
                log.warning("worker %d: its watched span is lost (%s)", worker, first_line(exc))
        return out

    def ping(self, worker: int) -> Future:
        """Asked after the worker died: answers once Ray has restarted it and it is set up and warm
        again (over a new lane where the run has lanes), or fails once Ray has given up on it. A
        worker already being brought back (from an earlier find_peak probe) answers with that."""
        if worker in self._back:
            return self._back[worker]
        lane, self.lanes[worker] = self.lanes[worker], None
        if lane is not None:
            lane.close()  # broken: nothing is in flight on it
        answer: Future = Future()
        self._back[worker] = answer
        answer.add_done_callback(lambda _: self._back.pop(worker, None))
        threading.Thread(target=self._bring_back, args=(worker, answer), name=f"raybench-ping-w{worker}",
                         daemon=True).start()
        return answer

    def _bring_back(self, worker: int, answer: Future) -> None:
        """Wait for Ray's restart, then rebuild and warm the worker before it gets samples again, so no
        query pays for that. A broken lane tells of a death before Ray knows of it, and a call then
        meets the process mid-restart (ActorUnavailableError): ask again, as the Offline pool does
        (pool.py); only ActorDiedError means Ray gave up. The worker answers by its pid; the bridge
        makes it idle again (the lane is in place before the answer)."""
        errors, actor = self._ray.exceptions, self.actors[worker]
        while True:
            try:
                self._ray.get(actor.setup.remote(self.handles[worker]))  # the restarted process has nothing
                warmed = self._reopen_lane(worker) if self._mode == "direct" else None
                if warmed is None:
                    warmed = self._ray.get(actor.warm_up.remote(self._pass_name, self.handles[worker]))
                self.warmed_again += warmed
                answer.set_result(self._ray.get(actor.pid.remote()))
                return
            except errors.ActorUnavailableError:
                time.sleep(REPING_S)
            except Exception as exc:  # noqa: BLE001 - gone for good, or cannot be rebuilt: the bridge decides
                self._needs_data.add(worker)  # in case it answers later: its first batch carries the data
                answer.set_exception(exc)
                return

    def _reopen_lane(self, worker: int) -> int | None:
        """A new lane to the restarted worker, warmed over it (the warm-up batches); None (and actor
        calls) where that fails."""
        key, lane = os.urandom(32), None
        try:
            host, port = self._ray.get(self.actors[worker].open_lane.remote(key))
            lane = DirectLane((host, port), key, worker, self._tls)
            warmed = lane.call("warm_up", self._pass_name).result()
        except self._ray.exceptions.RayActorError:
            raise  # died again: _bring_back waits for the next restart or gives up
        except Exception as exc:  # noqa: BLE001 - the worker still takes actor calls
            if lane is not None:
                lane.close()  # its warm-up failed: the worker's end stops listening too
            log.warning("load.hand_over: no new lane to restarted worker %d (%s); it gets actor calls",
                        self._worker_id(worker), first_line(exc))
            self._actor_calls[worker] = f"actor_call after restart ({first_line(exc)})"
            return None
        self.lanes[worker] = lane
        return warmed

    def is_death(self, exc: BaseException) -> bool:
        errors = self._ray.exceptions
        return isinstance(exc, (errors.RayActorError, errors.WorkerCrashedError, LaneLost))

    def forget(self, place: int, why: str) -> None:
        """The place's worker is gone for good (its ping failed): the row names it (`lost` is by worker)."""
        self.lost[self.worker_of[place]] = why

    def _worker_id(self, place: int) -> int:
        return self._worker_ids[self.worker_of[place]]

    def take_out(self, place: int, why: str) -> None:
        """A worker failing batch after batch (a bad device): killed for good, named in the row (its
        other places, with a continuous engine's slots, then fail as deaths and their pings fail)."""
        worker = self.worker_of[place]
        self.lost[worker] = why
        self._drop_lanes(worker)
        self._kill(worker, restart=False)

    def abandon(self, place: int, why: str) -> bool:
        """A hung worker: its process killed so Ray restarts it (its batches in flight fail, and the
        bridge's ping brings it back as any dead worker)."""
        log.warning("%s", why)
        worker = self.worker_of[place]
        self._drop_lanes(worker)
        self._kill(worker, restart=True)
        return True

    def _drop_lanes(self, worker: int) -> None:
        for place in [p for p, w in enumerate(self.worker_of) if w == worker]:
            lane, self.lanes[place] = self.lanes[place], None
            if lane is not None:
                lane.abandon()

    def _kill(self, worker: int, restart: bool) -> None:
        try:
            self._ray.kill(self.workers[worker], no_restart=not restart)
        except self._ray.exceptions.RayError as exc:  # the cluster lost it already
            log.debug("could not kill worker actor %d: %s", self._worker_ids[worker], exc)

    def close(self) -> None:
        lanes, self.lanes = self.lanes, [None] * self.size
        for lane in lanes:
            if lane is not None:
                lane.close()


class LocalWorkers:
    """BenchWorkers in this process, each behind a one-thread executor (the GIL is released while
    an engine computes or the synthetic engine sleeps). They cannot die apart from the process."""

    hand_over = "in_process"
    warmed_again = 0  # an in-process worker is never restarted
    restarting: set[int] = set()

    def __init__(self, workers: list[Any], data: list[DataHandle | None], slots: int = 1) -> None:
        self.workers, self.data = workers, data
        self.worker_of = [i for i in range(len(workers)) for _ in range(slots)]  # a place per slot of a worker
        self.size = len(self.worker_of)
        self.lost: dict[int, str] = {}
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix=f"raybench-w{w}-{p}")
                           for p, w in enumerate(self.worker_of)]
        self._pass_name = ""

    def warm_up(self, pass_name: str) -> list[int]:
        """On each place's executor thread, the one its batches run on (per-thread engine state)."""
        self._pass_name = pass_name
        return [self._executors[p].submit(self.workers[w].warm_up, pass_name, self.data[w]).result()
                for p, w in enumerate(self.worker_of)]

    def run(self, place: int, batch: SampleBatch, on_event: Callable[[Event], None] | None = None) -> Future:
        w = self.worker_of[place]
        return self._executors[place].submit(self.workers[w].run_samples, batch, self.data[w], on_event)

    def begin_watch(self, pass_name: str) -> None:
        for w, d in zip(self.workers, self.data):
            w.begin_watch(pass_name, d)

    def end_watch(self) -> list[ShardResult]:
        return [w.end_watch(self._pass_name) for w in self.workers]

    def forget(self, place: int, why: str) -> None:
        self.lost[self.worker_of[place]] = why

    def take_out(self, place: int, why: str) -> None:
        self.lost[self.worker_of[place]] = why  # it gets no more batches; its process is this one

    def abandon(self, place: int, why: str) -> bool:
        return False  # a thread of this process cannot be restarted

    def ping(self, place: int) -> Future:
        return self._executors[place].submit(self.workers[self.worker_of[place]].pid)

    def is_death(self, exc: BaseException) -> bool:
        return False

    def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=True)


def hand_over_record(mode: str, why: str = "", actor_calls: dict[int, str] | None = None) -> str:
    """The row's `hand_over`: `direct` where every worker had its lane for the whole run, `actor_call`
    (with why, where the lanes could not be opened), or `direct; worker 3: actor_call after restart
    (why)` naming each worker that got actor calls while the others kept their lanes."""
    if mode != "direct":
        return f"{mode}: {why}" if why else mode
    return "; ".join(["direct", *(f"worker {w}: {how}" for w, how in sorted((actor_calls or {}).items()))])


def engine_target(pool: Pool, hand_over: str = "direct", slots: int = 1) -> Target:
    """The pool's workers as a Target: in this process, or Ray actors (single-device workers:
    the job's checks refuse tensor-parallel groups under a LoadGen load). `slots` > 1: each worker is
    that many places, each with its own lane (or executor thread) and one batch at a time, so a
    worker whose engine takes requests while others run (continuous batching) is handed new ones
    while it is busy; `worker_of` maps a place to its worker."""
    if isinstance(pool, InProcessPool):
        return LocalWorkers([pool.worker], [pool.data], slots)
    return RayWorkers(pool, hand_over, slots)
