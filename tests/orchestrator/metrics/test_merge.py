"""Merge math on hand-made shard results whose every figure is worked out by hand below."""

import dataclasses

import pytest

from orchestrator.metrics.merge import completed, merge
from orchestrator.metrics.passes import driver_span
from orchestrator.spec import validate
from tests.builders import data_info, job
from workers.contract import BuildInfo, ShardResult, WorkerError, WorkerInfo

GIB = 1 << 30


def shard(pass_name, shard_id, worker, items, scored, correct, core, start, end, batches=(), attempt=1, flops=0.0,
          mem_gib=1.0, error=None):
    return ShardResult(
        shard_id=shard_id, pass_name=pass_name, attempt=attempt, worker_id=worker, node_id=f"node{worker}",
        device_name="NVIDIA A100-SXM4-40GB", pid=100 + worker, examples=items, items=items, scored=scored,
        correct=correct, flops=flops, core_seconds=core, wall_seconds=end - start, start_ts=start, end_ts=end,
        batch_core_seconds=list(batches), bytes_per_batch=4096, peak_mem_bytes=int(mem_gib * GIB),
        mem_total_bytes=40 * GIB, mem_source="nvml-process", error=error,
    )


def info(worker, peak=100e9):
    return WorkerInfo(
        worker_id=worker, node_id=f"node{worker}", hostname="h", pid=100 + worker, device="cuda:0",
        device_name="NVIDIA A100-SXM4-40GB", num_examples=60, dataset_fingerprint="f",
        load_seconds=3.0 + worker, data_seconds=1.0, build=BuildInfo("torch", build_seconds=2.0 * (worker + 1)),
        precision_effective="fp16", peak_flops=peak, mem_total_bytes=40 * GIB, item_unit="seq",
        versions={"torch": "2.13.0", "ray": "2.60.0", "transformers": "5.0", "python": "3.11"},
    )


RESULTS = [
    # val: w0 runs shards 0 and 2, w1 runs shard 1
    shard("val", 0, 0, 10, 20, 10, 1.0, 100, 102),
    shard("val", 1, 1, 30, 40, 30, 2.0, 101, 105),
    shard("val", 2, 0, 20, 40, 8, 1.0, 102, 104),
    # infer: shard 2 fails on w1 first (must not count), then completes on w0
    shard("infer", 0, 0, 10, 20, 9, 0.5, 110, 111, [0.25, 0.25], flops=10e9, mem_gib=2.0),
    shard("infer", 1, 1, 30, 40, 30, 1.0, 110, 112, [0.5, 0.5], flops=30e9, mem_gib=3.0),
    shard("infer", 2, 1, 20, 40, 40, 0.1, 110, 110.2, [0.1], flops=20e9, mem_gib=9.0,
          error=WorkerError("crash", "boom")),
    shard("infer", 2, 0, 20, 40, 10, 0.5, 111, 113, [0.25, 0.25], attempt=2, flops=20e9, mem_gib=2.0),
]


@pytest.fixture()
def row():
    spec = validate(job(precision="fp16", bs=4, acc_tolerance=0.005), "x")
    return merge(spec=spec, run_id="r", results=RESULTS, infos=[info(0), info(1)], data=[data_info(seconds=1.5)],
                 e2e_seconds=42.0, retries=1, item_unit="seq")


def test_accuracy_is_pooled_not_averaged(row):
    assert (row.scored_val, row.correct_val, row.acc_val) == (100, 48, 0.48)
    assert (row.scored_infer, row.correct_infer, row.acc_infer) == (100, 49, 0.49)
    assert row.acc == "0.4900/0.4800"
    assert row.acc_gap == pytest.approx(0.01)
    assert row.acc_flagged  # 0.01 > acc_tolerance 0.005


