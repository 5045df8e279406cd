"""A mock OpenAI-compatible server of known behaviour, standing for vLLM / SGLang / transformers serve
where a test needs to know the truth: each streamed answer's first token comes `ttft_ms` after the
request arrived (plus its wait for a slot), then one token every `itl_ms`, `output_tokens` of them
(default: the request's max_tokens), and at most `capacity` answers stream at once (the rest wait,
first come first served, as a server's queue does). Times are kept to a fraction of a millisecond:
each event is scheduled from the request's arrival (no drift), and asyncio's millisecond sleep is
topped up by yielding until the event's time.

Like the real servers: /v1/completions and /v1/chat/completions stream server-sent events with a
final `usage` chunk when asked (`stream_options.include_usage`), then `data: [DONE]` (vLLM) or just
the end of the stream (`done: false`, as transformers serve); /v1/models lists `models`; a request
for another model is a 404 (vLLM's answer); a wrong or missing key is a 401 when `api_key` is set;
/metrics serves vLLM-named Prometheus gauges (running, waiting, KV-cache use) when `metrics` is on,
and the mock's own count of first tokens it sent more than 1 ms after their time
(`mock:late_first_tokens`: when the machine did not run the mock on time, its truth was not kept).

Run as its own process (`serve(...)` below), so its event loop never shares a GIL with the client
measured against it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

SPIN_S = 0.0012


@dataclass
class MockConfig:
    ttft_ms: float = 20.0
    itl_ms: float = 5.0
    output_tokens: int | None = None  # None: the request's max_tokens
    capacity: int = 1024  # answers streaming at once; more wait their turn
    models: list[str] = field(default_factory=lambda: ["mock-model"])
    api_key: str | None = None
    metrics: bool = False
    done: bool = True  # end with `data: [DONE]` (vLLM) or by closing the stream (transformers serve)
    usage: bool = True  # honour stream_options.include_usage


class MockServer:
    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.slots = asyncio.Semaphore(config.capacity)
        self.running = 0
        self.waiting = 0
        self.served = 0
        self.late_first_tokens = 0  # first tokens sent more than 1 ms after their time

    def app(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v1/completions", lambda r: self.answer(r, chat=False))
        app.router.add_post("/v1/chat/completions", lambda r: self.answer(r, chat=True))
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/health", lambda r: web.json_response({"status": "ok"}))
        if self.config.metrics:
            app.router.add_get("/metrics", self.prometheus)
        return app

    async def list_models(self, request):
        from aiohttp import web

        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.config.models]})

    async def prometheus(self, request):
        from aiohttp import web

        lines = []
        for name, kind, value in (("vllm:num_requests_running", "gauge", self.running),
                                  ("vllm:num_requests_waiting", "gauge", self.waiting),
                                  ("vllm:kv_cache_usage_perc", "gauge", self.running / self.config.capacity),
                                  ("vllm:request_success", "counter", self.served),
                                  ("mock:late_first_tokens", "counter", self.late_first_tokens)):
            lines += [f"# HELP {name} mock", f"# TYPE {name} {kind}",
                      f'{name}{"_total" if kind == "counter" else ""}{{model_name="{self.config.models[0]}"}} {value}']
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def answer(self, request, chat: bool):
        from aiohttp import web

        arrived = time.perf_counter()
        config = self.config
        if config.api_key is not None and request.headers.get("Authorization") != f"Bearer {config.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key",
                                                "type": "invalid_request_error"}}, status=401)
        body = await request.json()
        if body.get("model") not in config.models:
            return web.json_response({"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                                "type": "NotFoundError", "code": 404}}, status=404)
        tokens = config.output_tokens or int(body.get("max_tokens") or 16)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        self.waiting += 1
        queued = time.perf_counter()
        async with self.slots:
            self.waiting -= 1
            self.running += 1
            try:
                start = arrived + (time.perf_counter() - queued)  # the arrival, plus the wait for a slot
                await self._stream(response, body, tokens, chat, start)
            finally:
                self.running -= 1
                self.served += 1
        return response

    async def _stream(self, response, body: dict, tokens: int, chat: bool, start: float) -> None:
        config = self.config
        base = {"id": "mock", "object": "chat.completion.chunk" if chat else "text_completion", "created": 0,
                "model": body["model"]}

        def event(text: str | None, finish: str | None = None) -> bytes:
            choice = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = {"content": text} if text is not None else {}
            else:
                choice["text"] = text or ""
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode()

        for i in range(tokens):
            due = start + (config.ttft_ms + i * config.itl_ms) / 1e3
            await _until(due)
            if i == 0 and time.perf_counter() - due > 0.001:
                self.late_first_tokens += 1
            await response.write(event(f" t{i}"))
        await response.write(event(None, "length"))
        if config.usage and (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": len(str(body.get("prompt") or body.get("messages", "")).split()),
                     "completion_tokens": tokens}
            usage["total_tokens"] = usage["prompt_tokens"] + tokens
            await response.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        if config.done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()


async def _until(t: float) -> None:
    ahead = t - time.perf_counter()
    if ahead > SPIN_S:
        await asyncio.sleep(ahead - SPIN_S)
    while time.perf_counter() < t:
        await asyncio.sleep(0)


def main() -> None:
    from aiohttp import web

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", default="{}", help="MockConfig as JSON")
    parser.add_argument("--reuse-port", action="store_true", help="share the port with other processes")
    args = parser.parse_args()
    config = MockConfig(**json.loads(args.config))

    async def start() -> None:
        runner = web.AppRunner(MockServer(config).app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, backlog=4096, reuse_port=args.reuse_port or None)
        await site.start()
        port = runner.addresses[0][1]
        print(f"listening {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(start())


@contextlib.contextmanager
def serve(host: str = "127.0.0.1", processes: int = 1, **config) -> Iterator[str]:
    """The mock in its own process (or `processes` of them sharing one port, for load that one
    event loop cannot serve): yields its base URL (http://host:port); stopped by their pids.
    `capacity` and the metrics are each process's own."""
    cfg = MockConfig(**config)
    root = Path(__file__).resolve().parents[2]
    port = 0
    if processes > 1:
        import socket

        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    procs = []
    try:
        for _ in range(processes):
            args = ["--host", host, "--port", str(port), "--config", json.dumps(asdict(cfg))]
            procs.append(subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", *args,
                                           *(["--reuse-port"] if processes > 1 else [])],
                                          cwd=root, stdout=subprocess.PIPE, text=True, start_new_session=True,
                                          env={**os.environ, "PYTHONPATH": str(root)}))
            line = procs[-1].stdout.readline()
            if not line.startswith("listening"):
                raise RuntimeError(f"the mock server did not start: {line!r}")
            port = int(line.split()[1])
        yield f"http://{host}:{port}"
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
