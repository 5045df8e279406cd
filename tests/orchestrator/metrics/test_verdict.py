"""Each verdict rule flips a row to INVALID when its bound is crossed, and leaves it VALID just inside."""

from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from orchestrator.metrics.merge import merge
from orchestrator.metrics.verdict import VerdictFigures, evaluate, figures_from_row, pass_rules
from orchestrator.spec.verdict import Rules, VerdictSpec
from orchestrator.spec import validate
from tests.builders import data_info, job, metrics_row, mmlu_job, shard_results, worker_info


def offline(figures: VerdictFigures, rules: Rules):
    """The verdict of an Offline row: its pass rules, joined with the incidents."""
    return evaluate(figures, rules, [pass_rules(figures, rules)])


RULES = Rules(profile="quick", min_duration_s=10.0, min_batches=100, max_latency_cv=0.1, max_acc_gap=0.01,
              straggler_ratio=0.8, min_repeats=3)
GOOD = VerdictFigures(measured_seconds=20.0, measured_batches=200, latency_cv=0.05, acc_gap=0.0,
                      worker_items_per_s={0: 100.0, 1: 100.0, 2: 100.0}, repeats=3)


def check(inside: VerdictFigures, outside: VerdictFigures, reason_part: str) -> None:
    assert offline(inside, RULES).valid, offline(inside, RULES).reasons
    verdict = offline(outside, RULES)
    assert (verdict.valid, verdict.label) == (False, "INVALID")
    assert len(verdict.reasons) == 1 and reason_part in verdict.reasons[0], verdict.reasons


def test_all_good_is_valid():
    verdict = offline(GOOD, RULES)
    assert (verdict.valid, verdict.label, verdict.reasons, verdict.reasons_text) == (True, "VALID", [], "")


def test_min_duration():
    check(replace(GOOD, measured_seconds=10.0), replace(GOOD, measured_seconds=9.99), "min_duration_s 10")


def test_min_batches():
    check(replace(GOOD, measured_batches=100), replace(GOOD, measured_batches=99), "min_batches 100")


def test_max_latency_cv():
    check(replace(GOOD, latency_cv=0.1), replace(GOOD, latency_cv=0.1001), "max_latency_cv 0.1")


def test_max_acc_gap():
    check(replace(GOOD, acc_gap=0.01), replace(GOOD, acc_gap=0.0101), "max_acc_gap 0.01")


def test_straggler():
    # the median of the other workers (100, 100) is 100; 0.8 x 100 = 80 is the bound
    check(replace(GOOD, worker_items_per_s={0: 100.0, 1: 100.0, 2: 80.0}),
          replace(GOOD, worker_items_per_s={0: 100.0, 1: 100.0, 2: 79.9}), "straggler: worker 2")


def test_straggler_of_two_workers_is_measured_against_the_other():
    # a median including the slow worker would be 89.95 and let 79.9 pass (79.9 > 0.8 x 89.95 = 71.96)
    check(replace(GOOD, worker_items_per_s={0: 100.0, 1: 80.0}),
          replace(GOOD, worker_items_per_s={0: 100.0, 1: 79.9}), "straggler: worker 1")


def test_min_repeats():
    check(replace(GOOD, repeats=3), replace(GOOD, repeats=2), "min_repeats 3")


def test_every_failing_rule_is_a_reason():
    bad = VerdictFigures(measured_seconds=1.0, measured_batches=5, latency_cv=0.5, acc_gap=0.2,
                         worker_items_per_s={0: 100.0, 1: 10.0, 2: 100.0}, repeats=1)
    assert len(offline(bad, RULES).reasons) == 6


def test_unmeasurable_figures_skip_their_rule():
    figures = replace(GOOD, latency_cv=None, acc_gap=None, worker_items_per_s={0: 5.0})
    assert offline(figures, RULES).valid