def test_core_throughput_sums_worker_rates(row):
    # val: w0 30 items / 2 s + w1 30 items / 2 s; infer: w0 30 / 1.0 s + w1 30 / 1.0 s
    assert row.p_val_core == pytest.approx(30.0)
    assert row.p_infer_core == pytest.approx(60.0)
    assert row.infer_time == pytest.approx(1 / 60)


def test_whole_throughput_spans_first_start_to_last_end(row):
    assert row.p_val_whole == pytest.approx(60 / (105 - 100))
    assert row.p_infer_whole == pytest.approx(60 / (113 - 110))


def test_mfu_mem_and_bytes(row):
    assert row.flops_per_item == pytest.approx(1e9)
    assert row.peak_flops == pytest.approx(200e9)
    assert row.MFU == pytest.approx(1e9 * 60 / 200e9)
    assert row.mem == pytest.approx(3.0)  # the failed attempt's 9 GiB is not counted
    assert row.mem_total == pytest.approx(40.0)
    assert row.byte_per_batch == 4096


def test_latency_percentiles_and_counts(row):
    assert row.latency_p50 == pytest.approx(0.25)
    assert row.latency_p90 == pytest.approx(0.5)
    assert row.latency_p99 == pytest.approx(0.5)
    assert row.latency_mean == pytest.approx(2.0 / 6)
    assert (row.items_val, row.items_infer, row.examples, row.shards) == (60, 60, 60, 3)
    assert row.measured_batches == 6
    assert (row.workers, row.nodes, row.devices) == (2, 2, "2x NVIDIA A100-SXM4-40GB")
    assert (row.load_time, row.build_time, row.e2e_time, row.retries) == (4.0, 4.0, 42.0, 1)
    assert row.torch_version == "2.13.0"


def test_unknown_peak_gives_no_mfu():
    spec = validate(job(), "x")
    row = merge(spec=spec, run_id="r", results=RESULTS, infos=[info(0), info(1, peak=None)], data=[data_info()],
                e2e_seconds=1.0, retries=0, item_unit="seq")
    assert row.MFU is None


def test_data_preparation_is_reported_once_with_its_cache_hit_and_where():
    spec = validate(job(), "x")
    once = merge(spec=spec, run_id="r", results=RESULTS, infos=[info(0), info(1)], data=[data_info(seconds=1.5)],
                 e2e_seconds=1.0, retries=0, item_unit="seq")
    assert (once.data_time, once.data_cache_hit, once.data_prepared_on) == (1.5, False, "127.0.0.2")
    per_node = [data_info(seconds=2.0, cache_hit=True, where="10.0.0.2"),
                data_info(seconds=0.5, cache_hit=False, where="10.0.0.1")]
    row = merge(spec=spec, run_id="r", results=RESULTS, infos=[info(0), info(1)], data=per_node, e2e_seconds=1.0,
                retries=0, item_unit="seq")
    assert (row.data_time, row.data_cache_hit, row.data_prepared_on) == (2.0, False, "10.0.0.1,10.0.0.2")
    synthetic = merge(spec=spec, run_id="r", results=RESULTS, infos=[info(0), info(1)],
                      data=[data_info(cache_hit=None, where="h")], e2e_seconds=1.0, retries=0, item_unit="seq")
    assert synthetic.data_cache_hit is None


def test_completed_keeps_one_result_per_shard():
    final = completed(RESULTS)
    assert len(final) == 6
    assert final[("infer", 0, 2)].attempt == 2


def test_warmup_batches_are_what_the_measured_passs_shards_ran():
    """Not the spec's `warmup` echoed: each worker warms up once per pass, in its first shard."""
    results = [dataclasses.replace(r, warmup_batches=3 if (r.pass_name, r.shard_id) in {("infer", 0), ("infer", 1)}
                                   else 0) for r in RESULTS]
    row = merge(spec=validate(job(warmup=1), "x"), run_id="r", results=results, infos=[info(0), info(1)],
                data=[data_info()], e2e_seconds=1.0, retries=0, item_unit="seq")
    assert row.warmup_batches == 6  # workers 0 and 1 ran 3 each before their measured infer batches


