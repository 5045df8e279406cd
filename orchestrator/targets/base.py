"""The one seam a load talks to: a `Target`, places that each take one piece of work at a time.

A load mode (LoadGen's bridge today) decides when work goes where; a target runs it and answers
with a `concurrent.futures.Future`, whichever way the work travels: engines on worker actors over a
direct lane, as Ray actor calls or in this process (orchestrator/targets/engines.py). A call may
stream events before its result (a first token, then the rest): `run(..., on_event=)` gets each as
it arrives, on the target's thread, so the mode can act on it before the batch ends.

Faults are answers too: a future that fails with what `is_death` calls a death means the place's
process is gone; `ping` answers once it is back (set up and warmed again) or fails once it is gone
for good, and `lost` then says which and why.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, Iterable, Protocol

from workers.contract import SampleBatch, ShardResult

Event = Any  # what a streaming call tells before its result (workers/lane_server.py)


class Target(Protocol):
    size: int
    hand_over: str  # how work reaches the places, for the row: direct, actor_call or in_process
    warmed_again: int  # warm-up batches of places restarted during the run (after `warm_up`)
    worker_of: list[int]  # place -> its worker (a continuous engine's worker is several places)
    lost: dict[int, str]  # workers gone for good during the run -> why (every place of each)
    restarting: set[int]  # places being brought back (restarted, set up and warmed again) right now

    def warm_up(self, pass_name: str) -> list[int]:
        """Warm every place's engine for the pass; the warm-up batches each ran."""

    def run(self, place: int, batch: SampleBatch,
            on_event: Callable[[Event], None] | None = None) -> "Future[ShardResult]": ...

    def ping(self, place: int) -> Future:
        """Answers once the place is back (restarted and warm), or fails once it is gone for good;
        a place already being brought back answers with that same future."""

    def is_death(self, exc: BaseException) -> bool:
        """The place's process is gone (killed, OOM-killed, node lost), as opposed to a bug."""

    def forget(self, place: int, why: str) -> None:
        """The place is gone for good (its ping failed): `lost` names its worker, and why."""

    def take_out(self, place: int, why: str) -> None:
        """Stop the place's worker for good (it failed batch after batch): `lost` names it, and why."""

    def abandon(self, place: int, why: str) -> bool:
        """The place hung (alive, not answering): kill its process so it is restarted; False where
        it cannot be (a worker in this process)."""

    def begin_watch(self, pass_name: str) -> None:
        """Start watching the devices (clocks, throttling, other processes) and their energy counters."""

    def end_watch(self) -> list[ShardResult]:
        """What the watch saw since `begin_watch`, one reading per worker (health, energy over the span)."""

    def close(self) -> None: ...


def follow_stream(items: Iterable, on_event: Callable[[Event], None], answer: Future,
                  get: Callable[[Any], Any] = lambda item: item, what: str = "the call") -> None:
    """Read a streaming call's items, each `("event", x)` or a last `("result", x)` (`get` turns an
    item into that pair: `ray.get` for a Ray streaming generator's refs): each event to `on_event`
    on this thread as it arrives, then the result on `answer`. A death or a bug fails `answer`,
    as a plain call's would."""
    try:
        for item in items:
            kind, value = get(item)
            if kind == "event":
                on_event(value)
            else:
                answer.set_result(value)
        if not answer.done():
            answer.set_exception(RuntimeError(f"{what}: its streamed call ended without a result"))
    except Exception as exc:  # noqa: BLE001 - a death or a bug: the caller decides
        if not answer.done():
            answer.set_exception(exc)
