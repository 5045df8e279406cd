"""The null system under test: a fixed per-batch wait and deterministic outputs.

Like MLPerf LoadGen's null SUT, it measures the orchestrator, not a model: with the latency spent
sleeping, many workers share two cores without competing, and a failure can be timed to the batch.
The logits are one-hot at (token id x 7 + position) mod vocab: cheap, and identical on every run.
"""

from __future__ import annotations

import time

import torch

from workers.contract import BuildInfo, ShardTask
from workers.engines import BuildContext, EngineBase
from workers.specs import SyntheticEngineOptions


class InjectedFailure(RuntimeError):
    """Raised for shards listed in `fail_shards`, on workers listed in `fail_workers` and at the
    setup of workers listed in `fail_setup_workers`, to test bounded retries and dropping or taking
    out a bad worker."""


class FailureInjection:
    """The synthetic engines' build and per-shard hook: the failures the job's `engine.fail_*`
    options ask for (the forward-pass engine and the generator share them)."""

    name: str
    options: SyntheticEngineOptions
    vocab_size: int
    worker_id: int

    def build(self, ctx: BuildContext) -> BuildInfo:
        self.vocab_size = int(ctx.config.vocab_size)
        self.worker_id = ctx.worker_id
        if self.worker_id in self.options.fail_setup_workers:
            raise InjectedFailure(f"injected failure at setup on worker {self.worker_id} (engine.fail_setup_workers)")
        return BuildInfo(engine=self.name)

    def before_shard(self, shard: ShardTask) -> None:
        if self.worker_id in self.options.fail_workers:
            raise InjectedFailure(f"injected failure on worker {self.worker_id} (engine.fail_workers)")
        if shard.shard_id in self.options.fail_shards:
            raise InjectedFailure(f"injected failure on shard {shard.shard_id} (engine.fail_shards)")


class Synthetic(FailureInjection, EngineBase):
    name = "synthetic"
    runs_model = False

    def __init__(self, options: SyntheticEngineOptions) -> None:
        self.options = options
        self.vocab_size = 0
        self.worker_id = 0


    def forward(self, device_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        time.sleep(self.options.latency_ms / 1e3)
        ids = device_inputs["input_ids"]
        positions = torch.arange(ids.shape[1], device=ids.device)
        hot = (ids * 7 + positions) % self.vocab_size
        logits = torch.nn.functional.one_hot(hot, self.vocab_size).to(torch.float32)
        if self.options.batch_dependent:
            sign = 1.0 if ids.shape[0] % 2 == 0 else -1.0
            logits += sign * 1e-3 * torch.linspace(0.0, 1.0, self.vocab_size, device=ids.device)
        return logits