def test_mfu_divides_by_the_devices_that_ran_the_infer_pass():
    """Worker 2 set up but got no infer shard: its device adds no throughput, so it adds no peak,
    and its unknown peak does not blank the MFU either."""
    spec = validate(job(), "x")
    for idle in (info(2), info(2, peak=None)):
        row = merge(spec=spec, run_id="r", results=RESULTS, infos=[info(0), info(1), idle],
                    data=[data_info()], e2e_seconds=1.0,
                    retries=0, item_unit="seq")
        assert row.peak_flops == pytest.approx(200e9)
        assert row.MFU == pytest.approx(1e9 * 60 / 200e9) and row.mfu_note is None


def test_unknown_peak_blanks_mfu_with_the_reason():
    unknown = dataclasses.replace(info(1, peak=None), device_name="NVIDIA A10G",
                                  peak_flops_reason="'NVIDIA A10G' is not in the peak FLOP/s table")
    row = merge(spec=validate(job(), "x"), run_id="r", results=RESULTS, infos=[info(0), unknown],
                data=[data_info()], e2e_seconds=1.0,
                retries=0, item_unit="seq")
    assert row.MFU is None and row.peak_flops is None
    assert row.mfu_note == "'NVIDIA A10G' is not in the peak FLOP/s table"


def test_whole_span_leaves_out_the_time_no_driver_ran():
    """A run resumed after its driver died: the pause between 111.5 and 112.5 is not pass time."""
    row = merge(spec=validate(job(), "x"), run_id="r", results=RESULTS, infos=[info(0), info(1)],
                data=[data_info()], e2e_seconds=1.0,
                retries=0, item_unit="seq", resumed=True, pauses=((111.5, 112.5), (90.0, 95.0)))
    assert row.p_infer_whole == pytest.approx(60 / (113 - 110 - 1))
    assert row.p_val_whole == pytest.approx(60 / (105 - 100))  # the pause at 90-95 is before the val pass
    assert driver_span(0.0, 10.0, ((2.0, 3.0), (9.0, 12.0))) == pytest.approx(8.0)


def test_energy_per_item_and_mean_power_of_the_measured_pass():
    """Infer pass: w0 ran shards 0 and 2 (30 items, 1 s + 2 s of pass, 40 J + 80 J), w1 shard 1
    (30 items, 2 s, 100 J). The failed attempt's 999 J is not counted."""
    joules = {(0, 1): 40.0, (1, 1): 100.0, (2, 1): 999.0, (2, 2): 80.0}
    results = [dataclasses.replace(r, energy_joules=joules.get((r.shard_id, r.attempt)) if r.pass_name == "infer"
                                   else None) for r in RESULTS]
    row = merge(spec=validate(job(), "x"), run_id="r", results=results, infos=[info(0), info(1)],
                data=[data_info()], e2e_seconds=1.0,
                retries=0, item_unit="seq")
    assert row.energy_per_item == pytest.approx((40 + 100 + 80) / 60)
    assert row.mean_power == pytest.approx((40 + 80) / (1 + 2) + 100 / 2)
    assert row.energy_note is None


def test_energy_is_blank_with_the_reason_where_a_device_has_no_counter():
    results = [dataclasses.replace(r, energy_joules=None if r.worker_id == 1 else 5.0,
                                   energy_note="no energy counter on a CPU") for r in RESULTS]
    row = merge(spec=validate(job(), "x"), run_id="r", results=results, infos=[info(0), info(1)],
                data=[data_info()], e2e_seconds=1.0,
                retries=0, item_unit="seq")
    assert (row.energy_per_item, row.mean_power, row.energy_note) == (None, None, "no energy counter on a CPU")


