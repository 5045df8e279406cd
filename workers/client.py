"""The endpoint client actor: sends its share of a schedule of requests to an OpenAI-compatible server,
streams each answer (server-sent events) and records one `RequestRecord` per request.

A plain class (Ray wraps it in orchestrator/targets/endpoint.py; tests call it in process). One
`run` is one asyncio event loop with one aiohttp session: hundreds of streams in flight cost about
45 us of CPU per streamed chunk (aiohttp; httpx costs about 2.5x that, docs/endpoint.md), so one
client keeps up with thousands of chunks a second. No torch here: a client process stays small.

Clocks. Every time a record holds is seconds since the run's shared start, on this process's
`time.perf_counter()`: the start is given as epoch seconds and mapped onto perf_counter once, so
the latencies (differences on one clock) are exact whatever the node, and records of clients on
different nodes differ only by their clocks' offset (NTP: about a millisecond) where they meet, in
the run's span. `arrival_s` is the scheduled send (open loop) or the moment a closed loop's slot
came free: never when this client got round to it, so a client that falls behind shows it as
schedule lag (`sent_s - arrival_s`) and in the latency from arrival, never hides it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from workers.requests import RequestError, RequestRecord

# asyncio wakes a sleeper through epoll, whose timeout is whole milliseconds rounded up: a plain
# sleep to a send time is up to 1 ms late. Sleep to this much before it, then yield until it comes.
SPIN_S = 0.0012


@dataclass(frozen=True)
class ClientRequest:
    request_id: int
    at_s: float  # open loop: scheduled send, s after the start; closed loop: the order of sending
    body: bytes  # the request's JSON, encoded once by the driver
    input_tokens: int = 0  # the prompt's length where the driver knows it (0: from the server's usage)


@dataclass(frozen=True)
class ClientPlan:
    urls: tuple[str, ...]  # full request URLs (…/v1/completions); request i goes to urls[i % len]
    headers: dict[str, str]
    requests: tuple[ClientRequest, ...]
    start_epoch_s: float  # the shared start, time.time() seconds
    concurrency: int = 0  # closed loop: this many in flight; 0: open loop (send at at_s)
    timeout_s: float = 60.0
    connect_timeout_s: float = 3.0
    max_connections: int = 0  # 0: no limit
    keep_text: bool = False  # return the text of responses that carried no usage (the driver counts it)


@dataclass
class ClientRun:
    client: int
    node: str  # hostname of the client's process
    pid: int
    records: list[RequestRecord]
    cpu_s: float  # this process's CPU time over the run (user + system)
    wall_s: float  # the run's wall time in this client
    texts: dict[int, str] = field(default_factory=dict)  # request id -> text, where no usage came


class EndpointClient:
    """One client actor: `run(plan)` sends its requests and returns their records."""

    def __init__(self, client_id: int) -> None:
        import aiohttp  # noqa: F401 - imported here, not in the first run's lead time

        self.client_id = client_id

    def where(self) -> tuple[str, int]:
        return socket.gethostname(), os.getpid()

    def ping(self) -> int:
        return self.client_id

    def run(self, plan: ClientPlan) -> ClientRun:
        """The garbage collector is off while the schedule runs: a full collection stops the event
        loop for milliseconds, which would be schedule lag and latency of the client's own making."""
        cpu, wall = time.process_time(), time.perf_counter()
        collecting = gc.isenabled()
        gc.disable()
        try:
            records, texts = asyncio.run(_Run(plan, f"client {self.client_id}@{socket.gethostname()}").go())
        finally:
            if collecting:
                gc.enable()
        return ClientRun(self.client_id, socket.gethostname(), os.getpid(), records,
                         time.process_time() - cpu, time.perf_counter() - wall, texts)


