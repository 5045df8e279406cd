"""Energy a worker's GPU used over each measured pass, from NVML's total-energy counter.

`nvmlDeviceGetTotalEnergyConsumption` gives millijoules since the driver was loaded (Volta and
later GPUs). It is read just before and just after each shard's pass, so a shard's energy covers
the same span as its wall time; the merge turns the shards' energy into `energy_per_item` and
`mean_power` (orchestrator/metrics/merge.py). The counter is the whole device's: another process
on the same GPU adds its energy, and two workers sharing one GPU would count it twice. Where
there is no counter (a CPU, no NVML, an older GPU) the figures are blank with the reason.
"""

from __future__ import annotations

from typing import Any

import torch

from workers.device import nvml_handle

MJ = 1e-3  # joules per millijoule


class EnergyCounter:
    """One device's energy counter, or the reason there is none (`handle` None, `note` says why)."""

    def __init__(self, handle: Any, note: str = "") -> None:
        self.handle = handle
        self.note = note

    @classmethod
    def for_device(cls, device: torch.device) -> EnergyCounter:
        if device.type != "cuda":
            return cls(None, "no energy counter on a CPU")
        handle = nvml_handle(device)
        return cls(handle, "" if handle is not None else "NVML is not available to read the GPU's energy counter")

    def read_joules(self) -> float | None:
        """Joules since the driver loaded; None (and a note) when the device has no counter."""
        if self.handle is None:
            return None
        import pynvml

        try:
            return pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) * MJ
        except pynvml.NVMLError as exc:  # NotSupported on GPUs before Volta, and in some VMs
            self.handle, self.note = None, f"NVML has no energy counter for this GPU ({exc})"
            return None


def energy_between(before: float | None, after: float | None) -> float | None:
    """Joules between two readings, None when either is missing."""
    return after - before if before is not None and after is not None else None
