"""The Engine protocol (one inference runtime) and its lazy registry.

An engine is built once per actor from the torch model and the task's input signature, then called
once per batch. The pass loop (workers/shard/passes.py) does all timing, so engines never time themselves:
`to_device` is the host-to-device copy, `forward` is the core call, and its output is logits as a
torch tensor (on the device where possible, so scoring reduces them there). `forward_at` is the
core call of a task that reads one position per row (MMLU: each prompt's last token): the logits
there alone, (rows, vocab). By default an engine computes every position and picks those; the
eager engine computes the LM head at those positions only (`head_at_read_positions`): on
SmolLM2-135M the head is a fifth of the forward pass's FLOPs, on a 7B model 2 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from workers.contract import BuildInfo, ShardTask
from workers.errors import UserError
from workers.registry import resolve
from workers.specs import Registered


class BuildFailed(UserError):
    """An engine build failed: one line for the user, the builder's log in `detail`.

    `workers.actor.classify` copies `detail` into the WorkerError and the driver writes it to the
    run folder (`build-w<N>.log`), so the log survives without flooding the terminal.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass
class BuildContext:
    """What an engine may use to build itself. `model()` loads the torch model on first call."""

    model: Callable[[], torch.nn.Module]
    model_files_hash: Callable[[], str]
    config: Any
    signature: Any
    sample_inputs: Callable[[int, int], dict[str, torch.Tensor]]
    bs: int
    seq_len: int
    precision: str
    device: torch.device
    cache_dir: Path
    causal: bool
    opt_seq_len: int | None = None  # the prepared data's median length (Task.median_length); None: seq_len
    worker_id: int = 0  # which worker builds it (the synthetic engine's fault injection reads it)
    # the task's batches vary in length (mmlu), not only in rows (masked_lm: False); a context that does
    # not say is taken to vary, the safe side (a symbolic length costs speed, a static one recompiles)
    variable_length: bool = True
    model_spec: Any = None  # the job's ModelSpec: an engine that loads the weights itself (vLLM) reads where from


class Engine(Protocol):
    name: str
    runs_model: bool  # False for engines that only wait (synthetic): no model FLOPs, so no MFU
    # True: forward_at computes the LM head at the positions asked for only (the FLOPs count it there)
    head_at_read_positions: bool

    def build(self, ctx: BuildContext) -> BuildInfo: ...

    def to_device(self, inputs: dict[str, torch.Tensor]) -> Any: ...

    def forward(self, device_inputs: Any) -> torch.Tensor: ...

    def forward_at(self, device_inputs: Any, positions: list[int]) -> torch.Tensor: ...

    def warmup_rows(self, bs: int) -> int: ...

    def before_shard(self, shard: ShardTask) -> None: ...

    def close(self) -> None: ...


def call_kwargs(causal: bool) -> dict[str, Any]:
    """Keyword arguments every engine gives the model call, so that every engine times the same work.

    Causal LMs get `use_cache=False`: one forward pass per prompt needs no KV cache, and building
    one costs time inside the core timer and device memory (about 2 GiB for a 7B model at 4,096
    tokens). Eager, torch.compile and the ONNX export (hence TensorRT) all call the model this way.
    """
    return {"use_cache": False} if causal else {}


class EngineBase:
    """Defaults most engines share: inputs copied to the engine's device, nothing to release."""

    name = "base"
    device = torch.device("cpu")
    runs_model = True
    thread_bound = False  # True: only the thread that built it may run it (torch.compile's CUDA graphs, old torch)
    head_at_read_positions = False
    always_loads_model = False  # True: build() loads the torch model every time (eager, torch.compile), never from a cache

    def to_device(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}

    def forward(self, device_inputs: Any) -> torch.Tensor:
        raise NotImplementedError

    def warmup_rows(self, bs: int) -> int:
        """Rows of a warm-up batch: bs, so that whatever an engine builds or tunes per batch shape
        (a compiled graph, a profile's context, an arena) is built before the timed batches."""
        return bs

    def forward_at(self, device_inputs: Any, positions: list[int]) -> torch.Tensor:
        """Every position's logits (`forward`), then row i's at positions[i]: (rows, vocab)."""
        logits = self.forward(device_inputs)
        rows = torch.arange(len(positions), device=logits.device)
        return logits[rows, torch.tensor(positions, device=logits.device)]

    def before_shard(self, shard: ShardTask) -> None:
        return None

    def close(self) -> None:
        return None


class EngineStream:
    """A CUDA stream an engine library runs on, ordered with torch's current stream both ways.

    Libraries should not run on the legacy default stream that torch uses unless told otherwise
    (handle 0): TensorRT then adds device-wide synchronisations and ONNX Runtime rejects it. Work
    on this stream starts after what torch queued (the input copies) and torch's later work (the
    timer's end event, scoring) waits for it, so core time still covers the whole execution.
    Inputs are recorded on this stream so torch's allocator never reuses their memory early.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.handle: int = self.stream.cuda_stream

    def begin(self, tensors: Any) -> None:
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        for tensor in tensors:
            tensor.record_stream(self.stream)

    def end(self) -> None:
        torch.cuda.current_stream(self.device).wait_stream(self.stream)


def engine_class(options: Registered) -> type:
    """The Engine class the job's `engine:` options name (workers/specs.py holds the registry)."""
    return resolve("engine", options)
