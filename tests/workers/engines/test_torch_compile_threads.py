"""torch.compile's CUDA graphs and LoadGen's direct lane (pytorch#123177).

Inductor keeps its CUDA graph trees per Python thread; a torch without the upstream fix asserts in
`cudagraph_trees.get_obj` on a thread that did not build them, which is what the lane's thread is.
The fix is detected from torch's own code: here the installed torch (2.13.0, fixed) and, at the
same place, `get_obj` as torch had it before the fix. An engine bound to its build thread is refused
in one line on any other thread: shown through a real lane (workers/lane_server.py) and a real runtime."""

from __future__ import annotations

import pytest
import torch
from torch._inductor import cudagraph_trees

from orchestrator.targets.lane_client import DirectLane, LaneFailed
from orchestrator.spec import validate
from tests.builders import job
from workers.actor import BenchWorker
from workers.contract import SampleBatch
from workers.engines import torch_compile
from workers.lane_server import LaneServer
from workers.specs import TorchCompileOptions


def get_obj_before_the_fix(local, attr_name):
    """torch/_inductor/cudagraph_trees.py `get_obj`, torch 2.4 to the 2.13 nightly of 2026-05-18."""
    if hasattr(local, attr_name):
        return getattr(local, attr_name)
    else:
        assert torch._C._is_key_in_tls(attr_name)
        return torch._C._get_obj_in_tls(attr_name)


@pytest.fixture
def torch_before_the_fix(monkeypatch):
    monkeypatch.setattr(cudagraph_trees, "get_obj", get_obj_before_the_fix)
    torch_compile.graphs_serve_any_thread.cache_clear()
    yield
    torch_compile.graphs_serve_any_thread.cache_clear()


def test_the_fix_is_read_from_torchs_own_code(torch_before_the_fix):
    import threading

    assert not torch_compile.graphs_serve_any_thread()
    failed = []  # what the old code does on a thread that did not build the graphs (the lane's)
    thread = threading.Thread(target=lambda: failed.append(_raises(lambda: cudagraph_trees.get_obj(
        cudagraph_trees.local, "tree_manager_containers"))))
    thread.start()
    thread.join()
    assert failed == [AssertionError]


def _raises(call) -> type | None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the type is the answer
        return type(exc)
    return None


def test_the_installed_torch_has_the_fix():
    torch_compile.graphs_serve_any_thread.cache_clear()
    assert torch_compile.graphs_serve_any_thread()  # torch 2.13.0: CUDA-graph engines may run on the lane


@pytest.mark.parametrize("options, device, bound", [
    ({"mode": "reduce-overhead"}, "cuda:0", True),
    ({"mode": "max-autotune"}, "cuda:0", True),
    ({"mode": "max-autotune-no-cudagraphs"}, "cuda:0", False),
    ({"mode": "default"}, "cuda:0", False),
    ({"mode": "reduce-overhead", "backend": "eager"}, "cuda:0", False),  # no inductor, no CUDA graphs
    ({"mode": "reduce-overhead"}, "cpu", False),  # inductor records no CUDA graph for CPU code
])
def test_which_engines_are_bound_to_their_build_thread(torch_before_the_fix, options, device, bound):
    assert torch_compile.needs_its_thread(TorchCompileOptions(**options), torch.device(device)) is bound


def test_a_thread_bound_engine_is_refused_on_the_lane_in_one_line_and_runs_on_its_own_thread(tmp_path):
    """The worker builds on its actor thread; LoadGen's direct lane then warms and serves on another.
    The engine here is marked bound as `needs_its_thread` marks a GPU build under the old torch (a
    CPU build records no graphs); the warm-up over the lane fails in one line naming the ways out,
    and the same calls on the build thread (hand_over: actor_call) run."""
    engine = {"name": "torch_compile", "backend": "eager", "mode": "reduce-overhead"}
    config = validate(job(engine=engine, passes=["infer"], engine_cache=str(tmp_path)), "x").worker_config()
    worker = BenchWorker(config)
    assert worker.setup().error is None
    worker._runtime.engines["infer"].thread_bound = True
    server = LaneServer("127.0.0.1", b"k" * 32, {"warm_up": worker.warm_up, "run_samples": worker.run_samples})
    lane = DirectLane(server.address, b"k" * 32, 0)
    try:
        with pytest.raises(LaneFailed) as caught:
            lane.call("warm_up", "infer").result(timeout=60)
        batch = lane.run(SampleBatch(0, (0, 1), "infer")).result(timeout=60)
    finally:
        lane.close()
    message = str(caught.value)
    assert message.startswith("engine: torch.compile mode reduce-overhead keeps its CUDA graphs per thread and torch ")
    assert message.endswith("(pytorch#123177), as LoadGen's direct lane does: set load.hand_over: actor_call, or "
                            "mode max-autotune-no-cudagraphs, or use a torch with the fix")
    assert batch.error is not None and batch.error.message == message
    assert worker.warm_up("infer") > 0  # on the thread that built it
    assert worker.run_samples(SampleBatch(1, (0, 1), "infer")).error is None
    worker.close()