def test_the_printed_table_says_why_mfu_is_blank():
    from orchestrator.views.report import metrics_markdown

    unknown = dataclasses.replace(info(1, peak=None), peak_flops_reason="'NVIDIA A10G' is not in the peak FLOP/s table")
    row = merge(spec=validate(job(), "x"), run_id="r", results=RESULTS, infos=[info(0), unknown],
                data=[data_info()], e2e_seconds=1.0,
                retries=0, item_unit="seq")
    assert "MFU -: 'NVIDIA A10G' is not in the peak FLOP/s table" in metrics_markdown([row])


# ---------------------------------------------------------- physical devices, counted once (issue 20)
def on_gpu(worker_info, node, uuid, rank_uuids=()):
    """`worker_info` on GPU `uuid` of `node` (a TP worker: its ranks on `rank_uuids`)."""
    from workers.contract import RankInfo

    ranks = [RankInfo(r, node, 200 + r, f"cuda:{r}", worker_info.device_name, worker_info.peak_flops, u)
             for r, u in enumerate(rank_uuids)]
    return dataclasses.replace(worker_info, node_id=node, device_uuid=uuid, ranks=ranks)


def test_two_workers_on_half_a_gpu_each_count_its_peak_and_its_energy_once():
    """gpus_per_worker 0.5: workers 0 and 1 share GPU-A of node n. Both read the whole GPU's counter
    over overlapping spans: w0 shards 0 (110-111) and 2 (111-113), w1 shard 1 (110-112). The GPU's
    counter reads 1000 J at 110, 1100 at 111, 1200 at 112, 1300 at 113: 300 J over 3 s, once."""
    counter = {110: 1000.0, 111: 1100.0, 112: 1200.0, 113: 1300.0}
    results = [dataclasses.replace(r, node_id="n", energy_joules=counter[r.end_ts] - counter[r.start_ts],
                                   energy_counters={"n/GPU-A": [counter[r.start_ts], counter[r.end_ts]]})
               if r.pass_name == "infer" and r.error is None else r for r in RESULTS]
    results = [dataclasses.replace(r, start_ts=110, end_ts=112) if (r.pass_name, r.shard_id) == ("infer", 1) else r
               for r in results]
    shared = [on_gpu(info(0), "n", "GPU-A"), on_gpu(info(1), "n", "GPU-A")]
    row = merge(spec=validate(job(), "x"), run_id="r", results=results, infos=shared, data=[data_info()],
                e2e_seconds=1.0, retries=0, item_unit="seq")
    assert row.peak_flops == pytest.approx(100e9)  # one GPU: one peak (two workers used to make it 200e9)
    assert row.MFU == pytest.approx(1e9 * 60 / 100e9)
    assert row.energy_per_item == pytest.approx(300 / 60)  # not 100 + 200 + 200 = 500 J
    assert row.mean_power == pytest.approx(300 / 3)
    assert row.devices == "1x NVIDIA A100-SXM4-40GB"
    apart = [on_gpu(info(0), "n", "GPU-A"), on_gpu(info(1), "n", "GPU-B")]  # the same UUIDs on two GPUs
    row = merge(spec=validate(job(), "x"), run_id="r", results=results, infos=apart, data=[data_info()],
                e2e_seconds=1.0, retries=0, item_unit="seq")
    assert row.peak_flops == pytest.approx(200e9)


def test_tensor_parallel_groups_count_each_rank_gpu_once_and_the_same_uuid_on_two_nodes_twice():
    groups = [on_gpu(info(0), "n1", "GPU-A", ("GPU-A", "GPU-B")), on_gpu(info(1), "n2", "GPU-A", ("GPU-A", "GPU-B"))]
    row = merge(spec=validate(job(), "x"), run_id="r", results=RESULTS, infos=groups, data=[data_info()],
                e2e_seconds=1.0, retries=0, item_unit="seq")
    assert row.peak_flops == pytest.approx(4 * 100e9) and row.devices == "4x NVIDIA A100-SXM4-40GB"


