"""dispatch_scale: the driver's own cost per shard at 64, 512 and 4,096 workers, by simulation.

A real cluster has 512 to 4,096 GPUs; this machine has 2 cores. The driver's part does not need
them: the real `Dispatcher` (orchestrator/modes/offline/dispatch.py) hands 64 shards per worker to a
simulated pool (tests/fakes/simulated_pool.py) whose workers answer on a simulated clock, and every
finished shard goes through Offline's real callback (`OfflineRun.on_result`: the shard's file in
the run folder, the live totals, the progress bar). Then the 4,096-worker run is merged
(`merge`, METRICS.md's rules and the verdict) and stored (`point.finish`: shard and worker tables,
metrics.md, the timeline, the row).

Two latency models: `instant` (every shard answers at once: the loop gets many results per wait)
and `drawn` (each shard takes a lognormal time around 1 s, so results arrive one by one, the
dispatcher's worst case: one loop turn per shard); `drawn-nostore` is `drawn` with the callback
left out, the dispatcher alone. The driver's cost is the wall time of
`Dispatcher.run` less the time spent inside the simulated pool; the pool's own bookkeeping is shown
apart. The clock stops when every shard is saved (the saves run on threads beside the loop).
Headline: drawn-latency cost per shard at 4,096 workers over that at 64. Target: <= 2, and
under 1 ms per shard at every size.

    python benchmarks/dispatch_scale.py [--sizes 64,512,4096] [--per-worker 64] [--runs instant,drawn,drawn-nostore]
    python benchmarks/dispatch_scale.py --tiny      seconds: 8 and 16 workers, 4 shards each (the suite runs it)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fakes.simulated_pool import SimulatedPool  # noqa: E402

MODELS = {"instant": lambda rng: 0.0, "drawn": lambda rng: rng.lognormvariate(0.0, 0.3)}
RUNS = {"instant": ("instant", True), "drawn": ("drawn", True), "drawn-nostore": ("drawn", False)}


def spec_for(workers: int):
    from orchestrator.spec import load_spec

    return load_spec("jobs/synthetic.yaml", [f"workers={workers}", f"data.synthetic.size={workers * 64 * 4}"])


def one_run(spec, store, workers: int, per_worker: int, model: str, saving: bool = True):
    """Dispatch workers x per_worker shards; returns (driver s, pool s, results, infos, state, point).
    Without `saving`, finished shards go nowhere: the dispatcher's own cost."""
    from orchestrator.cluster.progress import RunProgress
    from orchestrator.modes.offline.dispatch import Dispatcher
    from orchestrator.modes.offline.point import OfflineRun
    from orchestrator.point import Point
    from orchestrator.session import Session
    from orchestrator.timeline import Timeline
    from workers.contract import ShardTask

    session = Session(store.run(f"scale-{model}-{workers}"), time.perf_counter(), {}, 0.0, None)
    point = Point(spec, store, session, False, RunProgress(enabled=False),
                  Timeline(session.started, session.started_at))
    state = OfflineRun(point)
    shards = [ShardTask(i, 4 * i, 4 * i + 4, "infer") for i in range(workers * per_worker)]
    state.totals[("infer", 0)] = [0, len(shards), 0, 0]
    pool = SimulatedPool(workers, MODELS[model], seed=workers)
    infos = pool.setup()
    dispatcher = Dispatcher(pool, spec.max_attempts, state.on_result if saving else lambda result: None)
    t0 = time.perf_counter()
    results = dispatcher.run(shards)
    state.saver.close()  # the shards are all on disk: the saves count, wherever they ran
    state.saver.check()
    wall = time.perf_counter() - t0
    assert len(results) == len(shards) and len({r.shard_id for r in results}) == len(shards)
    return wall - pool.pool_seconds, pool.pool_seconds, results, infos, state, point


def merge_and_store(spec, results, infos, state, point) -> tuple[float, float]:
    from orchestrator.metrics.merge import merge
    from orchestrator.point import finish
    from workers.contract import DataInfo

    data = [DataInfo(len(results) * 4, "sim", "sequences", None, None, None, 0.0, 0.0, 0, "node0", "sim")]
    t0 = time.perf_counter()
    row = merge(spec=spec, run_id=point.run_id, results=results, infos=infos, data=data, e2e_seconds=1.0,
                retries=0, item_unit="sequences")
    merged = time.perf_counter() - t0
    t0 = time.perf_counter()
    finish(point, row, results, infos, data, state.failed, [])
    return merged, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    from orchestrator.metrics.store import ResultsStore

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="64,512,4096")
    parser.add_argument("--per-worker", type=int, default=64)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"which of {', '.join(RUNS)}")
    parser.add_argument("--tiny", action="store_true", help="8 and 16 workers, 4 shards each: seconds")
    args = parser.parse_args(argv)
    if args.tiny:
        args.sizes, args.per_worker = "8,16", 4
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = args.runs.split(",")
    per_shard: dict[tuple[str, int], float] = {}
    print(f"{'run':14} {'workers':>7} {'shards':>8} {'driver us/shard':>16} {'pool us/shard':>14}")
    with tempfile.TemporaryDirectory(prefix="dispatch-scale-") as folder:
        store = ResultsStore(folder)
        for workers in sizes:
            spec = spec_for(workers)
            for name in runs:
                model, saving = RUNS[name]
                driver_s, pool_s, results, infos, state, point = one_run(spec, store, workers, args.per_worker,
                                                                         model, saving)
                n = len(results)
                per_shard[(name, workers)] = driver_s / n * 1e6
                print(f"{name:14} {workers:>7} {n:>8} {driver_s / n * 1e6:>16.1f} {pool_s / n * 1e6:>14.1f}", flush=True)
                if workers == sizes[-1] and name == "drawn":
                    merged, stored = merge_and_store(spec, results, infos, state, point)
                    print(f"merge of the {workers}-worker run ({n} shards): {merged:.2f} s; store: {stored:.2f} s",
                          flush=True)
    print(f"worst driver cost per shard: {max(per_shard.values()):.1f} us (target < 1000)")
    for name in runs:
        print(f"{name} cost ratio {sizes[-1]}/{sizes[0]}: {per_shard[(name, sizes[-1])] / per_shard[(name, sizes[0])]:.2f}")
    head = "drawn" if "drawn" in runs else runs[-1]
    ratio = per_shard[(head, sizes[-1])] / per_shard[(head, sizes[0])]
    print(f"dispatch_cost_ratio_{sizes[-1]}_over_{sizes[0]}: {ratio:.2f}")


if __name__ == "__main__":
    main()
