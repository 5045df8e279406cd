"""When each request is sent, decided before the run starts, and which client sends it. Pure and seeded:
the same load and seed give the same schedule on any machine, whatever the number of clients.

- constant: evenly spaced at 1/rate;
- poisson: exponential gaps of mean 1/rate (a gamma of shape 1);
- gamma: gaps drawn from Gamma(shape = burstiness, scale = 1 / (rate x burstiness)): mean 1/rate,
  CV 1/sqrt(burstiness) (below 1 burstier than Poisson, above 1 more even), vLLM's
  benchmark_serving convention;
- trace: the send times (and lengths) of a JSONL file, replayed as they are;
- closed loop: no times; `concurrency` requests in flight, a new one when one ends.
The first request is sent at 0 (the shared start); a `duration_s` keeps the requests scheduled
before it, a `requests` count the first that many, both: whichever ends first.

The schedule is split among the clients round-robin in send order (request i to client i mod N),
so each client sends every N-th request: its own rate is rate/N with the same shape, and no client
gets a burst the others do not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from orchestrator.spec.load import EndpointLoad
from workers.errors import UserError


@dataclass(frozen=True)
class Scheduled:
    request_id: int
    at_s: float  # send time, s after the start (closed loop: the order)
    input_tokens: int | None = None  # a trace's prompt length (None: the prompts' own)
    output_tokens: int | None = None  # a trace's output length (None: prompts.max_tokens)


def gaps_s(load: EndpointLoad, count: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """`count` gaps between sends at `rate` (requests/s), by the load's arrival process."""
    if load.arrival == "constant":
        return np.full(count, 1.0 / rate)
    shape = 1.0 if load.arrival == "poisson" else load.burstiness
    return rng.gamma(shape, 1.0 / (rate * shape), count)


def rate_schedule(load: EndpointLoad, rate: float, requests: int | None, duration_s: float | None,
                  seed: int) -> list[Scheduled]:
    """An open loop at `rate`: the first send at 0, then the load's gaps, cut by count and duration."""
    rng = np.random.default_rng(seed)
    count = requests if requests is not None else max(1, int(np.ceil(rate * duration_s * 1.5)) + 16)
    while True:
        if load.arrival == "constant":  # i / rate: no rounding summed up over thousands of gaps
            times = np.arange(count) / rate
        else:
            times = np.concatenate([[0.0], np.cumsum(gaps_s(load, count - 1, rate, rng))])
        if duration_s is None or times[-1] >= duration_s or requests is not None:
            break
        count *= 2  # a duration whose draw ran past the count (a slow gamma stretch): draw more
        rng = np.random.default_rng(seed)
    if duration_s is not None:
        times = times[times < duration_s]
    return [Scheduled(i, float(t)) for i, t in enumerate(times)]


def read_trace(lines: Iterable[str], source: str) -> list[Scheduled]:
    """A JSONL trace: one request a line, {"t": s, "input_tokens": n, "output_tokens": m}; times are
    made relative to the first and must not go back."""
    out: list[Scheduled] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            t = float(item["t"])
            lengths = [item.get(k) for k in ("input_tokens", "output_tokens")]
            if any(v is not None and (not isinstance(v, int) or v <= 0) for v in lengths):
                raise ValueError("input_tokens and output_tokens are whole numbers above 0")
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"load.trace: {source} line {number}: expected {{\"t\": seconds, \"input_tokens\": n, "
                            f"\"output_tokens\": m}} ({exc})") from None
        if out and t < out[-1].at_s:
            raise UserError(f"load.trace: {source} line {number}: t {t:g} is before the line above ({out[-1].at_s:g})")
        out.append(Scheduled(len(out), t, *lengths))
    if not out:
        raise UserError(f"load.trace: {source} has no requests")
    first = out[0].at_s
    return [Scheduled(s.request_id, s.at_s - first, s.input_tokens, s.output_tokens) for s in out]


def cut(schedule: list[Scheduled], requests: int | None, duration_s: float | None) -> list[Scheduled]:
    kept = [s for s in schedule if duration_s is None or s.at_s < duration_s]
    return kept[:requests] if requests is not None else kept


def closed_schedule(requests: int) -> list[Scheduled]:
    """A closed loop's requests, in the order they are sent (no times: a slot coming free sends one)."""
    return [Scheduled(i, float(i)) for i in range(requests)]


def split(schedule: Sequence[Scheduled], clients: int) -> list[list[Scheduled]]:
    """Round-robin in send order: client c sends requests c, c + N, c + 2N, ... (module docstring)."""
    ordered = sorted(schedule, key=lambda s: (s.at_s, s.request_id))
    return [ordered[c::clients] for c in range(clients)]


def split_concurrency(concurrency: int, clients: int) -> list[int]:
    """A closed loop's in-flight requests per client, as even as they divide."""
    return [concurrency // clients + (c < concurrency % clients) for c in range(clients)]


def scheduled_rate(schedule: Sequence[Scheduled]) -> float | None:
    """The rate the schedule asks for: requests after the first over the span of their send times."""
    if len(schedule) < 2:
        return None
    span = max(s.at_s for s in schedule) - min(s.at_s for s in schedule)
    return (len(schedule) - 1) / span if span > 0 else None
