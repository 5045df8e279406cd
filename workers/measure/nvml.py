"""NVML, the one place that finds the GPU torch calls `device` and asks NVML about it.

Torch and NVML number GPUs differently (CUDA_VISIBLE_DEVICES renumbers torch's; NVML sees every
GPU of the machine), so a GPU is matched by what both can name: its UUID, else its full PCI bus id.
Both are strings for NVML: `nvmlDeviceGetHandleByUUID(b"GPU-8b0b...")` and
`nvmlDeviceGetHandleByPciBusId(b"00000000:07:00.0")`; pynvml wraps the argument in a `c_char_p`,
so an integer there (torch's `pci_bus_id` is the bus number, 7 for bus 0x07) becomes a pointer to
address 7: NVML reads it and the process dies (SIGSEGV), or at bus 0 a NULL pointer fails quietly.

torch's `uuid` prints as `8b0b6d9e-...` (CUDA's format); NVML spells the same UUID `GPU-8b0b6d9e-...`
(and a MIG instance `MIG-...`). The bus id NVML prints is `%08x:%02x:%02x.0` of torch's
`pci_domain_id`, `pci_bus_id`, `pci_device_id` (function 0: a GPU is function 0 of its device).

`nvmlInit` raises where there is no NVIDIA driver (CPU machines): callers get `found.handle` None
and `found.note` saying why, never an exception.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

CONTAINER_NOTE = "NVML lists {n} process(es) on this GPU but not this one (pid {pid}): a container's own PID namespace"


@dataclass(frozen=True)
class GpuIdentity:
    """The names NVML knows a GPU by, read from torch's device properties."""

    uuid: str  # "GPU-8b0b6d9e-..." as NVML and nvidia-smi print it ("" when torch gives none)
    bus_id: str  # "00000000:07:00.0"
    name: str


def gpu_identity(device: torch.device) -> GpuIdentity:
    """The GPU's names; a field an older torch's properties lack leaves its name "" (never raises)."""
    props = torch.cuda.get_device_properties(device)
    raw = str(getattr(props, "uuid", "") or "")
    uuid = raw if not raw or raw.startswith(("GPU-", "MIG-")) else f"GPU-{raw}"
    pci = [getattr(props, f, None) for f in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    bus_id = "{:08x}:{:02x}:{:02x}.0".format(*pci) if None not in pci else ""
    return GpuIdentity(uuid, bus_id, getattr(props, "name", ""))


def gpu_uuid(device: torch.device) -> str:
    """The GPU's UUID ("" on a CPU): with the node, what tells physical devices apart in the merge."""
    if device.type != "cuda":
        return ""
    try:
        return gpu_identity(device).uuid
    except (RuntimeError, AttributeError, AssertionError):  # a torch without these fields: fall back in the merge
        return ""


def same_uuid(a: str, b: str) -> bool:
    """Whether two UUIDs name one device, whatever prefix ("GPU-", "MIG-") each was printed with."""
    def bare(u: str) -> str:
        return u.removeprefix("GPU-").removeprefix("MIG-").lower()

    return bare(a) == bare(b)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def assigned_uuids(ids: list[str]) -> list[str] | None:
    """NVML's UUID of each GPU id Ray assigned, in order; None where they cannot be known here.

    Ray's ids are the node's CUDA device indices (or UUIDs, where the node's own
    CUDA_VISIBLE_DEVICES lists UUIDs). NVML numbers GPUs in PCI bus order; CUDA's default order
    (FASTEST_FIRST) agrees on a node of one GPU model, whose ties go by bus id, and
    CUDA_DEVICE_ORDER=PCI_BUS_ID makes it agree everywhere. On a node that mixes models without
    that setting an index cannot be matched to NVML's: None (nothing to compare), never a false alarm.
    """
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no library: nothing to compare with
        return None
    try:
        if not all(i.startswith(("GPU-", "MIG-")) for i in ids):
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            models = {_text(pynvml.nvmlDeviceGetName(h)) for h in handles}
            if len(models) > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
                return None
        return [i if i.startswith(("GPU-", "MIG-"))
                else _text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(int(i)))) for i in ids]
    except (pynvml.NVMLError, ValueError):  # an id NVML does not know: the count check stands alone
        return None


