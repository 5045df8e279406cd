"""A running server as LoadGen's Target (orchestrator/targets/endpoint_places.py), against the mock of
known behaviour: places are clients x slots, place p on client p mod clients; a batch's events (each
request's first chunk, then its end with the answer's text) come on one thread as they happen, and
its counts resolve the future; pings answer at once, also while the client streams; a client actor
that died is a death, its pings fail and the target names it lost."""

import json
import threading
import time

import pytest

from tests.fakes.openai_server import serve
from workers.contract import SampleBatch

pytestmark = pytest.mark.slow  # a mock server process (and, for the actors, Ray)

TEXT = "".join(f" t{i}" for i in range(16))


def places(url: str, in_process: bool, clients: int = 2, slots: int = 2):
    from orchestrator.spec import validate
    from orchestrator.targets.endpoint import ClientPool
    from orchestrator.targets.endpoint_places import EndpointPlaces
    from workers.stream_client import StreamClient, StreamSettings

    spec = validate({"name": "t", "endpoint": {"url": url, "model": "mock-model"}, "clients": clients,
                     "cpus_per_client": 0.1, "load": {"kind": "loadgen", "scenario": "server", "target_qps": 1},
                     "slots_per_client": slots}, "t")
    bodies = tuple(json.dumps({"model": "mock-model", "prompt": f"p{i}", "max_tokens": 16, "stream": True,
                               "stream_options": {"include_usage": True}}).encode() for i in range(4))
    settings = StreamSettings(tuple(spec.endpoint.request_urls), spec.endpoint.headers(), bodies, (0,) * 4)
    pool = ClientPool(spec, "places-test", in_process, StreamClient, (settings,), concurrency=slots + 1)
    return pool, EndpointPlaces(pool, slots)


def listen():
    """An on_event that keeps (event, its thread, when)."""
    seen: list = []
    return seen, lambda event: seen.append((event, threading.get_ident(), time.perf_counter()))


@pytest.mark.parametrize("in_process", [True, False], ids=["in_process", "actors"])
def test_a_batch_streams_each_requests_first_chunk_and_end_on_one_thread(request, in_process):
    if not in_process:
        request.getfixturevalue("ray_local")
    with serve(ttft_ms=20, itl_ms=10) as url:
        pool, target = places(url, in_process)
        try:
            assert target.size == 4 and target.worker_of == [0, 1, 0, 1]
            seen, on_event = listen()
            sent = time.perf_counter()
            result = target.run(3, SampleBatch(7, (2, 0), "infer"), on_event).result(timeout=30)
            assert (result.examples, result.items, result.scored) == (2, 32, 2)  # 16 tokens each, from usage
            assert len({thread for _, thread, _ in seen}) == 1
            for row in (0, 1):
                kinds = [e for e, _, _ in seen if e[1] == row]
                assert [k[0] for k in kinds] == ["first", "done"]
                _, _, text, gaps, _, tokens, error = kinds[1]
                assert text.decode() == TEXT and tokens == 16 and error is None and len(gaps) == 16
                assert gaps[-1] == pytest.approx(0.150, abs=0.02)  # 15 gaps of the mock's 10 ms
                first_at = next(t for e, _, t in seen if e[1] == row and e[0] == "first")
                assert first_at - sent < 0.120  # the first chunk arrived long before the 170 ms answer ended
            assert target.ping(2).result(timeout=5) == 0 and target.ping(3).result(timeout=5) == 1
        finally:
            target.close()
            pool.shutdown()


def test_pings_answer_while_the_client_streams_and_a_dead_client_is_a_death(ray_local):
    import ray

    with serve(ttft_ms=20, itl_ms=100) as url:  # each answer streams for 1.5 s
        pool, target = places(url, in_process=False)
        try:
            streaming = target.run(0, SampleBatch(1, (0,), "infer"), listen()[1])
            time.sleep(0.3)
            started = time.perf_counter()
            assert target.ping(2).result(timeout=5) == 0 and time.perf_counter() - started < 0.5
            ray.kill(pool.clients[0], no_restart=True)
            with pytest.raises(Exception) as died:
                streaming.result(timeout=30)
            assert target.is_death(died.value)
            with pytest.raises(Exception) as again:
                target.run(2, SampleBatch(2, (1,), "infer")).result(timeout=30)
            assert target.is_death(again.value)
            with pytest.raises(Exception):
                target.ping(0).result(timeout=30)
            target.forget(0, "died")
            assert target.lost == {0: "died"}
            assert target.ping(1).result(timeout=5) == 1  # the other client is alive
            assert target.run(1, SampleBatch(3, (1,), "infer")).result(timeout=30).examples == 1
        finally:
            target.close()
            pool.shutdown()
