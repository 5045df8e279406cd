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
from orchestrator.modes.loadgen.logs import DetailLog, TokenLatencies, parse_detail, token_latencies, trace_samples
from orchestrator.modes.loadgen.settings import Built
from orchestrator.targets.base import Target
from workers.contract import ShardResult

log = logging.getLogger(__name__)


AUDIT_FILE = "audit.config"


@dataclass
class LoadGenTest:
    target_qps: float | None
    log_dir: Path
    detail: DetailLog  # what LoadGen logged (mlperf_log_detail.txt): its figures, verdict and errors
    results: list[ShardResult]  # accepted batches
    failed: list[ShardResult]  # failed attempts (re-issued)
    built: Built  # the TestSettings it ran with, and what of them is not MLPerf's
    watched: list[ShardResult]  # each worker's device watch and energy over the test
    issue_delays_ns: list[int]  # LoadGen's own issue delay of each sample (from its trace; empty without one)
    distinct_examples: int = 0  # examples the accepted batches ran, each counted once
    requests: list = field(default_factory=list)  # generate: each sample's RequestRecord, driver's clock (bridge)
    tokens: TokenLatencies | None = None  # LoadGen's TTFT/TPOT figures (token latencies on)

    @property
    def settings(self):
        return self.built.settings

    @property
    def valid(self) -> bool:
        """LoadGen said VALID and logged no error (an error never leaves a run MLPerf would accept)."""
        return self.detail.result == "VALID" and not self.detail.errors


def run_test(built: Built, workers: Target, options: BridgeOptions, examples: int, log_dir: Path,
             meter: ScenarioMeter, trace: bool, target_qps: float | None = None) -> LoadGenTest:
    """One LoadGen test, the workers' devices watched over it; raises the bridge's error (a run that
    could not finish) after LoadGen returns. LoadGen is given an audit.config path inside the test's
    own log folder: it reads one only when the job asked for a compliance test and it was written
    there, never one that happens to lie in the working directory (its default)."""
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
            lg.StartTestWithLogSettings(sut, qsl, built.settings, log, str(log_dir / AUDIT_FILE))
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
    detail = parse_detail((log_dir / "mlperf_log_detail.txt").read_text(encoding="utf-8", errors="replace"))
    return LoadGenTest(target_qps, log_dir, detail, bridge.results, bridge.failed, built, watched,
                       _issue_delays(log_dir) if trace else [], len(bridge.accepted), bridge.requests,
                       token_latencies(detail))


def _issue_delays(log_dir: Path) -> list[int]:
    trace = log_dir / "mlperf_log_trace.json"
    if not trace.exists():
        return []
    with trace.open(encoding="utf-8", errors="replace") as lines:
        return [issued for _, issued, _ in trace_samples(lines)]


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
