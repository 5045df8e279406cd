"""A Target (orchestrator/targets/base.py) of places whose behaviour a test sets, for the LoadGen bridge
without Ray or a model: each place answers a batch after `latency_s`, fails every batch (a bad device),
hangs (alive, never answering) or is still being restarted when a test starts. Responses are each
sample's index as 4 little-endian bytes, so a test can see which answer LoadGen got for which sample."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from workers.contract import SampleBatch, ShardResult, WorkerError


@dataclass
class Place:
    latency_s: float = 0.001
    fails: bool = False
    hangs: bool = False
    back_after_s: float | None = None  # still restarting at the start: back after this long
    batches: list[tuple[int, ...]] = field(default_factory=list)  # what it ran, in order


class FakeTarget:
    hand_over = "fake"
    warmed_again = 0

    def __init__(self, places: list[Place]) -> None:
        self.places = places
        self.size = len(places)
        self.worker_of = list(range(self.size))  # one place per worker
        self.lost: dict[int, str] = {}
        self.abandoned: list[int] = []
        self._back: dict[int, Future] = {}
        for number, place in enumerate(places):
            if place.back_after_s is not None:
                self._back[number] = self._later(place.back_after_s, lambda: 4242)

    @property
    def restarting(self) -> set[int]:
        return {p for p, f in self._back.items() if not f.done()}

    def _later(self, seconds: float, value) -> Future:
        future: Future = Future()

        def answer() -> None:
            time.sleep(seconds)
            try:
                future.set_result(value())
            except Exception as exc:  # noqa: BLE001 - the answer is an error
                future.set_exception(exc)

        threading.Thread(target=answer, daemon=True).start()
        return future

    def warm_up(self, pass_name: str) -> list[int]:
        return [0] * self.size

    def run(self, place: int, batch: SampleBatch, on_event=None) -> Future:
        spec = self.places[place]
        spec.batches.append(batch.indices)
        if spec.hangs:
            return Future()  # never answers

        def result() -> ShardResult:
            out = ShardResult(batch.batch_id, batch.pass_name, batch.attempt, place, "node", "fake", 1,
                              examples=len(batch.indices), items=len(batch.indices))
            if spec.fails:
                out.error = WorkerError("crash", f"injected: place {place} fails every batch")
            else:
                out.responses = [i.to_bytes(4, "little") for i in batch.indices]
            return out

        return self._later(spec.latency_s, result)

    def ping(self, place: int) -> Future:
        return self._back.get(place) or self._later(0.01, lambda: 4242)

    def is_death(self, exc: BaseException) -> bool:
        return False

    def forget(self, place: int, why: str) -> None:
        self.lost[place] = why

    def take_out(self, place: int, why: str) -> None:
        self.lost[place] = why

    def abandon(self, place: int, why: str) -> bool:
        self.abandoned.append(place)
        self.places[place].hangs = False  # "restarted": it answers again
        return True

    def begin_watch(self, pass_name: str) -> None:
        return None

    def end_watch(self) -> list[ShardResult]:
        return []

    def close(self) -> None:
        return None
