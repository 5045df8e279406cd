"""An endpoint job: named by its `endpoint:` key, no model or engine, its load checked as a whole, and
sweeps over its rate like any other field."""

import pytest

from orchestrator.spec import EndpointJob, EngineJob, validate
from workers.errors import UserError

SERVER = {"url": "http://127.0.0.1:8000", "model": "m"}


def test_the_endpoint_key_makes_an_endpoint_job_with_an_endpoint_load():
    spec = validate({"name": "e", "endpoint": SERVER}, "job.yaml")
    assert isinstance(spec, EndpointJob) and spec.load.kind == "endpoint" and spec.load.rate == 1.0
    assert spec.endpoint.url == ["http://127.0.0.1:8000"]
    assert spec.endpoint.request_urls == ["http://127.0.0.1:8000/v1/completions"]
    chat = validate({"name": "e", "endpoint": {**SERVER, "api": "chat", "url": ["http://a:1/", "http://b:2"]}}, "j")
    assert chat.endpoint.request_urls == ["http://a:1/v1/chat/completions", "http://b:2/v1/chat/completions"]
    assert chat.endpoint.scrape_urls == ["http://a:1/metrics", "http://b:2/metrics"]


def test_a_rate_sweep_gives_one_full_job_per_rate():
    spec = validate({"name": "e", "endpoint": SERVER, "load": {"rate": 2, "requests": 50},
                     "sweep": {"load.rate": [1, 4, 16], "clients": [1, 2]}}, "job.yaml")
    points = spec.points()
    assert [(p.load.rate, p.clients) for p in points] == [(r, c) for r in (1, 4, 16) for c in (1, 2)]
    assert all(p.load.requests == 50 and not p.sweep for p in points)


@pytest.mark.parametrize("raw, said", [
    ({"sweep": {"bs": [1, 2]}}, "cannot sweep 'bs'; sweepable: load.rate"),
    ({"sweep": {"load.rate": [1, 0]}}, "(sweep point): load.rate: Input should be greater than 0"),
    ({"load": {"rate": 1, "mode": "find_peak"}}, "find_peak searches the highest rate that meets the slo"),
    ({"load": {"rate": 1, "mode": "find_peak"}, "slo": {"ttft_ms": 9}, "repeats": 2}, "repeats=2 is for performance"),
    ({"load": {"concurrency": 2}, "clients": 3}, "load.concurrency: 2 in flight cannot be split among 3 clients"),
    ({"load": {"concurrency": 2, "duration_s": 5}}, "duration_s is for an open loop"),
    ({"endpoint": {**SERVER, "url": "http://h:1/v1/completions"}}, "names an API path"),
    ({"endpoint": {**SERVER, "api_key_env": "sk-123abc"}}, "is not an environment variable's name"),
    ({"prompts": {"source": "text"}}, "prompts: path: source text reads a file"),
    ({"slo": {}}, "slo: give at least one of ttft_ms, tpot_ms, e2e_ms"),
    ({"model": "bert"}, "model: unknown field"),
])
def test_what_an_endpoint_job_cannot_be_is_one_line(raw, said):
    with pytest.raises(UserError) as caught:
        validate({"name": "e", "endpoint": SERVER, **raw}, "job.yaml")
    assert said in str(caught.value)


def test_an_engine_job_cannot_take_an_endpoint_load():
    with pytest.raises(UserError, match="load: kind endpoint sends requests to a running server"):
        validate({"name": "e", "model": "random:bert", "data": "synthetic", "load": {"kind": "endpoint", "rate": 1}},
                 "job.yaml")
    assert isinstance(validate({"name": "e", "model": "random:bert", "data": "synthetic"}, "j"), EngineJob)