class _Run:
    """One plan on one event loop."""

    def __init__(self, plan: ClientPlan, source: str) -> None:
        self.plan = plan
        self.source = source
        self.texts: dict[int, str] = {}
        # the shared start on this process's clock
        self.t0 = time.perf_counter() + (plan.start_epoch_s - time.time())

    def now(self) -> float:
        return time.perf_counter() - self.t0

    async def go(self) -> tuple[list[RequestRecord], dict[int, str]]:
        import aiohttp

        plan = self.plan
        connector = aiohttp.TCPConnector(limit=plan.max_connections, limit_per_host=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=plan.timeout_s, sock_connect=plan.connect_timeout_s)
        sent = aiohttp.TraceConfig()
        sent.on_request_headers_sent.append(self._headers_sent)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=plan.headers,
                                         auto_decompress=False, trace_configs=[sent]) as session:
            if plan.concurrency:
                records = await self._closed(session)
            else:
                records = await self._open(session)
        return sorted(records, key=lambda r: r.request_id), self.texts

    async def _open(self, session) -> list[RequestRecord]:
        tasks = []
        for request in sorted(self.plan.requests, key=lambda r: r.at_s):
            await self._until(request.at_s)
            tasks.append(asyncio.create_task(self._one(session, request, request.at_s)))
        return list(await asyncio.gather(*tasks))

    async def _until(self, at_s: float) -> None:
        """Sleep until `at_s` (on the start's clock) without epoll's millisecond rounding."""
        ahead = at_s - self.now()
        if ahead > SPIN_S:
            await asyncio.sleep(ahead - SPIN_S)
        while self.now() < at_s:
            await asyncio.sleep(0)  # let the streams in flight run meanwhile

    async def _closed(self, session) -> list[RequestRecord]:
        """`concurrency` loops, each sending its next request when its last one ended."""
        queue = deque(sorted(self.plan.requests, key=lambda r: r.at_s))
        await self._until(0.0)
        records: list[RequestRecord] = []

        async def loop() -> None:
            while queue:
                request = queue.popleft()
                records.append(await self._one(session, request, self.now()))

        await asyncio.gather(*(loop() for _ in range(self.plan.concurrency)))
        return records

    async def _headers_sent(self, session, context, params) -> None:
        """The request is on the wire (a connection was free, or opened, and its headers written):
        this, not the call, is the actual send. A request held back by the connection limit, or
        by a busy event loop, is late by exactly that wait."""
        context.trace_request_ctx["record"].sent_s = self.now()

    async def _one(self, session, request: ClientRequest, arrival_s: float) -> RequestRecord:
        urls = self.plan.urls
        rec = RequestRecord(request.request_id, arrival_s, input_tokens=request.input_tokens, source=self.source)
        stream = await exchange(session, urls[request.request_id % len(urls)], request.body, rec, self.now,
                                self.plan.timeout_s, trace={"record": rec})
        stream.finish(self.plan.keep_text, self.texts)
        return rec


async def exchange(session, url: str, body: bytes, rec: RequestRecord, now: Callable[[], float], timeout_s: float,
                   on_first: Callable[[], None] | None = None, trace: dict | None = None) -> "EventStream":
    """One streamed request on `session`, into `rec` (times on `now`'s clock): its first byte, each
    chunk, its end, and what went wrong as `rec.error` (never raised). `on_first`: called the moment
    the first chunk of text arrives. `trace`: aiohttp's trace context (the send's stamp)."""
    import aiohttp

    stream = EventStream(rec, on_first)
    try:
        async with session.post(url, data=body, trace_request_ctx=trace) as response:
            rec.first_byte_s = now()
            if response.status != 200:
                text = (await response.text(errors="replace")).strip().replace("\n", " ")
                kind = "http_4xx" if 400 <= response.status < 500 else "http_5xx"
                rec.error = RequestError(kind, f"HTTP {response.status}: {text[:300]}")
            else:
                async for line in response.content:
                    if stream.line(line, now()):
                        break
    except asyncio.TimeoutError:
        rec.error = RequestError("timeout", f"no complete answer within endpoint.timeout_s {timeout_s:g}")
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
        rec.error = RequestError("connection", f"{type(exc).__name__}: {exc}"[:300])
    except ValueError as exc:  # a data line that is not JSON
        rec.error = RequestError("server", f"malformed event: {exc}"[:300])
    rec.end_s = now()
    return stream


class EventStream:
    """One response's server-sent events -> its record: each event that carries text is a chunk
    (its arrival time; one chunk may hold several tokens when the server falls behind), `usage`
    gives the token counts, `[DONE]` (vLLM, SGLang) or the end of the stream (transformers serve)
    ends it, and an `error` event is an error. `on_first` is called as the first chunk arrives."""

    def __init__(self, rec: RequestRecord, on_first: Callable[[], None] | None = None) -> None:
        self.rec = rec
        self.on_first = on_first
        self.usage: dict[str, Any] | None = None
        self.text: list[str] = []

    def line(self, raw: bytes, t: float) -> bool:
        """Handle one line; True when the stream is over."""
        if not raw.startswith(b"data:"):
            return False  # blank separators, comments, `event:` lines
        data = raw[5:].strip()
        if data == b"[DONE]":
            return True
        event = json.loads(data)
        if not isinstance(event, dict):
            raise ValueError(f"an event that is not an object: {data[:80]!r}")
        if event.get("error"):
            self.rec.error = RequestError("server", f"error event: {json.dumps(event['error'])[:300]}")
            return True
        if event.get("usage"):
            self.usage = event["usage"]
        for choice in event.get("choices") or ():
            text = choice.get("text")
            if text is None:
                text = (choice.get("delta") or {}).get("content")
            if text:
                self.rec.token_times_s.append(t)
                self.rec.token_counts.append(1)  # a chunk; how many tokens it holds the stream does not say
                self.text.append(text)
                if len(self.text) == 1 and self.on_first is not None:
                    self.on_first()
        return False

    def finish(self, keep_text: bool, texts: dict[int, str]) -> None:
        """Token counts from `usage` where the server sent it; else the chunks, and the text kept
        for the driver's tokenizer."""
        rec = self.rec
        usage = self.usage or {}
        if usage.get("completion_tokens") is not None:
            rec.output_tokens = int(usage["completion_tokens"])
        else:
            rec.output_tokens = len(rec.token_times_s)
            if keep_text and rec.error is None:
                texts[rec.request_id] = "".join(self.text)
        if usage.get("prompt_tokens") is not None:
            rec.input_tokens = int(usage["prompt_tokens"])
