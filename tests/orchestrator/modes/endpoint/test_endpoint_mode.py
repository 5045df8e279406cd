"""The endpoint mode against a mock server of known behaviour (tests/fakes/openai_server.py): the
figures match the truth, a server past its capacity and a client that fell behind are told apart,
the percentiles are every sample's, and the server's metrics come along. Clients run in this
process (as `--no-ray` does); tests/orchestrator/modes/endpoint/test_endpoint_cluster.py runs them
as actors on two nodes.

Timing on this shared 2-core machine: other processes preempt the client for tens of ms now and
then (a schedule lag p99 of 3 to 100 ms where a quiet machine has well under 1 ms). The accuracy
test runs the schedule up to six times and one run must meet the issue's bounds. A run in which the
machine did not keep time says nothing about accuracy: the client's own self-check (schedule lag
p99 above 2 ms) or the mock's (more than 1 % of its first tokens sent over 1 ms late). Only when
every run was such a run is the test skipped, saying so; a run that kept time and missed fails it.
The other tests ask for what holds by a wide margin (hundreds of ms against tens)."""

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.fakes.openai_server import serve
from tests.orchestrator.modes.endpoint.helpers import endpoint_job, requests_table, run_endpoint

pytestmark = pytest.mark.slow  # a mock server process, and seconds of schedule per test

TTFT_MS, ITL_MS = 20.0, 4.0


def test_ttft_matches_the_servers_truth_at_a_rate_the_client_keeps_up_with(tmp_path):
    """TTFT p50 within 2 ms and p99 within 5 ms of the mock's 20 ms; TPOT and ITL its 4 ms."""
    tried, kept_time = [], []
    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS, metrics=True) as url:
        for attempt in range(6):
            (run,) = run_endpoint(endpoint_job(url, endpoint={"scrape_interval_s": 0.5},
                                               load={"rate": 25.0, "requests": 100, "seed": attempt}),
                                  tmp_path / f"r{attempt}")
            row = run.row
            late = [s["value"] for s in pq.read_table(Path(run.run_dir) / "server_metrics.parquet").to_pylist()
                    if s["name"] == "mock:late_first_tokens_total"]
            shown = tuple(round(v * 1e3, 2) for v in (row.ttft_p50, row.ttft_p99, row.schedule_lag_p99))
            tried.append((*shown, max(late) - min(late)))
            if abs(row.ttft_p50 * 1e3 - TTFT_MS) <= 2 and abs(row.ttft_p99 * 1e3 - TTFT_MS) <= 5:
                break
            if row.schedule_lag_p99 < 0.002 and max(late) - min(late) <= 1:
                kept_time.append(tried[-1])
        else:
            what = "(ttft p50, p99, client lag p99 in ms, mock's late first tokens)"
            if not kept_time:
                pytest.skip(f"this machine never kept time for the client or the mock {what}: {tried}")
            pytest.fail(f"runs that kept time missed the bounds {what}: {kept_time}")
    assert row.verdict == "VALID", row.verdict_reasons
    assert row.tpot_p50 * 1e3 == pytest.approx(ITL_MS, abs=0.5) and row.itl_p50 * 1e3 == pytest.approx(ITL_MS, abs=0.5)
    assert row.requests_completed == 100 and row.output_tokens_mean == 10
    assert row.e2e_p50 * 1e3 == pytest.approx(TTFT_MS + 9 * ITL_MS, abs=3)


