"""One request's life, as every way of making requests records it: the contract between whatever
makes requests (a worker's decode loop for in-cluster generation, an endpoint client actor) and the
one place their latencies are computed (orchestrator/metrics/requests.py).

All of a record's times are on one clock, the recorder's (seconds; `time.monotonic()` or
`time.perf_counter()`, never mixed), so differences are exact and no two machines' clocks meet.
`arrival_s` is when the request arrived at the system: its scheduled send (an open-loop client) or
when LoadGen issued it, never when a worker or client got round to it, so queueing counts.
Errors are values: a failed request is a record with `error` set, counted, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ErrorKind = Literal["timeout", "connection", "http_4xx", "http_5xx", "server", "client", "engine"]


@dataclass(frozen=True)
class RequestError:
    kind: ErrorKind
    message: str


@dataclass
class RequestRecord:
    request_id: int
    arrival_s: float  # arrived at the system: scheduled send / LoadGen's issue
    sent_s: float | None = None  # actually sent (a client) or started (a worker)
    first_byte_s: float | None = None  # the response's first byte (a streamed HTTP response); None in-cluster
    token_times_s: list[float] = field(default_factory=list)  # each output token (or streamed chunk) as it arrived
    token_counts: list[int] = field(default_factory=list)  # tokens in each of those chunks (1 per token in-cluster)
    end_s: float | None = None  # the response ended (its last token, or the error)
    input_tokens: int = 0
    output_tokens: int = 0  # tokens of the response (the server's `usage`, else counted)
    error: RequestError | None = None
    source: str = ""  # who made it: "worker 3", "client 1@10.0.0.2"

    @property
    def ok(self) -> bool:
        return self.error is None and self.end_s is not None

    @property
    def first_token_s(self) -> float | None:
        return self.token_times_s[0] if self.token_times_s else None
