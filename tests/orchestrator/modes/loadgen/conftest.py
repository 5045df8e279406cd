"""LoadGen's own logs, written by LoadGen against a null SUT in this process, for the tests that read them."""

import heapq
import threading
import time

import pytest


def null_sut_logs(folder, scenario: str, latency_s: float = 0.002, slow: set[int] = frozenset(),
                  slow_s: float = 0.06, twice: set[int] = frozenset(), **settings):
    """Run LoadGen against a SUT that completes each query `latency_s` after it was issued (`slow_s`
    for the queries numbered in `slow`, counting from 0; those in `twice` are completed twice), each on
    its own clock, from one thread that ends before the SUT is destroyed (LoadGen aborts the process
    when a thread that completed samples is still unwinding as the next test starts); returns the
    log folder."""
    import mlperf_loadgen as lg

    due: list = []  # (when, number, samples), a heap
    ready = threading.Condition()
    issued = [0]

    def issue(samples):
        with ready:
            number = issued[0]
            issued[0] += 1
            heapq.heappush(due, (time.monotonic() + (slow_s if number in slow else latency_s), number, samples))
            ready.notify()

    def serve():
        while True:
            with ready:
                while not due or (due[0][2] is not None and due[0][0] > time.monotonic()):
                    ready.wait(timeout=max(0.0, due[0][0] - time.monotonic()) if due else None)
                _, number, samples = heapq.heappop(due)
            if samples is None:
                return
            for _ in range(2 if number in twice else 1):
                lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])

    server = threading.Thread(target=serve)
    server.start()

    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, scenario)
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = 300
    for key, value in settings.items():
        setattr(ts, key, value)
    log = lg.LogSettings()
    log.log_output.outdir = str(folder)
    log.log_output.copy_summary_to_stdout = False
    folder.mkdir(parents=True)
    sut, qsl = lg.ConstructSUT(issue, lambda: None), lg.ConstructQSL(16, 16, lambda x: None, lambda x: None)
    lg.StartTestWithLogSettings(sut, qsl, ts, log, "")
    with ready:
        heapq.heappush(due, (float("inf"), -1, None))
        ready.notify()
    server.join()
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    return folder


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("loadgen")
    return {
        "server": null_sut_logs(root / "server", "Server", server_target_qps=400, min_query_count=120,
                                server_target_latency_ns=1_000_000),  # a 1 ms bound a 2 ms SUT cannot meet
        "multi": null_sut_logs(root / "multi", "MultiStream", multi_stream_samples_per_query=4, min_query_count=20),
    }