def test_past_capacity_the_wait_is_the_servers_or_the_clients_and_both_latencies_say_which(tmp_path):
    """A server of 2 slots (each answer holds one ~56 ms: ~35 req/s) driven at 60 req/s.
    - no connection limit: every request goes on the wire on time and waits in the server's queue:
      the latency from the scheduled send and from the actual send grow alike, the lag stays
      small, and the row is VALID: the server was the bottleneck;
    - 2 connections per client (a client that cannot send more than the server answers, as a
      closed-loop tool would): requests wait in the client, so the latency from the actual send
      stays at the server's ~20 ms while the latency from the scheduled send grows by the wait;
      the lag shows it, and the row is INVALID: the client was the bottleneck."""
    with serve(ttft_ms=TTFT_MS, itl_ms=4.0, capacity=2) as url:
        load = {"rate": 60.0, "requests": 90, "arrival": "constant"}
        (queued,) = run_endpoint(endpoint_job(url, load=load), tmp_path / "server")
        (held,) = run_endpoint(endpoint_job(url, load=load, endpoint={"max_connections": 2}), tmp_path / "client")
    q, h = queued.row, held.row
    assert q.ttft_p99 > 0.3 and q.ttft_sent_p99 > 0.3  # both see the server's queue
    assert q.schedule_lag_p99 < 0.01 and q.verdict == "VALID", q.verdict_reasons
    assert h.ttft_p99 > 0.3  # what a user waiting in line sees ...
    assert h.ttft_sent_p50 < (TTFT_MS + 10) / 1e3 and h.ttft_sent_p99 < h.ttft_p99 / 4  # ... from the actual send
    assert h.schedule_lag_p99 > 0.3 and h.verdict == "INVALID"
    assert "the client, not the server, was the bottleneck: use more clients" in h.verdict_reasons
    sent = [r["ttft_sent_s"] for r in requests_table(held)]
    assert np.percentile(sent, 99) == pytest.approx(h.ttft_sent_p99)


def test_a_client_starved_of_cpu_is_caught_and_the_row_is_invalid(tmp_path):
    """The client's event loop shares this process with a thread that keeps the CPU (a busy loop
    holding the GIL in 20 ms slices): requests go out late, and the row says so. One hog: everything
    else in the process (the run's setup, its tables) runs at half speed too."""
    stop = threading.Event()

    def hog() -> None:
        while not stop.is_set():
            sum(range(20_000))

    interval = sys.getswitchinterval()
    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS) as url:
        sys.setswitchinterval(0.02)
        hogs = [threading.Thread(target=hog, daemon=True)]
        try:
            for t in hogs:
                t.start()
            (run,) = run_endpoint(endpoint_job(url, load={"rate": 100.0, "requests": 40}), tmp_path)
        finally:
            stop.set()
            for t in hogs:
                t.join()
            sys.setswitchinterval(interval)
    row = run.row
    assert row.verdict == "INVALID"
    assert "the client, not the server, was the bottleneck: use more clients" in row.verdict_reasons
    assert "schedule lag p99" in row.verdict_reasons and row.schedule_lag_p99 > 0.01


def test_two_clients_merge_into_the_percentiles_of_every_sample(tmp_path):
    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS) as url:
        (run,) = run_endpoint(endpoint_job(url, clients=2, load={"rate": 30.0, "requests": 60}), tmp_path)
    rows = requests_table(run)
    assert {r["source"].split("@")[0] for r in rows} == {"client 0", "client 1"}
    row = run.row
    for column, key in (("ttft", "ttft_s"), ("ttft_sent", "ttft_sent_s"), ("e2e", "e2e_s"), ("tpot", "tpot_s")):
        every = [r[key] for r in rows if r[key] is not None]
        for q, suffix in ((50, "p50"), (90, "p90"), (99, "p99"), (99.9, "p999")):
            assert getattr(row, f"{column}_{suffix}") == pytest.approx(float(np.percentile(every, q)))
    gaps = [b - a for r in rows for a, b in zip(r["token_times_s"], r["token_times_s"][1:])]
    assert row.itl_p99 == pytest.approx(float(np.percentile(gaps, 99)))


def test_the_servers_prometheus_metrics_land_in_the_timeline_and_a_server_without_says_so(tmp_path):
    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS, metrics=True) as url:
        (run,) = run_endpoint(endpoint_job(url, endpoint={"scrape_interval_s": 0.2},
                                           load={"rate": 20.0, "requests": 40}), tmp_path / "with")
    samples = pq.read_table(Path(run.run_dir) / "server_metrics.parquet").to_pylist()
    running = [s for s in samples if s["name"] == "vllm:num_requests_running"]
    assert len(running) >= 5 and max(s["value"] for s in running) >= 1  # requests were in flight while scraped
    assert json.loads(running[0]["labels"]) == {"model_name": "mock-model"}
    assert "vllm:request_success_total" in {s["name"] for s in samples}
    timeline = json.loads((Path(run.run_dir) / "timeline.json").read_text())
    assert timeline["server_metrics"]["samples"] == len(samples) and "schedule-0" in timeline["schedules"]
    assert f"samples from {url}/metrics" in run.row.server_metrics
    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS) as url:
        (bare,) = run_endpoint(endpoint_job(url, load={"rate": 20.0, "requests": 10}), tmp_path / "without")
    assert bare.row.server_metrics == f"none from {url}/metrics: HTTP 404"
    assert "metrics" not in bare.row.verdict_reasons  # a server without metrics is no reason against the row


