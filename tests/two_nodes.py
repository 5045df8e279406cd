"""Two nodes that share a cache folder on NFS, simulated by two threads of this process.

An `flock` holds on one node only, so two nodes can miss the same entry and build it at once. The
tests make that happen on purpose: the lock is taken away, both threads meet at `gate()` (both are
building), and node b goes on only after node a has published, so b always publishes second.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable


class TwoNodes:
    def __init__(self, monkeypatch, timeout_s: float = 60.0) -> None:
        from workers.storage import folder_cache

        monkeypatch.setattr(folder_cache, "exclusive_lock", lambda path: contextlib.nullcontext())
        self.timeout_s = timeout_s
        self._both_building = threading.Barrier(2, timeout=timeout_s)
        self._published = threading.Event()
        self._node = threading.local()

    @property
    def name(self) -> str:
        """The node the calling thread plays: "a" or "b"."""
        return self._node.name

    def gate(self) -> None:
        """Call where a node has built its copy and is about to publish it."""
        self._both_building.wait()
        if self.name == "b":
            assert self._published.wait(timeout=self.timeout_s)

    def run(self, work: Callable[[], Any]) -> tuple[dict[str, Any], list[BaseException]]:
        """`work` on node a and node b at once: what each returned, and every error raised."""
        out: dict[str, Any] = {}
        errors: list[BaseException] = []

        def node(name: str) -> None:
            self._node.name = name
            try:
                out[name] = work()
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                errors.append(exc)
            finally:
                if name == "a":
                    self._published.set()

        threads = [threading.Thread(target=node, args=(name,)) for name in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out, errors
