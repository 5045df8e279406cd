"""lane_wire: what a direct lane's wire costs per batch, new against old, over loopback.

One LoadGen batch's round trip between this process (the driver) and a worker's end in a spawned
process (as a Ray actor is), no engine: the worker builds the ShardResult a synthetic batch gives
and sends it back. Three wires, in one run:
  old:  the lane before issue 27: multiprocessing.connection (its HMAC challenge at connect time),
        then pickle both ways; its two ends reproduced here as they were (the call sent on the
        caller's thread, a receiving thread completing futures in order, TCP_NODELAY);
  new:  workers/lane_server.py and orchestrator/targets/lane_client.py: msgpack of the lane's
        types (workers/lane_codec.py), an HMAC-SHA256 per message (workers/lane_wire.py);
  tls:  the new wire inside TLS with a throwaway CA, as on a cluster with Ray's TLS on.
Two batch shapes: `performance` (bs samples, no records: LoadGen's performance mode) and
`accuracy` (bs records of MMLU's shape). Per wire and shape: the round trip's p50 / p90 (us) over
CALLS calls, ROUNDS rounds alternating the wires, best round of each kept (a shared machine only
ever adds time), and the driver's CPU per call (us). Last line: new p50 / old p50 (performance).

    python benchmarks/lane_wire.py [--calls N] [--rounds R] [--bs B]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = b"lane-wire-benchmark-key-32-bytes"  # a fixed key: the spawned worker imports this module anew
WIRES = ("old", "new", "tls")


def batch_result(batch, with_records: bool):
    """What a synthetic worker's run_samples returns for `batch` (workers/shard/passes.py's fields)."""
    from workers.contract import ShardResult

    records = [{"example": i, "subject": "abstract_algebra", "question_index": i, "gold": "A", "predicted": "B",
                "correct": False, "logit_A": -1.5, "logit_B": 0.25, "logit_C": -2.0, "logit_D": -0.75,
                "prompt_tokens": 812, "shots_used": 5, "truncated": False, "scoring": "letters",
                "prompt_format": "mmlu"} for i in batch.indices] if with_records else []
    n = len(batch.indices)
    return ShardResult(shard_id=batch.batch_id, pass_name=batch.pass_name, attempt=batch.attempt, worker_id=0,
                       node_id="0" * 56, device_name="cpu", pid=os.getpid(), examples=n, items=16 * n, scored=n,
                       correct=0, flops=1.0e9 * n, core_seconds=0.0201, h2d_seconds=0.0001, wall_seconds=0.0203,
                       start_ts=time.time(), end_ts=time.time(), batch_core_seconds=[0.0201], batch_items=[16 * n],
                       batch_rows=[n], batch_seq_lens=[16], bytes_per_batch=128 * n, peak_mem_bytes=None,
                       mem_source="rss", energy_note="not measured", records=records)


def serve(wire: str, tls_files, address_out) -> None:
    """The worker's end, in its own process."""
    calls = {"run_samples": lambda batch, with_records: batch_result(batch, with_records)}
    if wire == "old":
        return serve_old(calls, address_out)
    from workers.lane_server import LaneServer

    server = LaneServer("127.0.0.1", KEY, calls, tls=tls_files if wire == "tls" else None)
    address_out.put(server.address)
    server._thread.join()


def _tune_old(conn) -> None:
    """The old lane's `tune` on a Connection's socket: TCP_NODELAY (keepalive does not change a round trip)."""
    import socket

    with socket.socket(fileno=conn.fileno()) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.detach()


def serve_old(calls, address_out) -> None:
    """The old LaneServer's loop (workers/lane_server.py before issue 27): Listener, challenge, pickle."""
    from multiprocessing.connection import Listener

    with Listener(("127.0.0.1", 0), authkey=KEY) as listener:
        address_out.put(listener.address)
        with listener.accept() as conn:
            _tune_old(conn)
            while True:
                try:
                    name, args = conn.recv()
                except (EOFError, OSError):
                    return
                conn.send(("ok", calls[name](*args)))


