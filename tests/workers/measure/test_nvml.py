"""Finding the worker's GPU in NVML, through pynvml's real ctypes wrappers and a fake libnvidia-ml.

DGX/HGX servers put their GPUs on PCI buses 0x07, 0x0f, 0x47, ...: torch's `pci_bus_id` is that
bus number, an integer, and NVML takes a bus id *string*. The fake library (tests/fakes/fake_gpu.py)
checks the C arguments pynvml builds, so an integer passed where NVML reads a `char *` shows up as
the segmentation fault it would be.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.fakes.fake_gpu import FakeGpu, install
from workers.measure.device import MemoryProbe
from workers.measure.energy import EnergyCounter
from workers.measure.nvml import gpu_identity, nvml_lookup, process_memory

CUDA0 = torch.device("cuda:0")
GIB = 1 << 30
H100_UUID = "8b0b6d9e-2c3f-4a1e-9d7c-5b6a4f3e2d1c"


def dgx_gpus(bus: int = 0x07, domain: int = 0) -> list[FakeGpu]:
    """Two GPUs; the worker's is `bus`, and it holds 3 GiB for this process."""
    mine = FakeGpu(H100_UUID, bus=bus, domain=domain, processes=[(4242, GIB), (os.getpid(), 3 * GIB)],
                   energy_mj=[5_000_000, 5_250_000])
    other = FakeGpu("11111111-2222-3333-4444-555555555555", bus=0x0F, processes=[(4343, GIB)])
    return [other, mine]


@pytest.mark.parametrize("bus, domain", [(0x07, 0), (0x00, 0), (0x47, 0x0001)])
def test_the_gpu_is_found_for_memory_and_energy_wherever_its_bus_is(monkeypatch, bus, domain):
    """Before: bus 0x07 made pynvml read address 7 (a worker dying at setup), bus 0 failed quietly."""
    nvml = install(monkeypatch, dgx_gpus(bus, domain), visible=[1])  # Ray gave us the machine's second GPU
    probe = MemoryProbe(CUDA0)
    assert probe.sample() == 3 * GIB and probe.source == "nvml-process" and probe.note == ""
    counter = EnergyCounter.for_device(CUDA0)
    assert counter.note == ""
    assert counter.read_joules() == pytest.approx(5_000.0) and counter.read_joules() == pytest.approx(5_250.0)
    assert nvml.faults == []
    # by UUID first: what both torch and NVML name
    assert nvml.calls[:2] == ["nvmlInitWithFlags", "nvmlDeviceGetHandleByUUID"]
    assert nvml.lookups[0] == f"ByUUID(GPU-{H100_UUID})"


def test_the_full_bus_id_string_is_the_fallback(monkeypatch):
    gpus = dgx_gpus()
    install(monkeypatch, gpus, visible=[1])
    gpus[1].uuid = "99999999-9999-9999-9999-999999999999"  # NVML's list no longer has torch's UUID
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: dgx_gpus()[1].properties())
    assert gpu_identity(CUDA0).bus_id == "00000000:07:00.0"
    found = nvml_lookup(CUDA0)
    assert found.handle is not None and found.initialised


def test_a_gpu_nvml_does_not_list_says_so(monkeypatch):
    install(monkeypatch, [FakeGpu("11111111-2222-3333-4444-555555555555", bus=0x0F)])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: dgx_gpus()[1].properties())
    found = nvml_lookup(CUDA0)
    assert found.handle is None and found.initialised
    assert found.note.startswith("NVML has no GPU named like torch's NVIDIA H100 80GB HBM3 (GPU-8b0b6d9e")
    assert "00000000:07:00.0: Not Found" in found.note


def test_without_a_driver_nvml_is_not_there_and_that_is_not_an_error(monkeypatch):
    import pynvml

    monkeypatch.setattr(pynvml, "nvmlLib", None)
    no_library = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    monkeypatch.setattr(pynvml, "_LoadNvmlLibrary", lambda: pynvml._nvmlCheckReturn(no_library))
    found = nvml_lookup(CUDA0)
    assert (found.handle, found.initialised) == (None, False) and "NVML did not initialise" in found.note
    assert nvml_lookup(torch.device("cpu")).note == "no NVML on a CPU"


def test_a_container_that_hides_our_pid_is_named_and_mem_falls_back_to_torch(monkeypatch):
    gpus = dgx_gpus()
    gpus[1].processes = [(4242, GIB), (977, 3 * GIB)]  # the host's pids: ours is not among them
    install(monkeypatch, gpus, visible=[1])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 2 * GIB)
    probe = MemoryProbe(CUDA0)
    assert probe.sample() == 2 * GIB and probe.source == "torch-cuda-reserved-peak"
    assert probe.note.startswith("NVML lists 2 process(es) on this GPU but not this one")
    mine = process_memory(nvml_lookup(CUDA0).handle)
    assert mine.container and mine.used_bytes is None


def test_an_empty_process_list_is_not_the_container_case(monkeypatch):
    gpus = dgx_gpus()
    gpus[1].processes = []
    install(monkeypatch, gpus, visible=[1])
    mine = process_memory(nvml_lookup(CUDA0).handle)
    assert not mine.container and mine.note.startswith("NVML lists no compute process on this GPU")


PCI_FIELDS = ("pci_domain_id", "pci_bus_id", "pci_device_id")


@pytest.mark.parametrize("missing, found_by", [(PCI_FIELDS, "UUID"), (("uuid", *PCI_FIELDS), None)])
def test_a_torch_without_the_pci_fields_falls_back_with_a_note(monkeypatch, missing, found_by):
    """Before: `gpu_identity` read `props.pci_domain_id` unguarded inside the lookup, and every GPU
    worker failed setup (MemoryProbe, EnergyCounter and DeviceWatch all look the GPU up)."""
    from tests.fakes.fake_gpu import older_torch

    gpus = dgx_gpus()
    install(monkeypatch, gpus, visible=[1])
    older = older_torch(gpus[1].properties(), *missing)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: older)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 2 * GIB)
    found = nvml_lookup(CUDA0)
    probe = MemoryProbe(CUDA0)
    if found_by == "UUID":
        assert found.handle is not None and probe.sample() == 3 * GIB and gpu_identity(CUDA0).bus_id == ""
    else:
        assert found.handle is None and found.initialised
        assert found.note.startswith("torch ") and "gives no UUID or PCI bus id for NVIDIA H100" in found.note
        assert probe.sample() == 2 * GIB and probe.source == "torch-cuda-reserved-peak" and probe.note == found.note
        assert EnergyCounter.for_device(CUDA0).note.endswith(found.note)
