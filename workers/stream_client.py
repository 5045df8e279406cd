"""The endpoint client for LoadGen's samples: each call sends a sample's request as it is issued and
tells its first chunk and its end the moment they arrive, as events of the call.

A plain class (Ray wraps it as a threaded actor in orchestrator/targets/endpoint.py, so calls run
side by side, one per place; `--no-ray` calls it from the driver's threads). One asyncio event loop
runs on a thread of its own for the client's whole life, with one aiohttp session (its connections
kept open between samples, as a server's users keep theirs). `answer` is a generator on the
caller's thread: it hands the requests to the loop and yields what the loop puts on a queue as it
happens, `("event", ...)` items, then one `("result", counts)`; Ray's streaming generator call
(`num_returns="streaming"`) carries each item to the driver as it is yielded.

The events are the LoadGen bridge's (orchestrator/modes/loadgen/bridge.py): `("first", row, None)`
when the request's first chunk of text arrives (the token's id is unknown over HTTP), and
`("done", row, text, gaps, input_tokens, output_tokens, error)` at its end: the response's text as
UTF-8 (the sample's data for LoadGen), the seconds from the first chunk to each chunk, the token
counts (the server's `usage`, else the chunks) and the RequestError of a request that failed (None
when it did not; a failed request's text is empty and its output tokens 0: it answered nothing).
Errors are values: a failed request ends with its `done`, never raises.
"""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from workers.client import exchange
from workers.requests import RequestRecord

END = "end"


@dataclass(frozen=True)
class StreamSettings:
    urls: tuple[str, ...]  # full request URLs; sample i goes to urls[i % len]
    headers: dict[str, str]
    bodies: tuple[bytes, ...]  # each sample's request JSON, by its index (encoded once by the driver)
    input_tokens: tuple[int, ...]  # each sample's prompt length where the driver knows it, else 0
    timeout_s: float = 60.0
    connect_timeout_s: float = 3.0
    max_connections: int = 0  # 0: no limit


@dataclass(frozen=True)
class Answered:
    """What one call did, for its ShardResult: requests sent, completed and output tokens made."""

    client: int
    requests: int
    completed: int
    output_tokens: int
    pid: int
    node: str


class StreamClient:
    """One client actor of a LoadGen load: `answer(indices)` streams the samples' requests (module
    docstring). It has no coroutine methods of its own (they are `_Sender`'s): Ray makes a class
    with any an async actor, whose plain methods run on its event loop one at a time, and then the
    calls of every place would wait on each other."""

    def __init__(self, client_id: int, settings: StreamSettings) -> None:
        self.client_id = client_id
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="raybench-stream-client", daemon=True).start()
        self.sender = asyncio.run_coroutine_threadsafe(_Sender.open(client_id, settings), self.loop).result()

    def ping(self) -> int:
        return self.client_id

    def answer(self, indices: tuple[int, ...]) -> Iterator[tuple]:
        """Every sample of `indices` as a request at once; their events as they happen, then the counts."""
        events: queue.SimpleQueue = queue.SimpleQueue()
        done = asyncio.run_coroutine_threadsafe(self.sender.all(indices, events.put), self.loop)
        while (event := events.get()) != END:
            yield ("event", event)
        yield ("result", done.result())

    def close(self) -> None:
        """Requests still in flight (a run that failed, or Ctrl-C) are cancelled, so every call
        waiting on them ends (with an error) instead of waiting for ever, then the loop stops."""
        asyncio.run_coroutine_threadsafe(self.sender.close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)


class _Sender:
    """The requests on the client's event loop, over one aiohttp session."""

    def __init__(self, client_id: int, settings: StreamSettings, session) -> None:
        self.client_id, self.settings, self.session = client_id, settings, session
        self.t0 = time.perf_counter()

    @classmethod
    async def open(cls, client_id: int, settings: StreamSettings) -> "_Sender":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=settings.max_connections, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=settings.timeout_s, sock_connect=settings.connect_timeout_s)
        return cls(client_id, settings, aiohttp.ClientSession(connector=connector, timeout=timeout,
                                                              headers=settings.headers, auto_decompress=False))

    async def close(self) -> None:
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await self.session.close()

    def _now(self) -> float:
        return time.perf_counter() - self.t0

    async def all(self, indices: tuple[int, ...], put) -> Answered:
        try:
            records = await asyncio.gather(*(self._one(row, index, put) for row, index in enumerate(indices)))
        finally:
            put(END)
        return Answered(self.client_id, len(records), sum(r.ok for r in records),
                        sum(r.output_tokens for r in records), os.getpid(), socket.gethostname())

    async def _one(self, row: int, index: int, put) -> RequestRecord:
        s = self.settings
        rec = RequestRecord(index, self._now(), sent_s=self._now(), input_tokens=s.input_tokens[index],
                            source=f"client {self.client_id}")
        stream = await exchange(self.session, s.urls[index % len(s.urls)], s.bodies[index], rec, self._now,
                                s.timeout_s, on_first=lambda: put(("first", row, None)))
        stream.finish(False, {})
        times = rec.token_times_s
        if rec.error is None:
            put(("done", row, "".join(stream.text).encode(), [t - times[0] for t in times], rec.input_tokens,
                 rec.output_tokens, None))
        else:  # no answer: LoadGen gets none (and logs its own error for it), whatever had arrived
            put(("done", row, b"", [], rec.input_tokens, 0, rec.error))
        return rec