class OldLane:
    """The old DirectLane (orchestrator/targets/lane_client.py before issue 27): a Connection, the
    call sent on the caller's thread, a receiving thread that completes the futures in order."""

    def __init__(self, address) -> None:
        import queue
        import threading
        from multiprocessing.connection import Client

        self._conn = Client(address, authkey=KEY)
        _tune_old(self._conn)
        self._sent = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while (future := self._sent.get()) is not None:
            future.set_result(self._conn.recv()[1])

    def call(self, name, *args):
        from concurrent.futures import Future

        future: Future = Future()
        self._conn.send((name, args))
        self._sent.put(future)
        return future.result()

    def close(self) -> None:
        self._sent.put(None)
        self._thread.join()
        self._conn.close()


class NewLane:
    def __init__(self, address, tls_files) -> None:
        from orchestrator.targets.lane_client import DirectLane

        self._lane = DirectLane(address, KEY, 0, tls_files)

    def call(self, name, *args):
        return self._lane.call(name, *args).result()

    def close(self) -> None:
        self._lane.close()


def one_round(wire: str, tls_files, calls: int, bs: int, with_records: bool) -> tuple[float, float, float]:
    """p50 and p90 of the round trip, and the driver's CPU per call, in us."""
    from orchestrator.metrics.stats import percentiles
    from workers.contract import SampleBatch

    ctx = multiprocessing.get_context("spawn")
    address_out = ctx.Queue()
    worker = ctx.Process(target=serve, args=(wire, tls_files, address_out), daemon=True)
    worker.start()
    address = address_out.get(timeout=60)
    lane = OldLane(address) if wire == "old" else NewLane(address, tls_files if wire == "tls" else None)
    batch = SampleBatch(batch_id=0, indices=tuple(range(bs)), pass_name="infer")
    for _ in range(min(50, calls)):  # warm: imports, first allocations
        lane.call("run_samples", batch, with_records)
    seconds, cpu0 = [], time.process_time()
    for i in range(calls):
        batch = SampleBatch(batch_id=i, indices=tuple(range(i, i + bs)), pass_name="infer")
        t0 = time.perf_counter()
        result = lane.call("run_samples", batch, with_records)
        seconds.append(time.perf_counter() - t0)
        assert result.shard_id == i and result.examples == bs
    cpu_us = (time.process_time() - cpu0) / calls * 1e6
    lane.close()
    worker.join(timeout=10)
    p50, p90 = percentiles(seconds, (50, 90))
    return p50 * 1e6, p90 * 1e6, cpu_us


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000, help="round trips per wire, shape and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bs", type=int, default=8, help="samples per batch")
    parser.add_argument("--tiny", action="store_true", help="200 calls, one round: seconds")
    args = parser.parse_args(argv)
    if args.tiny:
        args.calls, args.rounds = 200, 1
    from tests.workers.tls_certs import make_pki

    with tempfile.TemporaryDirectory() as pki:
        tls_files = make_pki(Path(pki))["node"]
        best: dict[tuple[str, str], tuple[float, float, float]] = {}
        for _ in range(args.rounds):
            for shape in ("performance", "accuracy"):
                for wire in WIRES:
                    figures = one_round(wire, tls_files, args.calls, args.bs, shape == "accuracy")
                    key = (shape, wire)
                    best[key] = min(best.get(key, figures), figures)  # by p50
    print(f"one batch's round trip over loopback, worker in a spawned process; bs {args.bs}, {args.calls} calls, "
          f"{args.rounds} round(s), best kept")
    print(f"{'shape':<12} {'wire':<4} {'p50 us':>8} {'p90 us':>8} {'driver CPU us/call':>19} {'p50 - old':>10}")
    for shape in ("performance", "accuracy"):
        old_p50 = best[(shape, "old")][0]
        for wire in WIRES:
            p50, p90, cpu = best[(shape, wire)]
            print(f"{shape:<12} {wire:<4} {p50:8.1f} {p90:8.1f} {cpu:19.1f} {p50 - old_p50:+10.1f}")
    ratio = best[("performance", "new")][0] / best[("performance", "old")][0]
    print(f"lane_wire_new_over_old_p50: {ratio:.3f}")


if __name__ == "__main__":
    main()
