"""One LoadGen test against the workers, and find_peak's search over such tests.

A test: construct LoadGen's SUT (the bridge's two callbacks) and QSL, run
`StartTestWithLogSettings` with its logs in a local folder, destroy both, read the summary back.
The QSL is the prepared table already in the object store (every worker holds a handle to it), so
its load and unload callbacks have nothing to do and every sample is resident: the performance
sample count is the whole dataset.

LoadGen's test runs on a thread of its own while this thread waits on it: Python handles Ctrl-C only
on the main thread, and a C++ call would hold it off until the test ended. On Ctrl-C the bridge
completes everything at once; LoadGen still issues the rest of its schedule (it has no abort).

find_peak: LoadGen's own FindPeakPerformance mode logs only its last test; here each probe is one
PerformanceOnly Server test with its own logs, so every rate tried is on record (QPS searched vs
p99 in the report), searched by orchestrator/modes/search.py (LoadGen's own search, and why it
stopped).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.cluster.live import ScenarioMeter
from orchestrator.modes.loadgen.bridge import Bridge, BridgeOptions
from orchestrator.modes.loadgen.summary import LoadGenSummary, TokenLatencies, parse_summary, parse_token_latencies
from orchestrator.targets.base import Target
from workers.contract import ShardResult

log = logging.getLogger(__name__)


@dataclass
class LoadGenTest:
    target_qps: float | None
    log_dir: Path
    summary: LoadGenSummary
    results: list[ShardResult]  # accepted batches
    failed: list[ShardResult]  # failed attempts (re-issued)
    settings: object  # the mlperf_loadgen.TestSettings it ran with
    watched: list[ShardResult]  # each worker's device watch and energy over the test
    requests: list = field(default_factory=list)  # generate: each sample's RequestRecord, driver's clock (bridge)
    tokens: TokenLatencies | None = None  # LoadGen's TTFT/TPOT figures (token latencies on)

    @property
    def valid(self) -> bool:
        return self.summary.result == "VALID"


def run_test(settings, workers: Target, options: BridgeOptions, examples: int, log_dir: Path,
             meter: ScenarioMeter, trace: bool, target_qps: float | None = None) -> LoadGenTest:
    """One LoadGen test, the workers' devices watched over it; raises the bridge's error (a run that
    could not finish) after LoadGen returns."""
    import mlperf_loadgen as lg

    log_dir.mkdir(parents=True, exist_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = str(log_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = trace
    bridge = Bridge(workers, options, meter)
    sut = lg.ConstructSUT(bridge.issue_query, bridge.flush_queries)
    qsl = lg.ConstructQSL(examples, examples, _nothing_to_load, _nothing_to_load)
    workers.begin_watch(options.pass_name)
    bridge.start()
    ended = threading.Event()

    def test() -> None:
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, log)
        finally:
            ended.set()

    threading.Thread(target=test, name="raybench-loadgen-test", daemon=True).start()
    try:
        _wait_for(ended, bridge)
    finally:
        if ended.is_set():  # after a second Ctrl-C LoadGen may still be issuing: then leave it be
            bridge.stop()
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
    if bridge.crash is not None:
        raise bridge.crash
    if bridge.error is not None:
        raise bridge.error
    watched = workers.end_watch()
    text = (log_dir / "mlperf_log_summary.txt").read_text()
    return LoadGenTest(target_qps, log_dir, parse_summary(text), bridge.results, bridge.failed, settings, watched,
                       bridge.requests, parse_token_latencies(text))


def _nothing_to_load(indices: list[int]) -> None:
    """The QSL's load/unload: the prepared table is already in the object store."""


def _wait_for(ended: threading.Event, bridge: Bridge) -> None:
    """Wait for LoadGen's test. On Ctrl-C the bridge completes everything at once and LoadGen runs out
    its schedule (it cannot be stopped; a second test in the same process while one still runs would
    crash it), then the interrupt goes on. A second Ctrl-C stops waiting (the process is ending).
    The test's end is an Event, not `Thread.join`: a join that Ctrl-C interrupts can leave the thread
    reported dead while it still runs (CPython gh-90882), and LoadGen would be destroyed under it."""
    try:
        while not ended.wait(0.2):
            pass
    except KeyboardInterrupt:
        bridge.abort()
        log.warning("stopping: LoadGen ends its schedule with empty responses; Ctrl-C again to stop waiting")
        while not ended.wait(0.2):
            pass
        raise