def test_a_closed_loop_keeps_its_concurrency_and_repeats_give_intervals(tmp_path):
    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS) as url:
        raw = endpoint_job(url, clients=2, repeats=3, load={"concurrency": 4, "requests": 24})
        (run,) = run_endpoint(raw, tmp_path)
    row = run.row
    assert (row.arrival, row.concurrency, row.offered_rate, row.repeats, row.requests) == ("closed", 4, None, 3, 72)
    # 4 in flight, each ~56 ms: ~70 req/s
    assert 40 < row.requests_per_s < 80
    assert row.requests_per_s_ci_low <= row.requests_per_s <= row.requests_per_s_ci_high
    assert row.ttft_p99_ci_low is not None and row.ttft_p99_ci_low <= row.ttft_p99_ci_high


def test_find_peak_brackets_the_mocks_capacity_and_says_why_it_stopped(tmp_path):
    """4 slots of ~56 ms each: ~71 req/s. Evenly spaced arrivals below that never queue; above it the
    queue grows by the excess, and within 300 requests TTFT passes the 300 ms bound. Each probe is
    300 requests, the fewest that can show a p99 (docs/endpoint.md). The lag bound is loosened to
    1 s: this is the search and the SLO rule, not the client's precision, on a shared machine."""
    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS, capacity=4) as url:
        raw = endpoint_job(url, slo={"ttft_ms": 300}, verdict={"max_schedule_lag_ms": 1000},
                           load={"rate": 40.0, "requests": 300, "mode": "find_peak", "arrival": "constant",
                                 "find_peak_tolerance": 0.2, "find_peak_max_runs": 5})
        (run,) = run_endpoint(raw, tmp_path)
    row = run.row
    probes = pq.read_table(Path(run.run_dir) / "find_peak.parquet").to_pylist()
    assert [p["rate"] for p in probes][:3] == [40.0, 80.0, 60.0], probes  # doubled until one failed, then halved
    passed = [p["rate"] for p in probes if p["passed"]]
    failed = [p["rate"] for p in probes if not p["passed"]]
    assert max(passed) < min(failed) and 55 <= max(passed) <= 75 and 65 <= min(failed) <= 80
    assert row.offered_rate == max(passed) and row.find_peak_stop
    assert all(p["requests"] == 300 for p in probes)
    assert "missed the slo" in next(p["why"] for p in probes if p["rate"] == 80.0)


def test_bench_report_of_a_rate_sweep_draws_distributions_latency_vs_rate_lag_and_the_server(tmp_path):
    from orchestrator.views.html_report import report_run

    with serve(ttft_ms=TTFT_MS, itl_ms=ITL_MS, metrics=True) as url:
        raw = endpoint_job(url, endpoint={"scrape_interval_s": 0.2}, load={"requests": 30},
                           sweep={"load.rate": [10.0, 30.0]})
        runs = run_endpoint(raw, tmp_path)
    assert [r.row.offered_rate for r in runs] == [10.0, 30.0] and runs[0].row.sweep_id == runs[1].row.sweep_id
    md, page = report_run(tmp_path, runs[1].run_id)
    pngs = {p.name for p in md.parent.glob("*.png")}
    assert pngs == {"report-latency_cdf.png", "report-latency_vs_rate.png", "report-schedule_lag.png",
                    "report-server.png"}
    text = md.read_text()
    assert "| 30 req/s poisson |" in text and "TTFT p50/p99 ms" in text and "schedule_lag_p99" in text
    assert "data:image/png;base64," in page.read_text() and "endpoint_url" in page.read_text()
