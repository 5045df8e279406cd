"""The client actor against a server it cannot fool itself about: server-sent events parsed as each
server sends them (canned streams), and a mock server of known latency for the timing and errors."""

import json
import socket
import time

import pytest

from tests.fakes.openai_server import serve
from workers.client import ClientPlan, ClientRequest, EndpointClient, EventStream
from workers.requests import RequestRecord


def events(*payloads) -> list[bytes]:
    """Each event's `data:` line, then the blank line that ends it."""
    encoded = [p if isinstance(p, bytes) else json.dumps(p).encode() for p in payloads]
    return [line for data in encoded for line in (b"data: " + data + b"\n", b"\n")]


def feed(lines: list[bytes], keep_text: bool = False) -> tuple[RequestRecord, dict]:
    rec, texts = RequestRecord(7, 0.0), {}
    stream = EventStream(rec)
    for t, line in enumerate(lines):
        if stream.line(line, float(t)):
            break
    stream.finish(keep_text, texts)
    return rec, texts


def test_a_completions_stream_gives_a_chunk_per_text_event_and_tokens_from_usage():
    """As transformers serve sends it: two tokens merged in one event, no [DONE], usage at the end."""
    rec, _ = feed(events({"choices": [{"index": 0, "text": " a"}]}, {"choices": [{"index": 0, "text": " b c"}]},
                         {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
                         {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}))
    assert rec.token_times_s == [0.0, 2.0]  # lines 0 and 2: the blank separators between events are skipped
    assert (rec.output_tokens, rec.input_tokens) == (3, 5) and rec.error is None


def test_a_chat_stream_reads_deltas_and_stops_at_done():
    lines = events({"choices": [{"delta": {"role": "assistant"}}]}, {"choices": [{"delta": {"content": "Hi"}}]},
                   b"[DONE]", {"choices": [{"delta": {"content": "after the end"}}]})
    rec, texts = feed(lines, keep_text=True)
    assert len(rec.token_times_s) == 1
    assert rec.output_tokens == 1 and texts == {7: "Hi"}  # no usage: the chunks, and the text for the tokenizer


def test_an_error_event_is_a_server_error():
    rec, _ = feed(events({"error": {"message": "out of KV cache", "code": 500}}))
    assert rec.error.kind == "server" and "out of KV cache" in rec.error.message


def plan(url: str, n: int, rate: float, lead: float = 0.3, **fields) -> ClientPlan:
    body = json.dumps({"model": "mock-model", "prompt": "hi", "max_tokens": 8, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    requests = tuple(ClientRequest(i, i / rate, body) for i in range(n))
    return ClientPlan((url + "/v1/completions",), {"Content-Type": "application/json"}, requests,
                      time.time() + lead, **fields)


@pytest.mark.slow
def test_every_request_is_recorded_on_the_shared_clock_with_its_tokens():
    with serve(ttft_ms=10, itl_ms=2) as url:
        run = EndpointClient(3).run(plan(url, 20, 50.0))
    assert [r.request_id for r in run.records] == list(range(20))
    for r in run.records:
        assert r.ok and r.output_tokens == 8 and len(r.token_times_s) == 8
        assert r.arrival_s == pytest.approx(r.request_id / 50.0)  # the scheduled send, exactly
        assert r.arrival_s <= r.sent_s < r.first_byte_s < r.token_times_s[0] <= r.end_s
        assert r.source.startswith("client 3@")
    assert run.wall_s > 20 / 50.0 and run.cpu_s > 0


@pytest.mark.slow
def test_errors_are_records_with_a_kind_never_dropped():
    with serve(ttft_ms=300, itl_ms=1, api_key="secret") as url:
        refused = EndpointClient(0).run(plan(url, 2, 100.0))
        slow = EndpointClient(0).run(_with_key(plan(url, 1, 100.0, timeout_s=0.1), "secret"))
    assert [r.error.kind for r in refused.records] == ["http_4xx", "http_4xx"]
    assert "HTTP 401" in refused.records[0].error.message and not refused.records[0].ok
    assert slow.records[0].error.kind == "timeout"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = EndpointClient(0).run(plan(f"http://127.0.0.1:{port}", 1, 100.0))
    assert gone.records[0].error.kind == "connection" and gone.records[0].end_s is not None


def _with_key(p: ClientPlan, key: str) -> ClientPlan:
    from dataclasses import replace

    return replace(p, headers={**p.headers, "Authorization": f"Bearer {key}"})


@pytest.mark.slow
def test_the_actual_send_is_when_the_request_went_on_the_wire_so_a_connection_limit_shows_as_lag():
    """max_connections 2 against answers of ~100 ms at 40 req/s: requests wait in the client for a
    connection. They went on the wire late: the wait is schedule lag, not the server's latency."""
    with serve(ttft_ms=100, itl_ms=1) as url:
        run = EndpointClient(0).run(plan(url, 24, 40.0, max_connections=2))
    assert all(r.ok for r in run.records)
    lags = sorted(r.sent_s - r.arrival_s for r in run.records)
    assert lags[-1] > 0.3  # the last ones waited for a connection for hundreds of ms
    from_sent = [r.token_times_s[0] - r.sent_s for r in run.records]
    assert max(from_sent) < 0.1 + 0.05  # from the actual send, each took the server's ~100 ms