def test_profiles_and_overrides_resolve():
    quick = VerdictSpec().rules(acc_tolerance=0.01)
    assert (quick.profile, quick.min_duration_s, quick.min_batches, quick.max_acc_gap) == ("quick", 1.0, 10, 0.01)
    rigorous = VerdictSpec(profile="rigorous").rules(acc_tolerance=0.02)
    assert (rigorous.min_duration_s, rigorous.min_batches, rigorous.max_latency_cv) == (600.0, 1000, 0.05)
    assert (rigorous.straggler_ratio, rigorous.min_repeats, rigorous.max_acc_gap) == (0.9, 3, 0.02)
    custom = VerdictSpec(profile="rigorous", min_duration_s=60, max_acc_gap=0.005).rules(acc_tolerance=0.02)
    assert (custom.min_duration_s, custom.max_acc_gap, custom.min_batches) == (60.0, 0.005, 1000)


def test_same_figures_valid_under_quick_invalid_under_rigorous():
    figures = replace(GOOD, measured_seconds=30.0, repeats=1)
    assert offline(figures, VerdictSpec().rules(0.01)).valid
    reasons = offline(figures, VerdictSpec(profile="rigorous").rules(0.01)).reasons
    assert any("min_duration_s 600 (rigorous)" in r for r in reasons)


def test_spec_is_strict():
    with pytest.raises(ValidationError):
        VerdictSpec(profile="quick", max_cv=0.1)
    with pytest.raises(ValidationError):
        VerdictSpec(profile="thorough")
    with pytest.raises(ValidationError):
        VerdictSpec(straggler_ratio=1.5)


def test_mfu_above_one_is_invalid_with_the_reason():
    """An fp32 job whose engine ran TF32 (ORT's CUDA default) beats the FP32 peak: never a valid row."""
    check(replace(GOOD, mfu=1.0, peak_flops=19.5e12, precision="fp32"),
          replace(GOOD, mfu=1.37, peak_flops=19.5e12, precision="fp32"),
          "MFU 1.37 > 1: faster than the fp32 peak of 19.5 TFLOP/s")
    row = metrics_row(MFU=2.5, peak_flops=19.5e12, precision_effective="fp32", measured_batches=64, repeats=1)
    verdict = offline(figures_from_row(row, {}), RULES)
    assert any(r.startswith("MFU 2.5 > 1") for r in verdict.reasons), verdict.reasons


def test_figures_from_row_derive_the_span_from_whole_throughput():
    row = metrics_row(items_infer=512, p_infer_whole=256.0, items_val=512, p_val_whole=128.0,
                      measured_batches=64, latency_cv=0.02, acc_gap=0.001, repeats=2)
    figures = figures_from_row(row, {0: 10.0})
    assert figures == VerdictFigures(2.0, 64, 0.02, 0.001, {0: 10.0}, 2, mfu=row.MFU, peak_flops=row.peak_flops,
                                     precision=row.precision_effective)
    val_only = figures_from_row(row.model_copy(update=dict(items_infer=None, p_infer_whole=None)), {})
    assert (val_only.measured_seconds, val_only.repeats) == (4.0, 2)


def test_merge_fills_the_verdict_columns_and_finds_the_straggler():
    # 4 shards over 2 workers, 10 ms batches; worker 1's infer shards then run 4x slower
    results = shard_results("val", np.full(40, 0.01), 8, 2, 4) + shard_results("infer", np.full(40, 0.01), 8, 2, 4)
    for r in results:
        if r.pass_name == "infer" and r.worker_id == 1:
            r.core_seconds *= 4
    spec = validate(job(verdict={"min_duration_s": 0}), "test")
    row = merge(spec=spec, run_id="r", results=results, infos=[worker_info(0), worker_info(1)], data=[data_info()],
                e2e_seconds=1.0, retries=0, item_unit="seq")
    assert row.verdict == "INVALID" and row.verdict_profile == "quick"
    assert row.verdict_reasons.startswith("straggler: worker 1 at 200 items/s < 0.5 x median of the others 800")
    alone = [r for r in results if r.worker_id == 0]
    fine = merge(spec=spec, run_id="r", results=alone, infos=[worker_info(0)], data=[data_info()], e2e_seconds=1.0,
                 retries=0, item_unit="seq")
    assert (fine.verdict, fine.verdict_reasons) == ("VALID", "")


