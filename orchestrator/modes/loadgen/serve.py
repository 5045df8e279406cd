"""A LoadGen point's tests: the workers warmed and timed, then the test(s) the job's mode asks for.

- performance / accuracy: one test;
- find_peak: Server tests at the rates orchestrator/modes/search.py picks;
- with `audit`: the compliance test's own runs beside the headline (orchestrator/modes/loadgen/compliance.py):
  TEST01 an accuracy run, the headline performance run and the audited run; TEST04 the headline and
  the audited run; a path the audited run alone. Each run has its own log folder.
Before the first test every worker runs one sample alone and one full batch, timed from the driver
(`Calibration`: outside every figure, counted as warm-up): LoadGen's expected stream latency and
Offline rate are sized from it, and so is the deadline after which a batch's worker counts as hung.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.cluster.live import ScenarioMeter
from orchestrator.modes.loadgen.bridge import BridgeOptions
from orchestrator.modes.loadgen.compliance import KNOWN, Compliance, test01, test04, write_audit
from orchestrator.modes.loadgen.runner import LoadGenTest, run_test
from orchestrator.modes.loadgen.settings import Calibration, build_test_settings
from orchestrator.modes.search import Search, find_peak
from orchestrator.point import Point
from orchestrator.targets.base import Target
from workers.contract import SampleBatch
from workers.errors import RunFailed

MIN_BATCH_TIMEOUT_S = 30.0
BATCH_TIMEOUT_FACTOR = 20  # a batch this many times slower than the calibrated one: its worker hung


@dataclass
class Served:
    """What a point's LoadGen tests gave: the headline test, every test, the warm-up batches of each
    worker, find_peak's search, the compliance test's verdict."""

    head: LoadGenTest
    tests: list[LoadGenTest]
    warmed: list[int]
    search: Search | None = None
    compliance: Compliance | None = None


@dataclass(frozen=True)
class Shape:
    """What the bridge needs to know of the job's target besides its load: the pass its batches
    belong to, samples per batch, whether samples make tokens (streamed events; token latencies by
    default), attempts per sample, and the deadline after which a place counts as hung (None: sized
    from the calibration)."""

    pass_name: str
    bs: int
    generates: bool
    max_attempts: int
    batch_timeout_s: float | None = None


def engine_shape(spec) -> Shape:
    """An engine job's: a continuous engine's place takes one sample (its worker is bs places)."""
    bs = spec.bs if slots_per_worker(spec) == 1 else 1
    return Shape(spec.measured_pass, bs, type(spec.task).generates, spec.max_attempts, spec.load.batch_timeout_s)


def serve(point: Point, workers: Target, examples: int, logs: Path, shape: Shape) -> Served:
    """Warm and calibrate the workers, then run the mode's LoadGen test(s)."""
    load = point.spec.load
    meter = ScenarioMeter(point.run_id)
    try:
        point.status(f"warming up {workers.size} worker(s)")
        warmed = workers.warm_up(shape.pass_name)
        generates, bs = shape.generates, shape.bs
        calibration = calibrate(workers, shape.pass_name, bs, examples)
        calibrated = first_places(workers)
        warmed = [n + (2 if p in calibrated else 0) for p, n in enumerate(warmed)]  # the calibration's two batches
        timeout = shape.batch_timeout_s or max(MIN_BATCH_TIMEOUT_S, BATCH_TIMEOUT_FACTOR * calibration.batch_s)

        def probe(folder: Path, qps: float | None = None, accuracy: bool = False, audit: str | None = None):
            built = build_test_settings(load, examples, accuracy=accuracy, target_qps=qps, calibration=calibration,
                                        generates=generates)
            options = BridgeOptions(shape.pass_name, bs, load.max_batch_wait_ms / 1e3, shape.max_attempts,
                                    accuracy, timeout, generates=generates,
                                    token_latencies=load.uses_tokens(generates))
            if audit is not None:
                write_audit(folder, audit)
            rate = f" at {qps:g} QPS" if qps else ""
            point.status(f"LoadGen {load.scenario} {'accuracy' if accuracy else load.mode}{rate}"
                         + (f" ({audit})" if audit else ""))
            return run_test(built, workers, options, examples, folder, meter, load.keeps_trace, target_qps=qps)

        if load.mode == "find_peak":
            search = find_peak(lambda qps: probe(logs / f"qps-{qps:.6g}", qps), lambda test: test.valid,
                               lambda test: test.target_qps, load.target_qps, load.find_peak_tolerance,
                               load.find_peak_max_runs)
            return Served(search.best, search.probes, warmed, search)
        if load.mode == "accuracy":
            head = probe(logs, accuracy=True)
            return Served(head, [head], warmed)
        if load.audit is None:
            head = probe(logs, load.target_qps)
            return Served(head, [head], warmed)
        return _audited(probe, load.audit, load.target_qps, logs, warmed)
    finally:
        workers.close()


def _audited(probe, audit: str, qps: float | None, logs: Path, warmed: list[int]) -> Served:
    """The headline performance run, and the compliance test's runs beside it (module docstring)."""
    test = audit.upper() if audit.upper() in KNOWN else audit
    head = probe(logs / "performance", qps)
    if test == "TEST01":
        accuracy = probe(logs / "accuracy", accuracy=True)
        audited = probe(logs / "TEST01", qps, audit=test)
        verdict = test01(head.detail, audited.detail, accuracy.log_dir / "mlperf_log_accuracy.json",
                         audited.log_dir / "mlperf_log_accuracy.json")
        return Served(head, [head, accuracy, audited], warmed, compliance=verdict)
    audited = probe(logs / ("TEST04" if test == "TEST04" else "audit"), qps, audit=test)
    verdict = test04(head.detail, audited.detail) if test == "TEST04" else Compliance(test, None, "")
    return Served(head, [head, audited], warmed, compliance=verdict)


def slots_per_worker(spec) -> int:
    """Places per worker: bs for an engine that takes requests while others run (continuous batching:
    each sample goes to a worker as it arrives, up to bs at once, and joins its running batch), else 1
    (a worker runs one batch of up to bs samples at a time)."""
    return spec.bs if type(spec.task).generates and type(spec.engine).continuous else 1


def first_places(workers: Target) -> list[int]:
    """The first place of each worker (the calibration times one place per worker)."""
    return [p for p in range(workers.size) if workers.worker_of.index(workers.worker_of[p]) == p]


def calibrate(workers: Target, pass_name: str, bs: int, examples: int) -> Calibration:
    """One sample alone and one full batch on each worker, timed from the driver (hand-over
    included); the median over workers. A worker that fails them is taken out, as a worker failing
    its batches would be (the run fails only when none is left). Batch ids are negative: never a
    fault-injection target."""
    alone, full = [], []
    rows = tuple(range(min(bs, examples)))
    for worker in first_places(workers):  # one place of each worker (a continuous engine's worker has several)
        times = []
        for n, take in enumerate(((0,), rows)):
            started = time.perf_counter()
            result = workers.run(worker, SampleBatch(-1 - 2 * worker - n, take, pass_name)).result()
            if result.error is not None:
                workers.take_out(worker, f"failed its calibration batch after the warm-up: {result.error.message}")
                break
            times.append(time.perf_counter() - started)
        else:
            alone.append(times[0])
            full.append(times[1])
    if not full:
        raise RunFailed(f"every worker failed its calibration batch after the warm-up: {next(iter(workers.lost.values()))}")
    return Calibration(statistics.median(alone), statistics.median(full), len(rows), len(full))
