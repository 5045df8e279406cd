"""One rank of a tensor-parallel worker: joining its group, and loading its slice of the model.

Heavy on purpose (torch, transformers): only worker processes import this module; the actor class
that calls it is `workers.rank.RankWorker`.

The group is a plain `torch.distributed` process group of `tp` processes on one node: NCCL when the
ranks have CUDA, gloo otherwise (CPU ranks, and Ray nodes that declare GPUs torch cannot see).
Rank 0 hosts the rendezvous (a TCP store on its node's loopback and a free port it picked: the
ranks share the node); every wait, joining included, is bounded by `parallel.timeout_s`, so a rank
that never comes fails the group in one line instead of hanging. A rank that dies while the others
wait in a collective is handled by the ranks' watches (workers/parallel/watch.py: rank 0's over its
followers, each follower's over rank 0), which call `abort_group`; so does every failure path
(`RankWorker._close_after_failure`), never `destroy_process_group`, which may wait on a hung peer.

The model is sharded by transformers' own tensor-parallel support, never by hand: weights from a
folder or the hub load with `from_pretrained(distributed_config=DistributedConfig(tp_plan="auto"))`,
each rank reading only its slice. Random weights (`model.random`) are built whole under the job's
seed on every rank (the same numbers everywhere) and then sharded with the same transformers call
`from_pretrained` makes after building a model, `maybe_distribute_model`: `from_config` takes no
distributed options. Building whole first costs host memory (the full model per rank); real
weights do not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from workers.errors import UserError, first_line
from workers.models import AUTO_CLASSES, load_model
from workers.specs import ModelSpec


@dataclass(frozen=True)
class Rendezvous:
    """Where the ranks of one group meet: loopback on rank 0's node (which every rank shares) and a port
    rank 0 picked there.

    `generation` tells groups of the same worker apart: a rank asked to follow a shard of a group it
    did not join (it was restarted since) answers with an error instead of waiting in a collective.
    """

    address: str
    port: int
    world_size: int
    timeout_s: float
    generation: str
    gpu_ids: tuple[str, ...] = ()  # the GPU Ray gave each rank, in rank order; () for CPU ranks
    leader_pid: int | None = None  # rank 0's process, which its followers watch (same node)


class GroupJoinFailed(RuntimeError):
    """A rank could not join its group within the timeout (a peer never came, or is unreachable)."""


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def join_group(rendezvous: Rendezvous, rank: int, device: torch.device) -> None:
    """Initialise this process's default process group as `rank` of the group, bound to `device`.

    LOCAL_RANK is the index of `device` among the GPUs this process sees (`workers.rank` shows each
    rank its whole group's GPUs, in rank order, as torchrun and Ray Train do): transformers binds the
    model to `cuda:LOCAL_RANK`, and the timer and memory probes use the current device.
    """
    leave_group()
    local = device.index or 0
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(local), WORLD_SIZE=str(rendezvous.world_size),
                      MASTER_ADDR=rendezvous.address, MASTER_PORT=str(rendezvous.port))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = backend_for(device)
    try:
        dist.init_process_group(
            backend, init_method=f"tcp://{rendezvous.address}:{rendezvous.port}", rank=rank,
            world_size=rendezvous.world_size, timeout=timedelta(seconds=rendezvous.timeout_s),
            device_id=device if backend == "nccl" else None,
        )
    except (RuntimeError, dist.DistError) as exc:
        _forget_failed_group()
        raise GroupJoinFailed(
            f"rank {rank} of {rendezvous.world_size} could not join its group at {rendezvous.address}:"
            f"{rendezvous.port} within {rendezvous.timeout_s:g} s (parallel.timeout_s): {first_line(exc)}"
        ) from exc


def _forget_failed_group() -> None:
    """A failed `init_process_group` has still counted a group: the next one in this process would be
    named "1" while the restarted peers it must meet name theirs "0", and never meet. torch's own
    destroy and abort reset the count; a failed start needs the same."""
    from torch.distributed import distributed_c10d

    if not dist.is_initialized():
        distributed_c10d._world.group_count = 0


def leave_group() -> None:
    """Leave a healthy group (every rank done with it). After a failure use `abort_group`: destroying
    a communicator whose peer is gone or stuck may itself wait on it."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def abort_group() -> None:
    """Abort this process's communicators, from any thread, so that a collective waiting for a dead
    peer returns an error: torch's `_abort_process_group` (`ProcessGroup.abort`: ncclCommAbort on
    NCCL; `destroy_process_group` would itself wait on the hung communicator). The group is gone
    afterwards (`dist.is_initialized()` is False) and is formed again with `join_group`.

    gloo's abort (torch 2.13) does not wake a collective already waiting: there the peer's
    connection closing does, which is why the watch also has Ray restart a follower it finds failed.
    """
    if dist.is_available() and dist.is_initialized():
        from torch.distributed.distributed_c10d import _abort_process_group

        _abort_process_group()


def rank_identity() -> str:
    """'tp2-rank1' inside a group, '' otherwise: a rank holds a different slice of the weights, so
    artifacts built from them (compile caches) are keyed apart."""
    if not (dist.is_available() and dist.is_initialized()):
        return ""
    return f"tp{dist.get_world_size()}-rank{dist.get_rank()}"


def _auto_class(kind: str):
    import transformers

    return getattr(transformers, AUTO_CLASSES[kind])


def check_tp_plan(config, kind: str) -> None:
    """A model whose transformers class has no tensor-parallel plan cannot be sharded: one line naming it.

    The class is built on the meta device (no memory, no weights) to ask transformers itself.
    """
    import transformers

    with torch.device("meta"):
        model = _auto_class(kind).from_config(config)
    if not model.supports_tp_plan:
        raise UserError(f"parallel.tp: {type(model).__name__} has no tensor-parallel plan in transformers "
                        f"{transformers.__version__} (no base_model_tp_plan); run it with tp: 1")


def _distributed_config():
    try:
        from transformers.distributed import DistributedConfig
    except ImportError as exc:
        import transformers

        raise UserError(f"parallel.tp: tensor parallelism needs transformers' DistributedConfig (transformers 5); "
                        f"this node has {transformers.__version__}") from exc
    return DistributedConfig(tp_size=dist.get_world_size(), tp_plan="auto")


def load_sharded_model(spec: ModelSpec, config, kind: str, dtype: torch.dtype, device: torch.device,
                       seed: int) -> torch.nn.Module:
    """This rank's slice of the model, in eval mode on `device` (the group must be joined first)."""
    if not (dist.is_available() and dist.is_initialized()):
        raise UserError("parallel.tp: a sharded model needs its group of ranks (run it on Ray, not --no-ray)")
    check_tp_plan(config, kind)
    distributed = _distributed_config()
    if spec.random is None:
        return load_model(spec, config, kind, dtype, device, seed, distributed_config=distributed)
    whole = load_model(spec, config, kind, dtype, torch.device("cpu"), seed)
    distributed, _, mesh = type(whole).prepare_distribute_model(distributed)
    return type(whole).maybe_distribute_model(whole, distributed, mesh).to(device).eval()
