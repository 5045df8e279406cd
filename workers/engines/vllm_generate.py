"""`engine: vllm` for the generate task on GPU nodes: vLLM's offline engine, stepped here.

vLLM has no CPU wheel, so it is imported inside `build`: a machine without it, or a worker without
a GPU, is refused in one line. Written to vLLM's documented offline API (`vllm.EngineArgs`,
`vllm.LLMEngine.from_engine_args`, `add_request(request_id, {"prompt_token_ids": ...},
SamplingParams)`, `step()` returning `RequestOutput`s whose `outputs[0].token_ids` grow by the step's
tokens, `has_unfinished_requests()`); `LLM.generate` would return only at the end, so no first
token could leave before the last. One thread owns the engine (it is not thread-safe): it takes new
requests from a queue between steps, steps while any is unfinished, and tells each request's new
tokens as the step that made them returns. Calls from several threads may overlap (LoadGen's
places): vLLM batches their requests continuously.

Greedy is `temperature=0`; `ignore_eos` is vLLM's own; a request that stops at EOS also names the
task's EOS ids (`stop_token_ids`). The reference for the correctness check is the request alone
through the same engine (on a GPU in fp16, kernels chosen by batch shape may round differently:
those requests are counted, `invariance_flips`). Tested at its boundary with a fake `vllm` module
(tests/workers/engines/test_vllm.py); it has not run against a real vLLM in this project.
"""

from __future__ import annotations

import itertools
import queue
from pathlib import Path
import threading
import time
from typing import Any, Callable, Sequence

from workers.contract import BuildInfo
from workers.engines import BuildContext
from workers.engines.generation import Generated, GenerationRequest, PendingCall, TokenSink
from workers.errors import UserError
from workers.specs import VllmOptions

DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "tf32": "float32"}


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise UserError("engine: vllm needs the Python package 'vllm', which is not installed: pip install "
                        "'raybench[vllm]' on GPU nodes (vLLM has no CPU wheel)") from exc
    return vllm


class Vllm:
    name = "vllm"
    continuous = True
    runs_model = True
    thread_bound = False

    def __init__(self, options: VllmOptions | None = None) -> None:
        self.options = options or VllmOptions()
        self.engine: Any = None
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._calls: dict[str, PendingCall] = {}
        self._ids = itertools.count()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def build(self, ctx: BuildContext) -> BuildInfo:
        if ctx.device.type != "cuda":
            raise UserError(f"engine: vllm runs on NVIDIA GPUs; this worker has none ({ctx.device}): use engine "
                            "torch or continuous_batching on CPUs")
        vllm = _import_vllm()
        spec = ctx.model_spec
        if spec is None or spec.source is None:
            raise UserError("engine: vllm loads its weights itself from model.source (a hub id or folder); "
                            "model.random is for engines that take a torch model")
        self._vllm = vllm
        t0 = time.perf_counter()
        model = str(Path(spec.source) / spec.gguf_file) if spec.gguf_file else spec.source  # vLLM reads a .gguf file
        args = vllm.EngineArgs(
            model=model, tokenizer=spec.tokenizer or spec.source, revision=spec.revision,
            trust_remote_code=spec.trust_remote_code, dtype=DTYPES[ctx.precision], seed=0,
            gpu_memory_utilization=self.options.gpu_memory_utilization, enforce_eager=self.options.enforce_eager,
            max_model_len=ctx.seq_len, max_num_seqs=self.options.max_num_seqs or ctx.bs)
        self.engine = vllm.LLMEngine.from_engine_args(args)
        self._thread = threading.Thread(target=self._run, name="raybench-vllm-steps", daemon=True)
        self._thread.start()
        return BuildInfo(engine=self.name, build_seconds=time.perf_counter() - t0)

    def _params(self, request: GenerationRequest) -> Any:
        sampling = request.sampling
        extra = {"temperature": 0.0} if sampling is None else {
            "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k or -1,
            "seed": sampling.seed}
        return self._vllm.SamplingParams(max_tokens=request.max_new_tokens, ignore_eos=request.ignore_eos,
                                         stop_token_ids=[] if request.ignore_eos else list(request.eos_ids),
                                         detokenize=False, **extra)

    def generate(self, requests: Sequence[GenerationRequest], on_token: TokenSink,
                 clock: Callable[[], float] = time.perf_counter) -> list[Generated]:
        names = [f"r{r.request_id}-{next(self._ids)}" for r in requests]
        if not names:
            return []
        call = PendingCall(dict(zip(names, requests)), on_token, clock,
                     {n: Generated(r.request_id) for n, r in zip(names, requests)}, set(names))
        self._inbox.put(call)
        call.done.wait()
        if call.error is not None:
            raise RuntimeError(f"vllm: {call.error}")
        return [call.out[name] for name in names]

    def _run(self) -> None:
        """The engine's one thread: add what arrived, step while anything is unfinished."""
        while not self._stopping:
            try:
                block = not self.engine.has_unfinished_requests()
                self._add(self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait())
            except queue.Empty:
                pass
            try:
                while True:
                    self._add(self._inbox.get_nowait())
            except queue.Empty:
                pass
            if self.engine.has_unfinished_requests():
                try:
                    outputs = self.engine.step()
                except Exception as exc:  # noqa: BLE001 - every waiting call fails with it, in one line
                    self._fail_all(f"step failed: {exc}")
                    continue
                now = time.perf_counter()
                for output in outputs:
                    self._deliver(output, now)

    def _add(self, call: PendingCall) -> None:
        for name, request in call.requests.items():
            self._calls[name] = call
            self.engine.add_request(name, {"prompt_token_ids": list(request.prompt_ids)}, self._params(request))

    def _deliver(self, output: Any, now: float) -> None:
        call = self._calls.get(output.request_id)
        if call is None:
            return
        request, made = call.requests[output.request_id], call.out[output.request_id]
        stamp = now if call.clock is time.perf_counter else call.clock()
        for token in list(output.outputs[0].token_ids)[len(made.token_ids):]:
            made.token_ids.append(int(token))
            call.on_token(request.request_id, int(token), stamp)
        if output.finished:
            made.finish_reason = "length" if len(made.token_ids) >= request.max_new_tokens else "eos"
            del self._calls[output.request_id]
            call.pending.discard(output.request_id)
            if not call.pending:
                call.done.set()

    def _fail_all(self, why: str) -> None:
        for name, call in list(self._calls.items()):
            call.error = why
            call.done.set()
            self.engine.abort_request(name)
        self._calls.clear()

    def reference(self, request: GenerationRequest) -> list[int]:
        """The request alone through the same engine (the correctness check's rerun)."""
        return self.generate([request], lambda *_: None)[0].token_ids

    def close(self) -> None:
        self._stopping = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.engine = None