# ------------------------------------------------- variable-length work: core time against its cost
def test_shard_rule_replaces_the_latency_cv_rule_for_variable_length_work():
    rules = replace(RULES, max_latency_shard_cv=0.2)
    variable = replace(GOOD, latency_cv=None, latency_shard_cv=0.2)
    assert offline(variable, rules).valid, offline(variable, rules).reasons
    ratios = {"shard 0 (worker 0)": 1.0, "shard 2 (worker 0)": 2.0, "shard 4 (worker 1)": 0.7}
    outside = offline(replace(variable, latency_shard_cv=0.2001, shard_latency_ratios=ratios), rules)
    assert not outside.valid and len(outside.reasons) == 1
    assert outside.reasons[0] == ("core time off its fitted token cost: shard CV 0.2 > max_latency_shard_cv 0.2 "
                                  "(quick); off the fit: shard 2 (worker 0) at 2.00x, shard 4 (worker 1) at "
                                  "0.70x (of 3 shards)")
    spread = offline(replace(variable, latency_shard_cv=0.3), rules).reasons[0]
    assert spread.endswith("no shard is off by more than the bound on its own")


def test_figures_from_row_pick_the_stability_figure_by_kind_of_work():
    row = metrics_row(items_infer=512, p_infer_whole=256.0, measured_batches=64, latency_cv=0.7,
                      latency_shard_cv=0.05)
    fixed = figures_from_row(row, {})
    assert (fixed.latency_cv, fixed.latency_shard_cv) == (0.7, None)
    variable = figures_from_row(row, {}, variable_length=True, shard_latency_ratios={"shard 0 (worker 0)": 1.0})
    assert (variable.latency_cv, variable.latency_shard_cv) == (None, 0.05)
    assert variable.shard_latency_ratios == {"shard 0 (worker 0)": 1.0}


def test_profiles_bound_the_shard_spread():
    assert VerdictSpec().rules(0.01).max_latency_shard_cv == 0.25
    assert VerdictSpec(profile="rigorous").rules(0.01).max_latency_shard_cv == 0.05
    assert VerdictSpec(max_latency_shard_cv=0.3).rules(0.01).max_latency_shard_cv == 0.3


def test_max_workers_lost():
    lost = ("worker 1 on host1 (sim:1): 3 failed shards in a row, the last: injected failure on worker 1",)
    check(replace(GOOD, workers_lost=()), replace(GOOD, workers_lost=lost),
          "1 worker(s) lost > max_workers_lost 0: worker 1 on host1 (sim:1): 3 failed shards in a row")
    assert offline(replace(GOOD, workers_lost=lost), replace(RULES, max_workers_lost=1)).valid
    assert VerdictSpec(max_workers_lost=2).rules(0.01).max_workers_lost == 2
    assert VerdictSpec(profile="rigorous").rules(0.01).max_workers_lost == 0


def test_stragglers_among_many_workers_are_judged_against_the_median_of_the_others():
    """The median of the others comes from one sorted list (4,096 workers merge in milliseconds);
    it must equal the median taken over each worker's others, ties and even counts included."""
    import statistics

    from orchestrator.metrics.verdict import _median_without

    rng = np.random.default_rng(0)
    for n in (2, 3, 4, 5, 64, 65):
        rates = [float(x) for x in rng.choice([50.0, 80.0, 100.0, 101.0], n)] + list(rng.uniform(40, 110, n))
        ordered = sorted(rates)
        assert [_median_without(ordered, r) for r in rates] == \
               [statistics.median(rates[:i] + rates[i + 1:]) for i in range(len(rates))]


# ------------------------------------------------- variable-length work: stragglers against the fit
A, B, C = 2e-3, 1e-5, 1e-8  # s per batch, per token, per token x length (attention)


