"""torch.compile (inductor by default): compiled during build, so compile time is build time.

`build()` runs the compiled model on real sample inputs at every shape family the infer pass can
produce, so no compile lands in a timed batch:
- (bs, seq_len), with the axes the task varies marked dynamic (`dynamic` unset, the default): the
  batch axis, so that a shard's short last batch reuses the graph, and for variable-length work
  (mmlu) the sequence axis too, so that shorter prompts do; a fixed-length task's (masked_lm)
  sequence stays static, its kernels specialised for seq_len;
- (1, seq_len) when bs > 1, because torch specialises size-1 axes into a graph of their own; for
  variable-length work with its sequence axis marked dynamic too, else the first one-row batch of
  another length (routine under LoadGen, which sends 1..bs rows) would recompile inside its query.
`dynamic: false` compiles for (bs, seq_len) alone (static shapes, the fastest kernels when every
batch is full); any other shape then recompiles inside the pass. `dynamic: true` is torch's own.
Under LoadGen the worker also warms one batch of every size 1..bs before the first query
(`WorkerRuntime.warm`), which is what CUDA-graph modes (one graph per size) and `dynamic: false`
need there.

Threads: CUDA-graph modes on a GPU keep their graphs in thread-local state; a torch without the
upstream fix (pytorch#123177) cannot serve them from another thread, so such an engine is
`thread_bound` and the runtime refuses, in one line, to run it on a thread other than its build's
(LoadGen's direct lane): see `graphs_serve_any_thread` for how the fix is detected.

Cache: inductor keeps its caches per machine; the portable part (torch.compiler's cache
artifacts) is saved into the engine cache under the usual key. On a hit the artifacts are loaded
before compiling, which skips inductor's code generation but not tracing, so a hit still takes a
(shorter) compile: its `build_seconds` is that time, not 0, unlike engines that load a file.
"""

from __future__ import annotations

import functools
import inspect
import time
from pathlib import Path
from typing import Any

import torch

from workers.contract import BuildInfo
from workers.engines import BuildContext, EngineBase, call_kwargs
from workers.engines.cache import EngineCache, key_fields, shape_profile
from workers.engines.torch_eager import model_at
from workers.errors import UserError
from workers.specs import TorchCompileOptions

ARTIFACTS = "compile-artifacts.bin"
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # inductor's modes that record CUDA graphs


@functools.cache
def graphs_serve_any_thread() -> bool:
    """Whether this torch's CUDA graph trees work in a Python thread other than the one that set them up.

    Inductor keeps its CUDA graph tree managers in thread-local state. Before the upstream fix
    (pytorch#123177, fixed by PR #184357, June 2026), `cudagraph_trees.get_obj` asserted that the
    state existed in the calling thread (`assert torch._C._is_key_in_tls(attr_name)`), so graphs
    built on one thread failed with a bare AssertionError on another; the fix initialises the state
    there instead (`_initialize_tls`). Detected by reading that function's source, not the version
    (which release first shipped the fix could not be checked; torch 2.13.0 has it). Calling it
    from a probe thread would answer too, but leaves torch's thread-local state behind, and the
    interpreter then aborts at exit ("terminate called without an active exception", torch 2.13).
    A torch whose source cannot be read or says neither counts as unfixed: refused by default.
    """
    try:
        from torch._inductor import cudagraph_trees as trees

        source = inspect.getsource(trees.get_obj)
    except (ImportError, AttributeError, OSError, TypeError):
        return False
    return "_initialize_tls" in source and "assert" not in source


def needs_its_thread(options: TorchCompileOptions, device: torch.device) -> bool:
    """True when a compiled engine must be served on the thread that built it: CUDA graphs (inductor
    on a GPU, modes that record them) under a torch whose graph trees are per thread (above)."""
    return (device.type == "cuda" and options.backend == "inductor" and options.mode in CUDA_GRAPH_MODES
            and not graphs_serve_any_thread())


def mark_varying_axes(batch: dict[str, torch.Tensor], ctx: BuildContext) -> None:
    """Mark dynamic the axes the task's batches vary along: the batch axis always, the sequence axis
    only for variable-length work (mmlu). A fixed-length task's sequence is always seq_len, and a
    symbolic one would cost its kernels their specialisation for nothing. torch refuses to mark
    a size-1 axis dynamic, so those are left as they are."""
    for name, axes in ctx.signature.inputs.items():
        for axis, dim in axes.items():
            if (dim == "batch" or ctx.variable_length) and batch[name].shape[axis] > 1:
                torch._dynamo.mark_dynamic(batch[name], axis)


def warm_inputs(ctx: BuildContext, dynamic: bool | None) -> list[dict[str, torch.Tensor]]:
    """Sample batches that compile every graph the infer pass will need (module docstring)."""
    full = {k: v.to(ctx.device) for k, v in ctx.sample_inputs(ctx.bs, ctx.seq_len).items()}
    if dynamic is False:
        return [full]
    batches = [full]
    if ctx.bs > 1:
        batches.append({k: v.to(ctx.device) for k, v in ctx.sample_inputs(1, ctx.seq_len).items()})
    if dynamic is None:
        for batch in batches:
            mark_varying_axes(batch, ctx)
    return batches


class TorchCompile(EngineBase):
    name = "torch_compile"
    always_loads_model = True

    def __init__(self, options: TorchCompileOptions | None = None) -> None:
        self.options = options or TorchCompileOptions()
        self.compiled: Any = None
        self.extra: dict[str, Any] = {}

    def _compile(self, ctx: BuildContext) -> None:
        opts = self.options
        model = model_at(ctx.model(), ctx.precision)
        kwargs: dict[str, Any] = {"backend": opts.backend, "dynamic": opts.dynamic, "fullgraph": opts.fullgraph}
        if opts.backend == "inductor":
            kwargs["mode"] = opts.mode
        try:
            self.compiled = torch.compile(model, **kwargs)
        except torch._dynamo.exc.InvalidBackend as exc:
            known = ", ".join(torch._dynamo.list_backends())
            raise UserError(f"engine.backend: '{opts.backend}' is not a torch.compile backend (known: {known})") from exc
        self.extra = call_kwargs(ctx.causal)
        for batch in warm_inputs(ctx, opts.dynamic):
            self.forward(batch)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)

    def build(self, ctx: BuildContext) -> BuildInfo:
        self.device = ctx.device
        self.thread_bound = needs_its_thread(self.options, ctx.device)
        t0 = time.perf_counter()
        shapes = shape_profile(ctx.signature, ctx.bs, ctx.seq_len)
        fields = key_fields(ctx, self.name, self.options, {}, shapes=shapes)
        entry = EngineCache(ctx.cache_dir).get_or_build(self.name, fields, lambda out: self._compile_and_save(ctx, out))
        if entry.hit:
            saved = (entry.path / ARTIFACTS).read_bytes()
            if saved:
                torch.compiler.load_cache_artifacts(saved)
            self._compile(ctx)
        info = entry.build_info(self.name, time.perf_counter() - t0)
        info.build_seconds = time.perf_counter() - t0  # a hit still compiles (module docstring)
        return info

    def _compile_and_save(self, ctx: BuildContext, folder: Path) -> None:
        self._compile(ctx)
        saved = torch.compiler.save_cache_artifacts()  # None when the backend has nothing portable
        (folder / ARTIFACTS).write_bytes(saved[0] if saved is not None else b"")

    @torch.inference_mode()
    def forward(self, device_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.compiled(**device_inputs, **self.extra).logits

    def close(self) -> None:
        self.compiled = None

