"""`cuda:0` is the GPU Ray assigned (workers/measure/device.py `require_assigned_gpu`), checked through
the fakes of tests/fakes/fake_gpu.py: torch's device properties (with their UUIDs) and device count for
what CUDA shows this process, NVML's handles by index (pynvml's real wrappers) for what Ray's ids
name. Ray's own answer, `ray.get_gpu_ids()`, is set as Ray sets it for an actor with GPUs."""

from __future__ import annotations

import pytest
import ray
import torch

from tests.fakes.fake_gpu import FakeGpu, install
from workers.errors import UserError
from workers.measure.device import FAKE_GPUS_ENV, require_assigned_gpu

CUDA0 = torch.device("cuda:0")


def node(models: tuple[str, ...] = ("NVIDIA H100 80GB HBM3",) * 4) -> list[FakeGpu]:
    """A node's GPUs in NVML's (PCI bus) order."""
    return [FakeGpu(f"5d6b0a1e-0000-0000-0000-00000000000{i}", bus=0x07 + 8 * i, name=name)
            for i, name in enumerate(models)]


@pytest.fixture
def ray_gave(monkeypatch):
    """Ray assigned this process the GPU ids given (as `ray.get_gpu_ids()` answers inside an actor)."""
    monkeypatch.delenv(FAKE_GPUS_ENV, raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)

    def give(*ids: int) -> None:
        monkeypatch.setattr(ray, "is_initialized", lambda: True)
        monkeypatch.setattr(ray, "get_gpu_ids", lambda: list(ids))

    return give


def test_the_gpu_ray_assigned_passes(monkeypatch, ray_gave):
    gpus = node()
    install(monkeypatch, gpus, visible=[2], cuda_runtime=True)  # CUDA_VISIBLE_DEVICES=2, as Ray sets it
    ray_gave(2)
    require_assigned_gpu(CUDA0)


def test_every_gpu_visible_is_refused_naming_the_likely_causes(monkeypatch, ray_gave):
    """RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES, or CUDA started before Ray narrowed the devices:
    the worker sees the node's four GPUs and would run on cuda:0, GPU 0, whatever Ray gave it."""
    install(monkeypatch, node(), cuda_runtime=True)
    ray_gave(2)
    with pytest.raises(UserError) as caught:
        require_assigned_gpu(CUDA0)
    message = str(caught.value)
    assert message.startswith("gpus_per_worker: Ray gave this worker GPU 2 on ")
    assert "torch sees 4 CUDA devices" in message
    assert "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES" in message and "RAY_preload_python_modules" in message
    assert "\n" not in message


def test_one_device_that_is_not_rays_gpu_is_refused_by_its_uuid(monkeypatch, ray_gave):
    """torch counts one device, but cuda:0 is the node's GPU 0 (CUDA was initialised before
    CUDA_VISIBLE_DEVICES was set): the UUIDs tell, NVML's of Ray's id 2 against torch's of cuda:0."""
    gpus = node()
    nvml = install(monkeypatch, gpus, visible=[0], cuda_runtime=True)
    ray_gave(2)
    with pytest.raises(UserError, match=r"^gpus_per_worker: Ray gave this worker GPU 2 on .* but cuda:0 is "
                                        rf"{gpus[0].nvml_uuid}, not GPU 2 \({gpus[2].nvml_uuid}\); likely causes"):
        require_assigned_gpu(CUDA0)
    assert "ByIndex(2)" in nvml.lookups and nvml.faults == []


def test_a_tensor_parallel_rank_checks_its_groups_gpus_in_rank_order(monkeypatch, ray_gave):
    """A rank sees its group's GPUs (CUDA_VISIBLE_DEVICES=1,3: workers/rank.py), so cuda:i must be the
    group's i-th GPU; the rank passes its group's ids, which the check takes instead of Ray's own."""
    from orchestrator.spec import validate
    from tests.builders import job
    from workers.rank import RankWorker

    gpus = node()
    ray_gave(3)  # the rank's own GPU; the group's are 1 and 3
    rank = RankWorker(validate(job(), "x").worker_config(), rank=1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    rank._see_group_gpus(("1", "3"))
    assert rank._assigned_gpus() == ["1", "3"]
    install(monkeypatch, gpus, visible=[1, 3], cuda_runtime=True)
    require_assigned_gpu(torch.device("cuda:1"), rank._assigned_gpus())
    install(monkeypatch, gpus, visible=[3, 1], cuda_runtime=True)
    with pytest.raises(UserError, match=r"but cuda:0 is .*0003, not GPU 1 \(.*0001\)"):
        require_assigned_gpu(torch.device("cuda:1"), rank._assigned_gpus())


def test_a_node_of_mixed_models_in_cudas_own_order_is_not_a_false_alarm(monkeypatch, ray_gave):
    """CUDA's default order puts the fastest GPU first; NVML's is the PCI bus order. On a node of
    mixed models Ray's id 0 is CUDA's H100 and NVML's A100: nothing to compare, no refusal (the
    count check still holds). With CUDA_DEVICE_ORDER=PCI_BUS_ID both orders agree and it is checked."""
    gpus = node(("NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"))
    install(monkeypatch, gpus, visible=[1], cuda_runtime=True)  # CUDA's device 0 (FASTEST_FIRST) is the H100
    ray_gave(0)
    require_assigned_gpu(CUDA0)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # now Ray's 0 is the A100, yet cuda:0 is the H100
    with pytest.raises(UserError, match="but cuda:0 is"):
        require_assigned_gpu(CUDA0)


def test_test_clusters_that_declare_gpus_they_lack_are_left_alone(monkeypatch, ray_gave):
    install(monkeypatch, node(), cuda_runtime=True)
    ray_gave(2)
    monkeypatch.setenv(FAKE_GPUS_ENV, "1")
    require_assigned_gpu(CUDA0)
