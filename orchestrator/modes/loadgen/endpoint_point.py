"""LoadGen's point against a running server (an EndpointJob with `load: {kind: loadgen}`): LoadGen's
Server or SingleStream decides when each sample's request is sent, client actors send it and stream
its answer, and LoadGen hears of its first chunk and its end as they arrive.

    prompts (the endpoint job's own: sample i is prompt i) -> client actors (StreamClient, `slots`
    places each: orchestrator/targets/endpoint_places.py) -> run folder -> the calibration's
    requests (serve.py: two per client, in no figure) -> LoadGen's test(s) (one, or find_peak's
    probes) -> the row: the endpoint's identity, LoadGen's columns and rule set (columns.py, as every
    LoadGen row), the request figures of every sample's request (metrics/requests.py; times on the
    driver's clock, arrival at LoadGen's issue, so TTFT is what LoadGen measured) and their own
    rules, one verdict -> store_row
Written to the run folder: loadgen/ (LoadGen's logs), queries.parquet and find_peak.parquet (as every
LoadGen run), requests.parquet (each sample's request), metrics.md, the row, timeline.json.
It has no workers, shards or devices, so, like the endpoint mode, it does not go through
metrics/merge.py (an engine job's assembly).
"""

from __future__ import annotations

import platform
import time

from orchestrator.metrics.generation import requests_table
from orchestrator.metrics.requests import request_columns, request_figures, schedule_columns, schedule_figures
from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.verdict import VerdictFigures, evaluate
from orchestrator.modes.endpoint.columns import identity_columns, served_request_rules, slo_of
from orchestrator.modes.endpoint.prompts import load_tokenizer, make_prompts, request_body
from orchestrator.modes.loadgen.columns import loadgen_rules, scenario_columns
from orchestrator.modes.loadgen.point import figures_of, keep_logs, log_root, write_tables
from orchestrator.modes.loadgen.serve import Served, Shape, serve
from orchestrator.point import Point, store_row
from orchestrator.session import RunResult
from orchestrator.spec import EndpointJob, dump_spec
from orchestrator.targets.endpoint import ClientPool
from orchestrator.targets.endpoint_places import EndpointPlaces
from workers.errors import RunInterrupted
from workers.stream_client import StreamClient, StreamSettings

MAX_ATTEMPTS = 3  # a sample whose client actor died is sent again by another (a failed request is not)
HUNG_AFTER_S = 30.0  # a call this long past its requests' own timeout: its client hung


def run_endpoint_point(point: Point) -> RunResult:
    """One LoadGen grid point against the job's server (module docstring)."""
    spec: EndpointJob = point.spec
    run = point.run
    before = time.perf_counter()
    tokenizer = load_tokenizer(spec.endpoint.tokenizer)
    prompts = make_prompts(spec, tokenizer)
    prompts_seconds = time.perf_counter() - before
    point.timeline.mark("prompts_ready")
    point.status(f"starting {spec.clients} client actor(s) of {spec.slots} slot(s)")
    endpoint = spec.endpoint
    settings = StreamSettings(tuple(endpoint.request_urls), endpoint.headers(),
                              tuple(request_body(spec, p, spec.prompts.max_tokens) for p in prompts),
                              tuple(p.tokens for p in prompts), endpoint.timeout_s, endpoint.connect_timeout_s,
                              endpoint.max_connections)
    before = time.perf_counter()
    pool = ClientPool(spec, run.run_id, point.in_process, StreamClient, (settings,), concurrency=spec.slots + 1)
    clients_seconds = time.perf_counter() - before
    point.timeline.mark("clients_ready")
    target = EndpointPlaces(pool, spec.slots)
    shape = Shape("infer", bs=1, generates=True, max_attempts=MAX_ATTEMPTS,
                  batch_timeout_s=endpoint.timeout_s + HUNG_AFTER_S)
    with log_root(run) as logs:
        try:
            run.create(dump_spec(spec), point.session.started_at, point.session.sweep_id)
            served = serve(point, target, len(prompts), logs, shape)
        except KeyboardInterrupt:
            why = "; clients stopped; a LoadGen run cannot be resumed (submit the job again)"
            raise RunInterrupted(run.run_id, False, point.store.shown_uri, why=why) from None
        finally:
            pool.shutdown()
        keep_logs(run, logs)
        write_tables(run, spec, served, len(prompts))
    point.timeline.mark("loadgen_done")
    row = _row(point, served, target, pool, len(prompts), prompts_seconds, clients_seconds)
    run.write_records("requests.parquet", requests_table(served.head.requests))
    from orchestrator.views.endpoint_view import endpoint_markdown

    timeline = store_row(point, row, endpoint_markdown([row]))
    return RunResult(run.run_id, row, run.path, [], [], [], timeline=timeline)


def _row(point: Point, served: Served, target: EndpointPlaces, pool: ClientPool, examples: int,
         prompts_seconds: float, clients_seconds: float) -> MetricsRow:
    """The endpoint's identity, LoadGen's columns, the requests' figures; one verdict over LoadGen's
    rule set, the requests' and the incidents every row is judged on (a client actor lost)."""
    spec: EndpointJob = point.spec
    head, slo, rules = served.head, slo_of(spec), spec.verdict.rules(0.0)
    figures = figures_of(spec, served, examples, target.hand_over)
    requests, schedule = request_figures(head.requests, slo), schedule_figures([head.requests])
    versions = {"python": platform.python_version()}
    if not point.in_process:
        import ray

        versions["ray"] = ray.__version__
    nodes = [p.node for p in pool.places]
    lost = tuple(f"client {c} on {nodes[c]}: {why}" for c, why in sorted(target.lost.items()))
    row = MetricsRow(**{
        **identity_columns(spec, point.run_id, point.session.sweep_id, spec.clients, len(set(nodes)), versions),
        "load": "loadgen", "retries": sum(len(t.failed) for t in served.tests),
        "e2e_time": point.session.e2e_seconds(), "examples": examples, "load_time": clients_seconds,
        "data_time": prompts_seconds, "repeats": 1, "ray_start_time": point.ray_start_seconds,
        **request_columns(requests, slo), **schedule_columns(schedule), **scenario_columns(figures),
        "endpoint_url": ",".join(spec.endpoint.url), "endpoint_api": spec.endpoint.api, "clients": spec.clients,
        "client_nodes": ",".join(sorted(set(nodes))), "warmup_requests": sum(served.warmed),
    })
    measured = VerdictFigures(measured_seconds=requests.duration_s, measured_batches=0, latency_cv=None, acc_gap=None,
                              workers_lost=lost)
    verdict = evaluate(measured, rules, [loadgen_rules(figures),
                                         served_request_rules(requests, head.requests, target.size, rules)])
    return row.model_copy(update={"verdict": verdict.label, "verdict_reasons": verdict.reasons_text,
                                  "verdict_profile": verdict.profile})
