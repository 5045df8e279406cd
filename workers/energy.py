"""Energy a worker's GPU used over each measured pass, from NVML's total-energy counter.

`nvmlDeviceGetTotalEnergyConsumption` gives millijoules since the driver was loaded (Volta and
later GPUs). It is read just before and just after each shard's pass, so a shard's energy covers
the same span as its wall time; the shard keeps both readings under its device's name
(`ShardResult.energy_counters`), and the merge turns them into `energy_per_item` and `mean_power`
(orchestrator/metrics/merge.py), counting each physical GPU once even where two workers share it
(their overlapping spans read the same counter). The counter is the whole device's: another
process on the same GPU adds its energy. Where there is no counter (a CPU, no NVML, a GPU before
Volta) the figures are blank with the reason.
"""

from __future__ import annotations

from typing import Any

import torch

from workers.nvml import nvml_lookup

MJ = 1e-3  # joules per millijoule


class EnergyCounter:
    """One device's energy counter, or the reason there is none (`handle` None, `note` says why)."""

    def __init__(self, handle: Any, note: str = "", device_key: str = "") -> None:
        self.handle = handle
        self.note = note
        self.device_key = device_key  # the physical device (workers.contract.physical_device)

    @classmethod
    def for_device(cls, device: torch.device, device_key: str = "") -> EnergyCounter:
        if device.type != "cuda":
            return cls(None, "no energy counter on a CPU", device_key)
        found = nvml_lookup(device)
        note = "" if found.handle is not None else f"no NVML handle for the GPU's energy counter: {found.note}"
        return cls(found.handle, note, device_key)

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