def mmlu_shards(lengths_of_worker, slow=None, factor=3.0, seed=0):
    """Infer shards of 10 batches of 4 prompts, on workers that drew prompts of the given padded
    lengths, each batch costing A + B tokens + C tokens x length (x factor on the `slow` worker)."""
    from workers.contract import ShardResult

    rng = np.random.default_rng(seed)
    out, clock = [], 1000.0
    for shard_id in range(12):
        w = shard_id % len(lengths_of_worker)
        low, high = lengths_of_worker[w]
        lengths = [int(x) for x in rng.integers(low, high, size=10)]
        seconds = [(A + B * 4 * n + C * 4 * n * n) * (factor if w == slow else 1.0) * (1 + 0.01 * rng.standard_normal())
                   for n in lengths]
        items = 4 * sum(lengths)
        out.append(ShardResult(
            shard_id=shard_id, pass_name="infer", attempt=1, worker_id=w, node_id="node0", device_name="CPU test",
            pid=100 + w, examples=40, items=items, scored=40, correct=10, core_seconds=sum(seconds),
            wall_seconds=sum(seconds), start_ts=clock, end_ts=clock + sum(seconds), batch_core_seconds=seconds,
            batch_items=[4 * n for n in lengths], batch_rows=[4] * 10, batch_seq_lens=lengths, bytes_per_batch=1,
        ))
        clock += sum(seconds)
    return out


def merge_mmlu(results):
    spec = validate(mmlu_job({"random": {"model_type": "llama"}}, passes=["infer"], verdict={"min_duration_s": 0}), "t")
    infos = [worker_info(w) for w in sorted({r.worker_id for r in results})]
    return merge(spec=spec, run_id="r", results=results, infos=infos, data=[data_info()], e2e_seconds=1.0,
                 retries=0, item_unit="tokens")


def test_a_healthy_worker_that_drew_long_prompts_is_not_a_straggler():
    """Worker 0 drew 2,000-2,800-token prompts, worker 1 250-600: on healthy devices worker 0 does
    about a third of worker 1's tokens/s, which the old rule (raw items/s, quick bound 0.5) called
    a straggler. Against the cost fit both run at 1.0x."""
    results = mmlu_shards([(2000, 2800), (250, 600)])
    raw = {w: sum(r.items for r in results if r.worker_id == w) / sum(r.core_seconds for r in results if r.worker_id == w)
           for w in (0, 1)}
    assert raw[0] < 0.5 * raw[1]  # what the raw rule saw
    row = merge_mmlu(results)
    assert "straggler" not in row.verdict_reasons, row.verdict_reasons


def test_a_truly_slow_worker_on_variable_length_work_is_a_straggler():
    """Worker 2 runs every batch 3x slower than its shapes cost; it drew the same lengths as worker 0."""
    results = mmlu_shards([(250, 2800), (250, 2800), (250, 2800)], slow=2)
    row = merge_mmlu(results)
    reasons = [r for r in row.verdict_reasons.split("; ") if r.startswith("straggler")]
    assert len(reasons) == 1 and reasons[0].startswith("straggler: worker 2 at 0.3"), row.verdict_reasons
    assert "x fitted speed < 0.5 x median of the others 1" in reasons[0]
# ------------------------------------------- incidents on the GPUs while measured, and invariance at bs 1


def test_a_gpu_slowed_by_heat_or_a_power_brake_is_invalid_a_gpu_at_its_power_cap_is_not():
    check(replace(GOOD, throttle_reasons=("sw_power_cap", "sync_boost"), sm_clock_mhz_min=1755),
          replace(GOOD, throttle_reasons=("sw_power_cap", "hw_thermal"), sm_clock_mhz_min=1245),
          "GPU clocks slowed during the measured pass: hw_thermal (lowest busy SM clock 1245 MHz)")
    for reason in ("hw_slowdown", "hw_power_brake", "sw_thermal"):
        assert reason in offline(replace(GOOD, throttle_reasons=(reason,)), RULES).reasons_text


