"""The endpoint mode's point: a running server, a schedule of requests made in advance, client actors
that send it, and a row whose every latency says whether the clients kept up.

    prompts -> client actors (spread over the nodes) -> run folder -> warm-up requests -> the
    schedule(s): `repeats` of one schedule, or find_peak's probes, the server's metrics scraped
    meanwhile -> the row: the request figures over every record of every client (never averaged),
    how the clients kept to the schedule, one verdict (the endpoint rule set joined with the
    incidents every row is judged on) -> requests.parquet, clients.parquet, find_peak.parquet,
    server_metrics.parquet, metrics.md, the row, timeline.json
An endpoint run cannot be resumed: its schedule is one piece (submit the job again).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Sequence

from orchestrator.metrics.requests import (
    e2e_s,
    lag_s,
    repeated_figures,
    request_columns,
    request_figures,
    schedule_columns,
    schedule_figures,
    tpot_s,
    ttft_s,
)
from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.verdict import VerdictFigures, evaluate
from orchestrator.modes.endpoint.arrivals import (
    Scheduled,
    closed_schedule,
    cut,
    rate_schedule,
    read_trace,
    scheduled_rate,
)
from orchestrator.modes.endpoint.columns import (
    EndpointFigures,
    endpoint_columns,
    endpoint_rules,
    identity_columns,
    slo_of,
)
from orchestrator.modes.endpoint.peak import FEWEST, PERCENTILE, Probe, judge_probe
from orchestrator.modes.endpoint.prompts import Prompt, bodies, load_tokenizer, make_prompts
from orchestrator.modes.endpoint.scrape import Scraper
from orchestrator.modes.endpoint.send import Sent, send, warm_up
from orchestrator.modes.search import Search, find_peak
from orchestrator.point import Point, store_row
from orchestrator.session import RunResult
from orchestrator.spec import EndpointJob, dump_spec
from orchestrator.targets.endpoint import ClientPool
from workers.errors import RunInterrupted, UserError


def run_point(point: Point) -> RunResult:
    spec: EndpointJob = point.spec
    run = point.run
    if run.exists():
        raise UserError(f"--resume {run.run_id}: an endpoint run cannot be resumed (its schedule is one piece); "
                        "submit the job again")
    base = base_schedule(spec)
    before = time.perf_counter()
    tokenizer = load_tokenizer(spec.endpoint.tokenizer)
    prompts = make_prompts(spec, tokenizer)
    prompts_seconds = time.perf_counter() - before
    point.timeline.mark("prompts_ready")
    point.status(f"starting {spec.clients} client actor(s)")
    before = time.perf_counter()
    pool = ClientPool(spec, run.run_id, point.in_process)
    clients_seconds = time.perf_counter() - before
    point.timeline.mark("clients_ready")
    endpoint = spec.endpoint
    scraper = Scraper(endpoint.scrape_urls, endpoint.scrape_interval_s, endpoint.headers(), endpoint.connect_timeout_s)
    try:
        run.create(dump_spec(spec), point.session.started_at, point.session.sweep_id)
        point.status(f"warming up with {spec.load.warmup_requests} request(s)")
        warm_up(pool, spec, bodies(spec, prompts, closed_schedule(spec.load.warmup_requests), tokenizer),
                spec.load.warmup_requests)
        point.timeline.mark("warmed_up")
        scraper.start(time.time())
        measured, search = _measure(point, pool, base, prompts, tokenizer)
    except KeyboardInterrupt:
        why = "; clients stopped; an endpoint run cannot be resumed (submit the job again)"
        raise RunInterrupted(run.run_id, False, point.store.shown_uri, why=why) from None
    finally:
        scraper.stop()
        pool.shutdown()
    point.timeline.mark("schedules_sent")
    head = [search.best.sent] if search is not None else measured
    figures = _figures(spec, head, search, pool, scraper.result.summary)
    row = _row(point, figures, prompts, prompts_seconds, clients_seconds)
    _write_tables(point, measured, search, scraper, scraper.start_epoch_s)
    from orchestrator.views.endpoint_view import endpoint_markdown

    extra = {"schedules": {f"schedule-{i}": [s.start_epoch_s - point.session.started_at,
                                              s.start_epoch_s - point.session.started_at + s.end_s]
                           for i, s in enumerate(measured)},
             "server_metrics": {"file": "server_metrics.parquet", "samples": len(scraper.result.samples),
                                "note": scraper.result.summary}}
    timeline = store_row(point, row, endpoint_markdown([row]), timeline_extra=extra)
    return RunResult(run.run_id, row, run.path, [], [], [], timeline=timeline)


def base_schedule(spec: EndpointJob) -> list[Scheduled] | None:
    """A trace's or a closed loop's schedule (the same for every repeat); None for a rate (drawn per
    repeat and per find_peak probe). A find_peak job is refused here when its requests cannot show a p99."""
    load = spec.load
    if load.mode == "find_peak" and load.requests is not None and load.requests < FEWEST:
        raise UserError(f"load.requests: find_peak holds each probe's p{PERCENTILE:g} to the slo, which "
                        f"{load.requests} requests cannot show (at least {FEWEST}: docs/endpoint.md)")
    if load.trace is not None:
        path = Path(load.trace)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UserError(f"load.trace: cannot read '{load.trace}' ({exc.strerror})") from None
        return cut(read_trace(lines, str(path)), load.requests, load.duration_s)
    if load.concurrency is not None:
        return closed_schedule(load.measured_requests)
    return None


def _measure(point: Point, pool: ClientPool, base: list[Scheduled] | None, prompts: list[Prompt],
             tokenizer) -> tuple[list[Sent], Search[Probe] | None]:
    """The repeats of the schedule, or find_peak's probes (then the measured list is every probe's)."""
    spec: EndpointJob = point.spec
    load = spec.load
    offset = load.warmup_requests  # the measured requests take the prompts after the warm-up's

    def one(rate: float | None, repeat: int) -> Sent:
        schedule = base if base is not None else rate_schedule(load, rate, load.measured_requests, load.duration_s,
                                                               load.seed + repeat)
        how = f"at {rate:g} req/s" if rate else f"{load.concurrency} in flight" if load.concurrency else "as traced"
        again = f" (repeat {repeat + 1}/{spec.repeats})" if spec.repeats > 1 else ""
        point.status(f"sending {len(schedule)} requests {how}{again}")
        return send(pool, spec, schedule, bodies(spec, prompts, schedule, tokenizer, offset), rate,
                    load.concurrency or 0, tokenizer)

    if load.mode == "find_peak":
        rules, slo = spec.verdict.rules(0.0), slo_of(spec)
        search = find_peak(lambda r: judge_probe(r, one(r, 0), slo, rules), lambda p: p.passed, lambda p: p.rate,
                           load.rate, load.find_peak_tolerance, load.find_peak_max_runs)
        return [p.sent for p in search.probes], search
    rate = scheduled_rate(base) if load.trace is not None else load.rate  # a trace's own rate, for the row
    return [one(rate, r) for r in range(spec.repeats)], None


def _figures(spec: EndpointJob, head: Sequence[Sent], search: Search[Probe] | None, pool: ClientPool,
             server_metrics: str) -> EndpointFigures:
    slo = slo_of(spec)
    repeats = [s.records for s in head]
    load = spec.load
    arrival = "closed" if load.concurrency else "trace" if load.trace else load.arrival
    notes: tuple[str, ...] = ()
    if search is not None:
        notes = tuple(n for n in (search.problem, _peak_blocked_by_clients(search)) if n)
    return EndpointFigures(
        requests=repeated_figures(repeats, slo), schedule=schedule_figures(repeats),
        per_repeat=[request_figures(r, slo) for r in repeats],
        client_cpu=[c for s in head for c in s.client_cpu], client_nodes=[p.node for p in pool.places],
        offered_rate=head[0].rate if head[0].rate is not None else None, arrival=arrival,
        warmup_requests=load.warmup_requests, server_metrics=server_metrics,
        find_peak_stop=search.stop if search is not None else None, notes=notes)


def _peak_blocked_by_clients(search: Search[Probe]) -> str:
    failed = [p for p in search.probes if not p.passed]
    if not failed:
        return ""
    lowest = min(failed, key=lambda p: p.rate)
    if not lowest.client_behind:
        return ""
    return (f"find_peak: the lowest failing rate {lowest.rate:g} req/s failed because the clients fell behind "
            f"({lowest.client_behind}), not the server: the peak is unknown; use more clients")


def _row(point: Point, f: EndpointFigures, prompts: list[Prompt], prompts_seconds: float,
         clients_seconds: float) -> MetricsRow:
    spec: EndpointJob = point.spec
    rules = spec.verdict.rules(0.0)
    versions = {"python": platform.python_version()}
    if not point.in_process:
        import ray

        versions["ray"] = ray.__version__
    row = MetricsRow(
        **identity_columns(spec, point.run_id, point.session.sweep_id, spec.clients,
                           len(set(f.client_nodes)), versions),
        e2e_time=point.session.e2e_seconds(), examples=len(prompts), load_time=clients_seconds,
        data_time=prompts_seconds, repeats=len(f.per_repeat), ray_start_time=point.ray_start_seconds,
        **request_columns(f.requests, slo_of(spec)), **schedule_columns(f.schedule), **endpoint_columns(spec, f),
    )
    figures = VerdictFigures(measured_seconds=f.requests.duration_s, measured_batches=0, latency_cv=None,
                             acc_gap=None, repeats=len(f.per_repeat))
    verdict = evaluate(figures, rules, [endpoint_rules(f, rules)])
    return row.model_copy(update={"verdict": verdict.label, "verdict_reasons": verdict.reasons_text,
                                  "verdict_profile": verdict.profile})


def _write_tables(point: Point, measured: list[Sent], search: Search[Probe] | None, scraper: Scraper,
                  scrape_start: float) -> None:
    run = point.run
    rows, clients = [], []
    for index, sent in enumerate(measured):
        offset = sent.start_epoch_s - scrape_start
        for r in sent.records:
            rows.append({
                "schedule": index, "rate": sent.rate, "schedule_start_s": offset, "request_id": r.request_id,
                "source": r.source, "arrival_s": r.arrival_s, "sent_s": r.sent_s, "first_byte_s": r.first_byte_s,
                "first_token_s": r.first_token_s, "end_s": r.end_s, "chunks": len(r.token_times_s),
                "input_tokens": r.input_tokens, "output_tokens": r.output_tokens, "lag_s": lag_s(r),
                "ttft_s": ttft_s(r), "ttft_sent_s": ttft_s(r, "sent"), "tpot_s": tpot_s(r), "e2e_s": e2e_s(r),
                "e2e_sent_s": e2e_s(r, "sent"), "error_kind": r.error.kind if r.error else None,
                "error": r.error.message if r.error else None, "token_times_s": list(r.token_times_s),
            })
        clients += [{"schedule": index, "client": c.client, "node": c.node, "pid": c.pid, "requests": len(c.records),
                     "cpu_s": c.cpu_s, "wall_s": c.wall_s, "cpu_cores": c.cpu_s / c.wall_s if c.wall_s else None}
                    for c in sent.runs]
    run.write_records("requests.parquet", rows)
    run.write_records("clients.parquet", clients)
    run.write_records("server_metrics.parquet", scraper.result.samples)
    if search is not None:
        run.write_records("find_peak.parquet", [
            {"probe": i, "rate": p.rate, "passed": p.passed, "why": p.why, "requests": len(p.sent.records),
             "misses": p.misses, "miss_upper": p.miss_upper,
             **{k: v for k, v in request_columns(request_figures(p.sent.records)).items()
                if k in ("requests_per_s", "ttft_p50", "ttft_p99", "tpot_p99", "e2e_p99", "ttft_sent_p99")},
             **schedule_columns(schedule_figures([p.sent.records]))}
            for i, p in enumerate(search.probes)])