def test_byte_per_batch_is_the_measured_passs():
    """The val pass (eager, int64 ids) fed 8192-byte batches, the engine (int32 ids) 4096."""
    results = [dataclasses.replace(r, bytes_per_batch=8192 if r.pass_name == "val" else 4096) for r in RESULTS]
    row = merge(spec=validate(job(), "x"), run_id="r", results=results, infos=[info(0), info(1)], data=[data_info()],
                e2e_seconds=1.0, retries=0, item_unit="seq")
    assert row.byte_per_batch == 4096


def test_the_engines_optimisation_profile_is_in_the_row():
    import json

    profile = {"input_ids": {"min": [1, 1], "opt": [8, 540], "max": [8, 4096]}}
    built = [dataclasses.replace(info(w), build=BuildInfo("tensorrt", profile=profile)) for w in (0, 1)]
    row = merge(spec=validate(job(), "x"), run_id="r", results=RESULTS, infos=built, data=[data_info()],
                e2e_seconds=1.0, retries=0, item_unit="seq")
    assert json.loads(row.engine_profile) == profile
# ------------------------------------------------- MFU_measured: against the devices' measured matmul peak


def measured(worker, flops, datasheet=100e9, **fields):
    return dataclasses.replace(info(worker, peak=datasheet), peak_flops_measured=flops, **fields)


def test_mfu_measured_divides_by_the_summed_measured_peaks_of_the_infer_devices():
    """Same FLOPs and throughput as MFU (1e9 FLOP/item x 60 items/s); the peaks are the measured ones,
    and an idle worker's device is left out as MFU leaves it out."""
    row = merge(spec=validate(job(), "x"), run_id="r", results=RESULTS,
                infos=[measured(0, 40e9), measured(1, 20e9), measured(2, 1e15)], data=[data_info()],
                e2e_seconds=1.0, retries=0, item_unit="seq")
    assert row.peak_flops_measured == pytest.approx(60e9)
    assert row.MFU_measured == pytest.approx(1e9 * 60 / 60e9) and row.mfu_measured_note is None
    assert row.MFU == pytest.approx(1e9 * 60 / 200e9)  # the datasheet figure is still its own column


def test_mfu_measured_is_defined_where_the_datasheet_knows_no_peak():
    """A CPU: no datasheet peak, so MFU is blank with its note; MFU_measured is not."""
    cpu = [measured(w, 50e9, datasheet=None, peak_flops_reason="no peak FLOP/s for CPUs") for w in (0, 1)]
    row = merge(spec=validate(job(), "x"), run_id="r", results=RESULTS, infos=cpu, data=[data_info()],
                e2e_seconds=1.0, retries=0, item_unit="seq")
    assert row.MFU is None and row.mfu_note == "no peak FLOP/s for CPUs"
    assert row.MFU_measured == pytest.approx(1e9 * 60 / 100e9)


def test_mfu_measured_sums_every_rank_of_a_tensor_parallel_worker():
    from workers.contract import RankInfo

    ranks = [RankInfo(r, "node0", 200 + r, f"cuda:{r}", "NVIDIA A100-SXM4-40GB", 100e9, f"GPU-{r}", 30e9) for r in range(2)]
    row = merge(spec=validate(job(), "x"), run_id="r", results=RESULTS,
                infos=[measured(0, 30e9, ranks=ranks), measured(1, 60e9)], data=[data_info()],
                e2e_seconds=1.0, retries=0, item_unit="seq")
    assert row.peak_flops_measured == pytest.approx(120e9)
    assert row.MFU_measured == pytest.approx(1e9 * 60 / 120e9)


def test_mfu_measured_is_blank_with_the_reason_when_a_device_was_not_measured():
    row = merge(spec=validate(job(), "x"), run_id="r", results=RESULTS,
                infos=[measured(0, 40e9), measured(1, None, peak_flops_measured_reason="no infer pass")],
                data=[data_info()], e2e_seconds=1.0, retries=0, item_unit="seq")
    assert (row.MFU_measured, row.peak_flops_measured, row.mfu_measured_note) == (None, None, "no infer pass")