def test_xid_ecc_and_other_processes_are_each_invalid():
    check(replace(GOOD, xid_errors=()), replace(GOOD, xid_errors=("79",)), "XID error(s) during the measured pass: 79")
    check(replace(GOOD, ecc_errors=0), replace(GOOD, ecc_errors=2), "2 uncorrected ECC error(s)")
    check(replace(GOOD, foreign_processes=0), replace(GOOD, foreign_processes=1, foreign_pids="4242@node7"),
          "1 other process(es) on the GPU(s) during the measured pass: 4242@node7")


def test_predictions_that_changed_at_bs_1_are_invalid():
    check(replace(GOOD, invariance_flips=0, invariance_checked=32),
          replace(GOOD, invariance_flips=3, invariance_checked=32), "invariance: 3 of 32 predictions changed")


def test_the_merge_puts_the_gpus_figures_in_the_row_and_its_verdict():
    """The infer shards' NVML figures (workers/measure/device_watch.py) merged over shards and workers: lowest
    clock, every reason, hottest GPU, every XID, and the processes that are not the run's own. Workers
    0 and 1 run on node0 and node1: pid 101 seen on node0 is not worker 1, so it is foreign; when both
    workers share one GPU on one node (fractional GPUs), each one's pid on the other's list is not."""
    from workers.contract import DeviceHealth

    results = shard_results("infer", np.full(40, 0.01), bs=4, workers=2, shards=4)
    healths = [DeviceHealth(samples=3, sm_clock_mhz_min=1980 - 100 * i, clock_events=["sw_power_cap"],
                            temperature_c_max=60 + i, power_w_max=300.0 + i, ecc_errors=0, other_pids=[7777])
               for i in range(4)]
    healths[1].clock_events, healths[1].xid_errors = ["hw_power_brake", "sw_power_cap"], [48]
    healths[2].other_pids = [7777, 101]  # shard 2 ran on worker 0 (node0)
    healths[3].other_pids = [7777, 100]  # shard 3 on worker 1 (node1)
    results = [replace(r, health=h) for r, h in zip(results, healths)]
    infos = [worker_info(0), worker_info(1)]
    row = merge(spec=validate(job(), "x"), run_id="r", results=results, infos=infos, data=[data_info()],
                e2e_seconds=1.0, retries=0, item_unit="seq")
    assert (row.sm_clock_mhz_min, row.temperature_c_max, row.power_w_max) == (1680, 63, 303.0)
    assert (row.throttle_reasons, row.xid_errors, row.ecc_errors) == ("hw_power_brake,sw_power_cap", "48", 0)
    assert row.foreign_processes == 4 and row.foreign_pids == "101@h, 7777@h, 100@h, 7777@h"
    assert row.verdict == "INVALID"
    for part in ("hw_power_brake (lowest busy SM clock 1680 MHz)", "XID error(s) during the measured pass: 48",
                 "4 other process(es)"):
        assert part in row.verdict_reasons
    shared = [replace(r, node_id="node0", health=DeviceHealth(samples=2, sm_clock_mhz_min=1980, ecc_errors=0,
                                                                other_pids=[100, 101])) for r in results]
    calm = merge(spec=validate(job(), "x"), run_id="r", results=shared, data=[data_info()], e2e_seconds=1.0,
                 infos=[replace(i, node_id="node0") for i in infos], retries=0, item_unit="seq")
    assert (calm.foreign_processes, calm.throttle_reasons, calm.xid_errors, calm.gpu_health_note) == (0, "", "", None)
    assert "GPU" not in calm.verdict_reasons and "process" not in calm.verdict_reasons


def test_a_cpu_row_has_blank_gpu_figures_and_no_reason():
    results = shard_results("infer", np.full(40, 0.01), bs=4, workers=2, shards=4)
    row = merge(spec=validate(job(), "x"), run_id="r", results=results, infos=[worker_info(0), worker_info(1)],
                data=[data_info()], e2e_seconds=1.0, retries=0, item_unit="seq")
    assert (row.sm_clock_mhz_min, row.throttle_reasons, row.foreign_processes, row.xid_errors) == (None,) * 4
    assert "not watched" in row.gpu_health_note and row.invariance_flips is None
    assert "GPU" not in row.verdict_reasons and "invariance" not in row.verdict_reasons
