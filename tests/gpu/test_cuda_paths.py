"""The code only a GPU runs: the CUDA branch of the core timer, the NVML probes (memory, energy),
EngineStream's ordering, ONNX Runtime's IO binding, the export's device memory. They run where
CUDA is present and are reported as skipped elsewhere (docs/BENCHMARKS.md lists them and says
where they have run).
"""

from __future__ import annotations

import time

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda:0")
GIB = 1 << 30


SPIN_CYCLES = 200_000_000  # about 0.1 s at the 1.4 to 2 GHz SM clocks of data-centre GPUs


def spin() -> None:
    """One kernel that keeps the GPU busy for SPIN_CYCLES clock cycles (torch's own test helper)."""
    torch.cuda._sleep(SPIN_CYCLES)


def test_core_timer_cuda_events_time_the_call_alone_and_agree_with_the_wall_clock():
    from workers.measure.timing import CoreTimer

    timer = CoreTimer(CUDA)
    assert timer.cuda
    timer.time(spin)  # warm: the first launch loads the kernel
    t0 = time.perf_counter()
    _, alone = timer.time(spin)
    wall = time.perf_counter() - t0
    assert 0.01 < alone <= wall and abs(1 - alone / wall) < 0.02, (alone, wall)
    spin()  # work queued before the call is not billed to it: the timer synchronises first
    _, behind = timer.time(spin)
    assert behind == pytest.approx(alone, rel=0.25)


def nvml_or_skip():
    """NVML's handle of cuda:0. Where NVML initialises, not finding the GPU is a failure."""
    from workers.measure.nvml import nvml_lookup

    found = nvml_lookup(CUDA)
    if not found.initialised:
        pytest.skip(f"NVML is not on this machine: {found.note}")
    assert found.handle is not None, found.note
    return found.handle


def test_nvml_finds_the_gpu_torch_uses():
    import pynvml

    from workers.measure.nvml import gpu_identity

    handle = nvml_or_skip()
    uuid = pynvml.nvmlDeviceGetUUID(handle)
    assert (uuid.decode() if isinstance(uuid, bytes) else uuid) == gpu_identity(CUDA).uuid


def test_nvml_memory_probe_sees_an_allocation():
    from workers.measure.device import MemoryProbe
    from workers.measure.nvml import process_memory

    handle = nvml_or_skip()
    torch.cuda.init()
    torch.empty(1, device=CUDA)  # a CUDA context, so that NVML lists this process
    mine = process_memory(handle)
    if mine.container:  # the one cause we accept: NVML lists the host's pids, not this container's
        pytest.skip(mine.note)
    probe = MemoryProbe(CUDA)
    before = probe.sample()
    block = torch.empty(GIB, dtype=torch.uint8, device=CUDA)
    after = probe.sample()
    assert probe.source == "nvml-process", probe.note
    assert after - before >= 0.99 * GIB, (probe.source, before, after)
    assert probe.total_bytes() == torch.cuda.get_device_properties(CUDA).total_memory
    del block


def test_energy_counter_reads_joules():
    from workers.measure.energy import EnergyCounter

    nvml_or_skip()
    major, minor = torch.cuda.get_device_capability(CUDA)
    if major < 7:
        pytest.skip(f"sm_{major}{minor} is older than Volta: NVML has no total-energy counter")
    counter = EnergyCounter.for_device(CUDA)
    first = counter.read_joules()
    assert first is not None, counter.note
    for _ in range(5):
        spin()
    torch.cuda.synchronize()
    assert counter.read_joules() >= first


def test_engine_stream_runs_after_torchs_work_and_before_its_next():
    from workers.engines import EngineStream

    stream = EngineStream(CUDA)
    assert stream.handle != 0  # never the legacy default stream
    x = torch.zeros(1 << 20, device=CUDA)
    spin()
    x.fill_(1.0)  # queued on torch's stream behind the sleep
    stream.begin([x])
    with torch.cuda.stream(stream.stream):
        y = x * 2
    stream.end()
    assert y.sum().item() == 2 * x.numel()  # the engine stream waited for the fill; torch waited for y


def test_peak_of_this_gpu_is_known_or_says_why():
    from workers.measure.peaks import peak_lookup

    name = torch.cuda.get_device_name(CUDA)
    looked = peak_lookup(name, "fp16")
    assert (looked.flops is not None and looked.label) or looked.reason, name