def cuda_driver_version() -> tuple[int, int] | None:
    """(major, minor) of the newest CUDA the node's NVIDIA driver supports (NVML's
    `nvmlSystemGetCudaDriverVersion`: 12020 is 12.2, an r535 driver); None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetCudaDriverVersion()
    except Exception:  # noqa: BLE001 - no driver, no library: nothing to compare with
        return None
    return version // 1000, version % 1000 // 10


@dataclass(frozen=True)
class NvmlLookup:
    """The NVML handle of one GPU, or None and why (`initialised`: whether NVML itself came up)."""

    handle: Any
    initialised: bool
    note: str = ""


def nvml_lookup(device: torch.device) -> NvmlLookup:
    """Find `device` in NVML by UUID (also as a MIG instance), then by the full PCI bus id."""
    if device.type != "cuda":
        return NvmlLookup(None, False, "no NVML on a CPU")
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no driver, no library: NVML is simply not there
        return NvmlLookup(None, False, f"NVML did not initialise ({type(exc).__name__}: {exc})")
    gpu = gpu_identity(device)
    tried = []
    names = [(pynvml.nvmlDeviceGetHandleByUUID, gpu.uuid)]
    if gpu.uuid.startswith("GPU-"):
        names.append((pynvml.nvmlDeviceGetHandleByUUID, "MIG-" + gpu.uuid.removeprefix("GPU-")))
    names.append((pynvml.nvmlDeviceGetHandleByPciBusId, gpu.bus_id))
    for lookup, name in names:
        if not name:
            continue
        try:
            return NvmlLookup(lookup(name.encode()), True)
        except pynvml.NVMLError as exc:
            tried.append(f"{name}: {exc}")
    if not gpu.uuid and not gpu.bus_id:
        return NvmlLookup(None, True, f"torch {torch.__version__} gives no UUID or PCI bus id for {gpu.name}: "
                                      "NVML cannot be asked about it")
    return NvmlLookup(None, True, f"NVML has no GPU named like torch's {gpu.name} ({'; '.join(tried)})")


def nvml_handle(device: torch.device) -> Any:
    """NVML handle of the GPU torch calls `device`; None without a driver or a match (see nvml_lookup)."""
    return nvml_lookup(device).handle


@dataclass(frozen=True)
class ProcessMemory:
    """This process's memory on one GPU as NVML counts it, or None and why."""

    used_bytes: int | None
    note: str = ""
    container: bool = False  # the one cause NVML is not to blame for: others are listed, our pid is not


def process_memory(handle: Any, pid: int | None = None) -> ProcessMemory:
    """Bytes NVML lists for `pid` (default: this process) on the GPU of `handle`.

    Inside a container NVML may list the host's pids: then other processes are listed and ours is
    not. An empty list while we hold a CUDA context, or no figure for our pid, is NVML failing us.
    """
    import pynvml

    pid = os.getpid() if pid is None else pid
    try:
        processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except pynvml.NVMLError as exc:
        return ProcessMemory(None, f"NVML could not list the GPU's processes ({exc})")
    ours = [p for p in processes if p.pid == pid]
    if not ours:
        if processes:
            return ProcessMemory(None, CONTAINER_NOTE.format(n=len(processes), pid=pid), container=True)
        return ProcessMemory(None, f"NVML lists no compute process on this GPU, not even this one (pid {pid})")
    used = [p.usedGpuMemory for p in ours if p.usedGpuMemory is not None]
    if not used:
        return ProcessMemory(None, f"NVML lists this process (pid {pid}) without a memory figure")
    return ProcessMemory(sum(used))
