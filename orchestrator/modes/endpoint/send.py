"""One schedule sent: split among the clients, their plans built, the clients run at a shared start,
their records gathered (and token counts filled in where the server sent no usage).

The shared start is a moment a little ahead (`LEAD_S`), as epoch seconds: each client maps it onto
its own clock (workers/client.py), so the schedule's first send is at that moment on every node and
shipping the plans (and starting each client's event loop) happens before it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from orchestrator.modes.endpoint.arrivals import Scheduled, split, split_concurrency
from orchestrator.targets.endpoint import ClientPool
from orchestrator.spec.job import EndpointJob
from workers.client import ClientPlan, ClientRequest, ClientRun
from workers.requests import RequestRecord

LEAD_S = {True: 0.3, False: 1.5}  # in process / Ray actors: time to ship the plans before the first send


@dataclass(frozen=True)
class Sent:
    """One schedule, sent: every request's record (every client), each client's run, and the rate asked."""

    rate: float | None  # the rate asked for (None: a closed loop)
    records: list[RequestRecord]
    runs: list[ClientRun]
    start_epoch_s: float

    @property
    def client_cpu(self) -> list[float]:
        return [r.cpu_s / r.wall_s for r in self.runs if r.wall_s > 0]

    @property
    def end_s(self) -> float:
        return max((r.end_s for r in self.records if r.end_s is not None), default=0.0)


def send(pool: ClientPool, spec: EndpointJob, schedule: Sequence[Scheduled], bodies: dict[int, tuple[bytes, int]],
         rate: float | None, concurrency: int = 0, tokenizer=None) -> Sent:
    """Send `schedule` from every client at once (`concurrency` > 0: a closed loop with that many in
    flight over all clients, split among them)."""
    endpoint = spec.endpoint
    shares = split(schedule, pool.size)
    per_client = split_concurrency(concurrency, pool.size) if concurrency else [0] * pool.size
    start = time.time() + LEAD_S[pool.in_process]
    plans = [ClientPlan(urls=tuple(endpoint.request_urls), headers=endpoint.headers(),
                        requests=tuple(ClientRequest(s.request_id, s.at_s, *bodies[s.request_id]) for s in share),
                        start_epoch_s=start, concurrency=per_client[c], timeout_s=endpoint.timeout_s,
                        connect_timeout_s=endpoint.connect_timeout_s, max_connections=endpoint.max_connections,
                        keep_text=tokenizer is not None)
             for c, share in enumerate(shares)]
    runs = pool.run(plans)
    records = sorted((r for run in runs for r in run.records), key=lambda r: r.request_id)
    _count_tokens(runs, records, tokenizer)
    return Sent(rate if not concurrency else None, records, runs, start)


def _count_tokens(runs: list[ClientRun], records: list[RequestRecord], tokenizer) -> None:
    """Output tokens of responses that came without `usage`, counted by the job's tokenizer."""
    texts = {rid: text for run in runs for rid, text in run.texts.items()}
    if tokenizer is None or not texts:
        return
    for r in records:
        if r.request_id in texts:
            r.output_tokens = len(tokenizer.encode(texts[r.request_id], add_special_tokens=False))


def warm_up(pool: ClientPool, spec: EndpointJob, bodies: dict[int, tuple[bytes, int]], count: int) -> Sent | None:
    """`count` requests, one at a time per client, before the measured schedule."""
    if count <= 0:
        return None
    schedule = [Scheduled(i, float(i)) for i in range(count)]
    return send(pool, spec, schedule, bodies, None, concurrency=min(count, pool.size))
