"""The run's dataset: prepared once, where the data is, and handed to every worker by reference.

Under Ray the preparation (`workers.data.dataprep.prepare_dataset`) is a Ray task with two results: a
small `DataInfo` the driver reads (size, fingerprint, per-example costs for the plan) and the big
table, which the driver never fetches: the workers get its reference and map the object store's
copy on their node (read-only, shared by every worker there). Placement:
- data the driver can see (a path that exists here, or synthetic data): one task on the driver's
  node; Ray copies the object to the other nodes once each, as their workers ask for it;
- a path that exists only on the nodes (node-local data): one task on each node that has workers,
  and the fingerprints of those preparations must agree.
The task asks for no CPU (like the weight prefetch), so it never waits behind the workers'
reservations, and its process exits when it is done (`max_calls=1`): a tokenizer's peak memory
goes with it. With --no-ray the same function runs in the command's own process.
Preparations are kept for the whole grid point, so repeats (fresh workers) reuse them.
A worker that Ray restarts on another node (its node was lost) is handed that node's preparation
(`handles` starts one there for node-local data): the dead node's object cannot be rebuilt, since
its task may only run on that node. Each preparation's small `DataInfo` is read once and kept, so
it stays readable after its node is gone.

Data that needs no tokenising (synthetic data, or a table the driver's node has in its data cache,
`dataprep.cached_here`) is not worth a process of its own: a new Ray worker process imports torch
and transformers before it runs anything (seconds; 7-14 s on a 2-core node), and on a warm cluster
the first worker actor is already such a process. So the first worker (on the driver's node, for a
cache hit) prepares it, as `BenchWorker.prepare_data`, before its own setup; the table is that
call's return value, owned by the driver like the task's, and the other workers map it as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from workers.contract import DataHandle, DataInfo
from workers.data.dataprep import cached_here
from workers.errors import RunFailed, UserError, first_line
from workers.specs import WorkerConfig

LOCAL = "local"
log = logging.getLogger(__name__)


class Dataset(Protocol):
    def handles(self, nodes: list[str], workers: list[Any] | None = None) -> list[DataHandle]:
        """One handle per worker, for workers placed on `nodes` (in worker order); `workers`, the
        actors themselves where they exist already, may be asked to prepare the data."""

    def infos(self) -> list[DataInfo]:
        """Every preparation so far (waits for them); raises a preparation's user error."""


def check_preparations_agree(infos: list[DataInfo]) -> DataInfo:
    """Preparations on several nodes must have made the same dataset, or shards would differ."""
    prints = {(i.num_examples, i.fingerprint) for i in infos}
    if len(prints) > 1:
        where = ", ".join(f"{i.where}: {i.num_examples} examples, {i.fingerprint}" for i in infos)
        raise RunFailed(f"the nodes prepared different datasets ({where}): is data.path the same file on every node?")
    return infos[0]


class LocalDataset:
    """--no-ray: prepared in this process (through the same cache), handed over as the table itself."""

    def __init__(self, config: WorkerConfig) -> None:
        from workers.data.dataprep import prepare_dataset

        info, table = prepare_dataset(config)
        self._info = info
        self._handle = DataHandle(table)

    def handles(self, nodes: list[str], workers: list[Any] | None = None) -> list[DataHandle]:
        return [self._handle for _ in nodes]

    def infos(self) -> list[DataInfo]:
        return [self._info]


class RayDataset:
    """Preparation tasks on the cluster; their tables stay in the object store while this lives."""

    def __init__(self, config: WorkerConfig) -> None:
        import ray

        from workers.data.dataprep import prepare_dataset

        self._ray = ray
        self.config = config
        self._remote = ray.remote(num_cpus=0, num_returns=2, max_calls=1, max_retries=1)(prepare_dataset)
        self._on_nodes = config.data.path is not None and not _exists_here(config)
        self._tasks: dict[str, tuple[Any, Any]] = {}  # node id (or LOCAL) -> (info ref, table ref)
        self._here = ray.get_runtime_context().get_node_id()
        self.in_worker = not self._on_nodes and (config.data.synthetic is not None or cached_here(config))
        if not self._on_nodes and not self.in_worker:
            self._tasks[LOCAL] = self._submit(self._here)
        self._read: dict[str, DataInfo] = {}  # the infos read so far, by node
        self._by_worker = False  # the LOCAL preparation runs in a worker actor (`_in_a_worker`)

    def _submit(self, node_id: str) -> tuple[Any, Any]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
        return tuple(self._remote.options(scheduling_strategy=strategy).remote(self.config))

    def handles(self, nodes: list[str], workers: list[Any] | None = None) -> list[DataHandle]:
        if not self._on_nodes:
            if LOCAL not in self._tasks:
                self._tasks[LOCAL] = self._in_a_worker(nodes, workers)
            return [DataHandle(self._tasks[LOCAL][1]) for _ in nodes]
        for node in nodes:
            if node not in self._tasks:
                self._tasks[node] = self._submit(node)
        return [DataHandle(self._tasks[node][1]) for node in nodes]

    def _in_a_worker(self, nodes: list[str], workers: list[Any] | None) -> tuple[Any, Any]:
        """The first worker prepares it (any worker for synthetic data; one on the driver's node for
        a cache hit, since the cache checked is this node's); the task when there is none."""
        synthetic = self.config.data.synthetic is not None
        chosen = next((i for i, node in enumerate(nodes) if synthetic or node == self._here), None)
        if not workers or chosen is None:
            return self._submit(self._here)
        self._by_worker = True
        return tuple(workers[chosen].prepare_data.options(num_returns=2).remote())

    def infos(self) -> list[DataInfo]:
        ray = self._ray
        if not self._on_nodes and LOCAL not in self._tasks:  # asked before any worker exists: a task does it
            self._tasks[LOCAL] = self._submit(self._here)
        infos = []
        for node, (info, _) in self._tasks.items():
            try:
                if node not in self._read:
                    self._read[node] = self._read_info(node, info)
                infos.append(self._read[node])
            except ray.exceptions.RayError as exc:
                where = "" if node == LOCAL else f" [node {_address(node)}]"
                cause = getattr(exc, "cause", None)
                if isinstance(cause, UserError):
                    raise UserError(f"{first_line(cause)}{where}") from exc
                raise RunFailed(f"preparing the data failed{where}: {first_line(exc)}") from exc
        return infos

    def _read_info(self, node: str, info: Any) -> DataInfo:
        """The preparation's info. A worker that died while it prepared the data (killed, its node
        lost) took the preparation with it: a task prepares it again, and the workers' handles
        (`handles`) name the new table from then on (RayPool.setup hands it to them)."""
        ray = self._ray
        try:
            return ray.get(info)
        except ray.exceptions.RayActorError as exc:
            if node != LOCAL or not self._by_worker:
                raise
            log.warning("the worker preparing the data died (%s): preparing it again in a task", first_line(exc))
            self._by_worker = False
            self._tasks[LOCAL] = self._submit(self._here)
            return ray.get(self._tasks[LOCAL][0])


def _exists_here(config: WorkerConfig) -> bool:
    """Whether the data path names a file on this machine (a `pkg:` path: in a package installed here)."""
    from workers.data.package_files import on_this_machine

    try:
        return Path(on_this_machine(config).data.path).expanduser().exists()
    except UserError:  # a pkg: path whose package is not installed here: it may be on the nodes
        return False


def _address(node_id: str) -> str:
    import ray

    return next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), node_id[:8])
