"""The driver: one job from spec to stored row.

    preflight -> connect -> workers set up (model, data, engine) -> plan shards -> val phase ->
    infer phase -> merge -> store

Each phase hands shards to workers as they become free (at most QUEUE_DEPTH in flight per worker,
so a worker never idles waiting for the driver), and the next phase starts only when every shard
of the current one is done, so a pass's wall time is not mixed with the other pass. Every finished
shard is written to the run folder at once.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from orchestrator.merge import merge
from orchestrator.plan import default_shard_size, plan_resources, plan_shards
from orchestrator.policy import decide
from orchestrator.pool import InProcessPool, Pool, RayPool
from orchestrator.preflight import preflight
from orchestrator.row import MetricsRow
from orchestrator.spec import JobSpec, dump_spec
from orchestrator.store import ResultsStore, RunFolder
from workers.contract import ShardResult, ShardTask, WorkerInfo
from workers.errors import RunFailed, UserError

QUEUE_DEPTH = 2
WAIT_SLICE_S = 0.25


@dataclass
class RunResult:
    run_id: str
    row: MetricsRow
    run_dir: Path
    results: list[ShardResult]
    infos: list[WorkerInfo]
    failed_attempts: list[ShardResult] = field(default_factory=list)


def new_run_id(name: str) -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{name}-{secrets.token_hex(3)}"


def check_workers_agree(infos: list[WorkerInfo]) -> int:
    """Every worker must see the same dataset, or shards would mean different things on each."""
    for info in infos:
        if info.error is not None:
            where = f"worker {info.worker_id} on {info.hostname} ({info.device_name})"
            raise UserError(f"{info.error.message} [{where}]") if info.error.kind == "user" else RunFailed(
                f"{where}: {info.error.message}"
            )
    prints = {(i.num_examples, i.dataset_fingerprint) for i in infos}
    if len(prints) > 1:
        raise RunFailed(f"workers see different datasets {sorted(prints)}: is data.path the same file on every node?")
    return infos[0].num_examples


class Dispatcher:
    """Runs one phase's shards over the pool's workers; counts and records every attempt."""

    def __init__(self, pool: Pool, max_attempts: int, on_result: Callable[[ShardResult], None]) -> None:
        self.pool = pool
        self.max_attempts = max_attempts
        self.on_result = on_result
        self.live = set(range(pool.size))
        self.failed_attempts: list[ShardResult] = []

    def run(self, shards: list[ShardTask]) -> list[ShardResult]:
        pending = deque(shards)
        busy: dict[object, tuple[int, ShardTask | None]] = {}
        load = {w: 0 for w in self.live}
        suspect: set[int] = set()  # died; waiting for Ray to restart them (a ping answers)
        accepted: list[ShardResult] = []
        while pending or busy:
            for w in sorted(self.live - suspect, key=lambda w: load[w]):
                while pending and load[w] < QUEUE_DEPTH:
                    shard = pending.popleft()
                    busy[self.pool.submit(w, shard)] = (w, shard)
                    load[w] += 1
            if not busy:
                raise RunFailed("every worker died; no worker left to run the remaining shards")
            for out in self.pool.wait(list(busy), WAIT_SLICE_S):
                w, shard = busy.pop(out.handle)
                load[w] -= 1
                if shard is None:  # a ping: the worker is back, or gone for good
                    suspect.discard(w)
                    if not out.alive:
                        self.live.discard(w)
                    continue
                if out.died and w not in suspect:
                    suspect.add(w)
                    busy[self.pool.ping(w)] = (w, None)
                    load[w] += 1
                result = out.result
                self.on_result(result)
                verdict = decide(result, self.max_attempts)
                if verdict == "accept":
                    accepted.append(result)
                    continue
                self.failed_attempts.append(result)
                if verdict == "retry":
                    pending.appendleft(replace(shard, attempt=shard.attempt + 1))
                    continue
                raise RunFailed(
                    f"shard {shard.key} (examples {shard.start}-{shard.stop}) failed on attempt "
                    f"{shard.attempt}/{self.max_attempts} on worker {w}: {result.error.message}"
                )
        return accepted


def open_pool(spec: JobSpec, run_id: str, in_process: bool) -> Pool:
    if in_process:
        if spec.workers not in ("auto", 1):
            raise UserError("workers: in-process mode (--no-ray) runs exactly one worker")
        return InProcessPool(spec.worker_config())
    from orchestrator.connect import cluster_resources

    gpus, cpus = cluster_resources()
    res = plan_resources(spec.workers, spec.gpus_per_worker, spec.cpus_per_worker, gpus, cpus)
    return RayPool(spec.worker_config(), run_id, res.workers, res.gpus_per_worker, res.cpus_per_worker, spec.max_restarts)


def run_job(
    spec: JobSpec,
    *,
    results_dir: str | Path = "results",
    address: str | None = None,
    in_process: bool = False,
    progress: bool = False,
    verbose: bool = False,
    node_ip: str | None = None,
) -> RunResult:
    """Run one job and store its row. Raises UserError / RunFailed with a one-line message."""
    t0 = time.perf_counter()
    preflight(spec)
    store = ResultsStore(results_dir)
    run_id = new_run_id(spec.name)
    started_ray = False
    if not in_process:
        from orchestrator.connect import connect

        started_ray = connect(address, verbose=verbose, node_ip=node_ip)
    pool: Pool | None = None
    try:
        pool = open_pool(spec, run_id, in_process)
        from orchestrator.progress import RunProgress

        with RunProgress(enabled=progress) as bar:
            bar.status(f"setting up {pool.size} worker(s): model, data, engine")
            infos = pool.setup()
            _keep_build_logs(store.run(run_id), infos)
            num_examples = check_workers_agree(infos)
            shard_size = spec.shard_size or default_shard_size(num_examples, spec.bs)
            run = store.run(run_id)
            run.create(dump_spec(spec))

            def on_result(result: ShardResult) -> None:
                if result.error is None:
                    run.save_shard(result)
                bar.advance(result)

            dispatcher = Dispatcher(pool, spec.max_attempts, on_result)
            results: list[ShardResult] = []
            for pass_name in spec.passes:
                shards = plan_shards(num_examples, shard_size, pass_name)
                bar.start_pass(pass_name, num_examples)
                results += dispatcher.run(shards)
        row = merge(
            spec=spec, run_id=run_id, results=results, infos=infos, e2e_seconds=time.perf_counter() - t0,
            retries=len(dispatcher.failed_attempts), item_unit=infos[0].item_unit,
        )
        _finish_run(store, run, row, results, infos, dispatcher.failed_attempts)
        return RunResult(run_id, row, run.path, results, infos, dispatcher.failed_attempts)
    finally:
        if pool is not None:
            pool.shutdown()
        if started_ray:
            from orchestrator.connect import disconnect

            disconnect()


def _keep_build_logs(run: RunFolder, infos: list[WorkerInfo]) -> None:
    """A failed engine build leaves its builder log in the run folder (and nothing else)."""
    for info in infos:
        if info.error is not None and info.error.detail:
            path = run.write_text(f"build-w{info.worker_id}.log", info.error.detail)
            raise UserError(f"{info.error.message} (builder log: {path})")


def _finish_run(store: ResultsStore, run: RunFolder, row: MetricsRow, results, infos, failed) -> None:
    from orchestrator.report import metrics_markdown

    run.write_shards_table(results, infos)
    run.write_workers_table(infos)
    records = [dict(rec, **{"pass": r.pass_name}) for r in results for rec in r.records]
    run.write_records("predictions.parquet", records)
    if failed:
        run.write_records("retries.parquet", [
            {"pass": r.pass_name, "shard_id": r.shard_id, "attempt": r.attempt, "worker_id": r.worker_id,
             "node_id": r.node_id, "kind": r.error.kind, "message": r.error.message}
            for r in failed
        ])
    run.write_text("metrics.md", metrics_markdown([row]))
    store.append_rows([row])
