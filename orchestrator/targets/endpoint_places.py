"""A running server as LoadGen's Target (orchestrator/targets/base.py): each sample one streamed request.

Places: `slots` per client actor (workers/stream_client.py), `clients x slots` in all, place p on
client p mod clients (so the first places are spread over the clients); a place holds one request
in flight at a time, as an engine's place holds one batch. `run` asks the place's client to send
the batch's samples (one request each, the prompt of that index) as a Ray streaming generator call
(an in-process client's generator with `--no-ray`), followed on a thread of the place's own: the
call's events, the first chunk of each request and its end, go to `on_event` on that thread as they
arrive (the bridge tells LoadGen there, the first token and the completion from the same thread),
and the call's counts resolve the future as a ShardResult (no device: no timings of a worker's own).

Faults: a request that fails (HTTP error, timeout, refused connection) is no fault of the place: it
ends with its `done` event carrying the error, and the bridge counts it. A client actor that died
(client actors are never restarted) fails its calls as deaths; its pings then fail, and the bridge
forgets its places (`lost` names the client). A call that outlives its requests' own timeout
(`endpoint.timeout_s`) is a client that hung: it cannot be restarted (`abandon` is False), so the
run fails saying so. Pings answer at once: a client actor that answers is alive.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from orchestrator.targets.base import Event, follow_stream
from orchestrator.targets.endpoint import ClientPool
from workers.contract import SampleBatch, ShardResult
from workers.stream_client import Answered


def _ignore(event: Event) -> None:
    """A call without a listener (the calibration's): its events are dropped."""


class EndpointPlaces:
    """The client actors' slots as places (module docstring)."""

    warmed_again = 0  # client actors are never restarted
    restarting: set[int] = set()

    def __init__(self, pool: ClientPool, slots: int) -> None:
        self.pool, self.slots = pool, slots
        self.size = pool.size * slots
        self.worker_of = [p % pool.size for p in range(self.size)]
        self.lost: dict[int, str] = {}
        how = "in_process" if pool.in_process else "streaming_call"
        self.hand_over = f"{how} ({pool.size} client(s) x {slots} slot(s))"
        self._threads = [ThreadPoolExecutor(1, thread_name_prefix=f"raybench-place-{p}") for p in range(self.size)]
        self._ray: Any = None
        if not pool.in_process:
            import ray

            self._ray = ray

    def warm_up(self, pass_name: str) -> list[int]:
        """Nothing to warm but the server's path and the connections: the calibration's requests do that."""
        return [0] * self.size

    def run(self, place: int, batch: SampleBatch, on_event: Callable[[Event], None] | None = None) -> Future:
        answer: Future = Future()
        self._threads[place].submit(self._call, place, batch, on_event or _ignore, answer)
        return answer

    def _call(self, place: int, batch: SampleBatch, on_event: Callable[[Event], None], answer: Future) -> None:
        """On the place's thread: the client's streamed call, followed to its end."""
        client = self.pool.clients[self.worker_of[place]]
        what = f"client {self.worker_of[place]}"
        counted: Future = Future()
        try:
            if self._ray is None:
                follow_stream(client.answer(batch.indices), on_event, counted, what=what)
            else:
                stream = client.answer.options(num_returns="streaming").remote(batch.indices)
                follow_stream(stream, on_event, counted, self._ray.get, what)
            answered: Answered = counted.result()
        except Exception as exc:  # noqa: BLE001 - a death or a bug: the bridge decides (is_death)
            answer.set_exception(exc)
            return
        answer.set_result(ShardResult(
            shard_id=batch.batch_id, pass_name=batch.pass_name, attempt=batch.attempt, worker_id=answered.client,
            node_id=answered.node, device_name="", pid=answered.pid, examples=answered.requests,
            items=answered.output_tokens, scored=answered.completed))

    def ping(self, place: int) -> Future:
        client = self.pool.clients[self.worker_of[place]]
        if self._ray is None:
            answer: Future = Future()
            answer.set_result(client.ping())
            return answer
        return client.ping.remote().future()

    def is_death(self, exc: BaseException) -> bool:
        if self._ray is None:
            return False
        errors = self._ray.exceptions
        return isinstance(exc, (errors.RayActorError, errors.WorkerCrashedError))

    def forget(self, place: int, why: str) -> None:
        self.lost[self.worker_of[place]] = why

    def take_out(self, place: int, why: str) -> None:
        """The place's client is stopped for good (its other places' calls then fail as deaths)."""
        client = self.worker_of[place]
        self.lost[client] = why
        if self._ray is not None:
            try:
                self._ray.kill(self.pool.clients[client], no_restart=True)
            except self._ray.exceptions.RayError:  # gone already
                pass

    def abandon(self, place: int, why: str) -> bool:
        return False  # a client actor is never restarted

    def begin_watch(self, pass_name: str) -> None:
        """No device of the run's own to watch: the server's are its own."""

    def end_watch(self) -> list[ShardResult]:
        return []

    def close(self) -> None:
        for thread in self._threads:
            thread.shutdown(wait=False, cancel_futures=True)