def test_export_adds_no_copy_of_the_weights_on_the_gpu(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.workers.engines.test_engines_llama import SIGNATURE, right_padded
    from workers.engines import BuildContext, onnx_export

    config = AutoConfig.for_model("llama", vocab_size=32000, hidden_size=512, intermediate_size=1024,
                                  num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.float16).to(CUDA).eval()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    ctx = BuildContext(model=lambda: model, model_files_hash=lambda: "gpu-export", config=config, signature=SIGNATURE,
                       sample_inputs=right_padded, bs=2, seq_len=16, precision="fp32", device=CUDA,
                       cache_dir=tmp_path, causal=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(CUDA)
    base = torch.cuda.memory_allocated(CUDA)
    onnx_export.exported_onnx(ctx, onnx_export.EngineCache(tmp_path), "fp32", 18)  # as TensorRT 10 asks
    assert torch.cuda.max_memory_allocated(CUDA) - base < 0.1 * weights


def test_onnxruntime_io_binding_matches_eager(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu)")
    from tests.builders import run_on, worker_runtime
    from tests.workers.engines.test_engines_bert import config, top1_agreement
    from workers.contract import ShardTask

    runtime, _ = worker_runtime(config(tmp_path, engine="onnxruntime"))
    try:
        engine = runtime.engines["infer"]
        assert engine.bound and engine.output_buffer.is_cuda
        assert top1_agreement(runtime) >= 0.99
        n = runtime.task.num_examples()
        result = run_on(runtime, ShardTask(0, 0, n, "infer"))
        assert result.items == n and result.bytes_per_batch > 0
    finally:
        runtime.close()


def test_measured_matmul_peak_is_a_fair_share_of_the_datasheet(tmp_path):
    """The measured fp16 matmul peak (workers/measure/matmul_peak.py) on this GPU: above 30 % of the datasheet's
    dense figure and not above it (a figure above means the timer or the FLOP count is wrong)."""
    from workers.measure import versions
    from workers.measure.matmul_peak import measured_peak
    from workers.measure.peaks import peak_flops

    measured = measured_peak(CUDA, "fp16", tmp_path, versions.collect())
    datasheet = peak_flops(torch.cuda.get_device_name(CUDA), "fp16")
    assert measured.flops and not measured.cache_hit, measured
    if datasheet is None:
        pytest.skip(f"no datasheet peak for {torch.cuda.get_device_name(CUDA)}; measured {measured.label}")
    assert 0.3 * datasheet < measured.flops <= 1.05 * datasheet, (measured.label, datasheet)


def test_device_watch_sees_this_process_busy_on_the_gpu():
    """Real NVML over a pass of spin kernels: clocks read, this process listed (or the reason it is not)."""
    from workers.measure.device_watch import DeviceWatch

    watch = DeviceWatch.for_device(CUDA)
    assert watch is not None, "NVML gave no handle for this GPU (workers.measure.device.nvml_handle)"
    try:
        watch.start()
        for _ in range(5):
            spin()
        torch.cuda.synchronize()
        health = watch.stop()
    finally:
        watch.close()
    assert health.samples >= 2 and health.sm_clock_mhz_min and health.sm_clock_mhz_min > 100, health
    assert health.temperature_c_max is not None and health.power_w_max, health
    assert health.other_pids is not None or "PID namespace" in health.note, health


def test_the_process_runs_on_the_gpus_it_was_given():
    """`require_assigned_gpu` against the real driver: CUDA_VISIBLE_DEVICES's ids (all GPUs when unset)
    stand for Ray's; the count and each cuda:i's UUID against NVML's must agree."""
    import os

    from workers.measure.device import require_assigned_gpu
    from workers.measure.nvml import assigned_uuids

    nvml_or_skip()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [
        str(i) for i in range(torch.cuda.device_count())]
    require_assigned_gpu(CUDA, ids)
    assert assigned_uuids(ids) is not None  # NVML named every id, so the UUIDs were compared


def test_the_measured_peak_is_steady_not_the_burst():
    """About a second of fp16 matmuls: the median of the later calls is at most the fastest call."""
    from workers.measure.matmul_peak import measure_matmul_flops

    found = measure_matmul_flops(CUDA, "fp16")
    assert 0.5 * found.burst_flops <= found.flops <= found.burst_flops, found
    assert found.seconds >= 1.0 and found.rounds >= 8, found


def test_the_peaks_key_names_this_gpu_and_its_settings():
    from workers.measure.matmul_peak import gpu_settings
    from workers.measure.nvml import gpu_uuid

    nvml_or_skip()
    settings = gpu_settings(CUDA)
    assert settings["uuid"] == gpu_uuid(CUDA) and settings["power_limit_mw"] and settings["max_sm_clock_mhz"], settings


def test_an_onnxruntime_cuda_session_has_cuda():
    """Needs onnxruntime-gpu: the provider check passes on a session whose CUDA libraries load."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from workers.engines.onnx_export import CPU, CUDA as CUDA_EP, ort_session

    if CUDA_EP not in ort.get_available_providers():
        pytest.skip("onnxruntime without its CUDA provider (the CPU package)")
    import tempfile
    from pathlib import Path

    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "x"], ["y"])], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 4])])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), path)
        session = ort_session(path, [(CUDA_EP, {"device_id": 0}), CPU])
    assert session.get_providers()[0] == CUDA_EP
