"""Clocks. Core time is the model call alone, with the device synchronised on both sides.

On a GPU we time with CUDA events recorded on the current stream around the call (the engine runs
on that stream), after a full synchronise so earlier copies are not billed to the model; on a CPU,
`perf_counter` around the call. Wall time is `perf_counter`; timestamps for merging passes across
workers are `time.time()` (epoch seconds, comparable across nodes to NTP accuracy).
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


class CoreTimer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def time(self, fn: Callable[[], T]) -> tuple[T, float]:
        """Run `fn` and return its result with the seconds it took on the device."""
        if not self.cuda:
            t0 = time.perf_counter()
            out = fn()
            return out, time.perf_counter() - t0
        torch.cuda.synchronize()
        self._start.record()
        out = fn()
        self._end.record()
        self._end.synchronize()
        return out, self._start.elapsed_time(self._end) / 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class Stopwatch:
    """Wall time of a pass with its epoch start and end, for the cluster-wide whole throughput."""

    def __enter__(self) -> "Stopwatch":
        self.start_ts = time.time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.end_ts = self.start_ts + self.seconds
