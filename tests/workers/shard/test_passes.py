"""The one timing loop (workers/shard/passes.py) with small engines that stand for what this machine lacks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.fakes.fake_gpu import FakeGpu, handle_of, install
from workers.contract import ShardResult, ShardTask
from workers.engines import EngineBase
from workers.measure.device import MemoryProbe
from workers.measure.energy import EnergyCounter
from workers.measure.timing import CoreTimer
from workers.shard.passes import run_pass
from workers.specs import DataSpec, MaskedLMTask
from workers.tasks.masked_lm import MaskedLM

VOCAB, SEQ, BS = 64, 16, 4


class Int32Engine(EngineBase):
    """Stands for TensorRT: its engine declares int32 ids, so `to_device` casts the int64 host ids."""

    def to_device(self, inputs):
        return {name: tensor.to(torch.int32) for name, tensor in inputs.items()}

    def forward(self, device_inputs):
        return torch.nn.functional.one_hot(device_inputs["input_ids"].long(), VOCAB).float()


class NumpyEngine(Int32Engine):
    """Stands for ONNX Runtime on a CPU: the engine takes numpy arrays."""

    def to_device(self, inputs):
        return {name: tensor.numpy() for name, tensor in inputs.items()}

    def forward(self, device_inputs):
        return torch.nn.functional.one_hot(torch.from_numpy(device_inputs["input_ids"]), VOCAB).float()


def task() -> MaskedLM:
    data = DataSpec(synthetic={"seed": 1, "size": 10})
    return MaskedLM(MaskedLM.prepare(MaskedLMTask(), data, None, SimpleNamespace(vocab_size=VOCAB), SEQ, seed=0))


def one_pass(engine, **probes) -> ShardResult:
    result = ShardResult(shard_id=0, pass_name="infer", attempt=1, worker_id=0, node_id="n", device_name="d", pid=0)
    cpu = torch.device("cpu")
    return run_pass(engine, task(), ShardTask(0, 0, 10, "infer"), BS, CoreTimer(cpu), MemoryProbe(cpu),
                    lambda n: 0.0, result, **probes)


def test_byte_per_batch_counts_the_tensors_the_engine_receives():
    assert one_pass(Int32Engine()).bytes_per_batch == BS * SEQ * 4  # int32 ids, not the host's int64
    assert one_pass(NumpyEngine()).bytes_per_batch == BS * SEQ * np.dtype(np.int64).itemsize


def test_energy_is_read_around_the_pass(monkeypatch):
    gpu = FakeGpu(energy_mj=[1_000_000, 1_002_500])  # mJ since the driver loaded, before and after
    nvml = install(monkeypatch, [gpu])
    result = one_pass(Int32Engine(), energy=EnergyCounter(handle_of(gpu)))
    assert result.energy_joules == pytest.approx(2.5) and result.energy_note == ""
    assert nvml.calls.count("nvmlDeviceGetTotalEnergyConsumption") == 2  # once before, once after


def test_no_energy_counter_leaves_a_reason(monkeypatch):
    gpu = FakeGpu(unsupported={"nvmlDeviceGetTotalEnergyConsumption"})  # a GPU before Volta, some VMs
    install(monkeypatch, [gpu])
    result = one_pass(Int32Engine(), energy=EnergyCounter(handle_of(gpu)))
    assert result.energy_joules is None and "no energy counter" in result.energy_note and "Not Supported" in result.energy_note
    cpu = one_pass(Int32Engine(), energy=EnergyCounter.for_device(torch.device("cpu")))
    assert cpu.energy_joules is None and cpu.energy_note == "no energy counter on a CPU"


class Recording(Int32Engine):
    """Records the rows of every batch it is called with."""

    def __init__(self, rows_to_warm: int | None = None) -> None:
        self.rows: list[int] = []
        self.rows_to_warm = rows_to_warm

    def forward(self, device_inputs):
        self.rows.append(device_inputs["input_ids"].shape[0])
        return super().forward(device_inputs)

    def warmup_rows(self, bs):
        return bs if self.rows_to_warm is None else self.rows_to_warm


def test_warm_up_batches_have_the_rows_the_engine_asks_for():
    from workers.shard.passes import warm_up

    cpu = torch.device("cpu")
    shaped, eager_like = Recording(), Recording(rows_to_warm=1)
    assert warm_up(shaped, task(), ShardTask(0, 0, 10, "infer"), BS, 4, CoreTimer(cpu)) == 4
    assert shaped.rows == [4, 4, 2, 4]  # the shard's batches from its start (10 = 4 + 4 + 2), then again
    assert warm_up(eager_like, task(), ShardTask(0, 0, 10, "infer"), BS, 2, CoreTimer(cpu)) == 2
    assert eager_like.rows == [1, 1]
    plan_given = Recording()
    warm_up(plan_given, task(), ShardTask(0, 0, 4, "infer", examples=(0, 1, 2, 3), warmup_examples=(9, 8)), BS, 1,
            CoreTimer(cpu))
    assert plan_given.rows == [2]  # the plan's warm-up examples, not the shard's


def test_the_eager_engine_warms_up_on_one_row():
    from workers.engines.torch_eager import TorchEager

    assert TorchEager().warmup_rows(32) == 1 and Int32Engine().warmup_rows(32) == 32
