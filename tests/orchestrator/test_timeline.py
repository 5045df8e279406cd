"""Where a run's time went: timeline.json in the run folder and the line `bench submit` prints."""

import json

import pytest

from orchestrator.driver import run_all
from orchestrator.views.report import describe_timeline as describe
from orchestrator.spec import load_spec


def test_an_in_process_run_records_its_steps_and_passes(tmp_path):
    (run,) = run_all(load_spec("jobs/synthetic.yaml", ["workers=1", "data.synthetic.size=64", "engine.latency_ms=1",
                                                       "shard_size=16"]), results_dir=tmp_path, in_process=True)
    stored = json.loads((run.run_dir / "timeline.json").read_text())
    assert stored == run.timeline and run.row.ray_start_time is None  # no Ray in-process
    steps, (start, end) = stored["steps"], stored["passes"]["infer"]
    assert list(steps) == ["data_ready", "workers_ready", "row_written"]
    assert 0 <= steps["data_ready"] <= steps["workers_ready"] <= start < end <= run.row.e2e_time <= steps["row_written"]
    assert abs(stored["started_at"] - run.results[0].start_ts) < 60


def test_the_printed_line_reads_in_order():
    record = {"steps": {"ray_started": 6.31, "data_ready": 12.0, "workers_ready": 16.5, "row_written": 21.2},
              "passes": {"val": [16.6, 18.8], "infer": [18.8, 21.1]}}
    assert describe(record) == ("time since submit: ray started 6.3 s, data ready 12.0 s, workers ready 16.5 s, "
                                "val 16.6-18.8 s, infer 18.8-21.1 s, row written 21.2 s")


def test_the_printed_line_names_the_check_and_what_setup_spent_outside_the_spans():
    record = {"steps": {"data_ready": 4.7, "workers_ready": 20.2, "row_written": 131.0},
              "passes": {"infer": [21.5, 127.4]}, "spans": {"invariance": [127.4, 130.6]},
              "setup": {"peak_seconds": 0.0, "warmup_seconds": {"infer": 1.26}}}
    assert describe(record) == ("time since submit: data ready 4.7 s, workers ready 20.2 s, infer 21.5-127.4 s, "
                                "invariance check 127.4-130.6 s, row written 131.0 s; setup: measured peak 0.0 s "
                                "(cached), infer warm-up 1.3 s")
    record["setup"] = {"peak_seconds": 1.84, "warmup_seconds": {}}
    assert describe(record).endswith("; setup: measured peak 1.8 s")
    record["setup"]["peak_seconds"] = None
    assert describe(record).endswith("; setup: measured peak not taken")


@pytest.mark.slow
def test_the_measured_peak_is_paid_once_per_device_and_software(tmp_path):
    """jobs/mmlu_tiny.yaml twice on one engine cache: the first run measures the matmul peak during
    setup, the second reads it back and its setup spends nothing on it (the timeline says so); a
    job that skips it (measure_peak: false) takes none."""
    from orchestrator.driver import run_job
    from tests.builders import TEST_DATA_CACHE

    sets = ["task.limit=2", "passes=[infer]", "invariance_check=0", f"data_cache={TEST_DATA_CACHE}",
            f"engine_cache={tmp_path / 'engines'}"]
    first, second = (run_job(load_spec("jobs/mmlu_tiny.yaml", sets), results_dir=tmp_path / "r", in_process=True)
                     for _ in range(2))
    assert first.timeline["setup"]["peak_seconds"] > 0.1 and "(cached)" not in describe(first.timeline)
    assert second.timeline["setup"]["peak_seconds"] == 0.0 and "measured peak 0.0 s (cached)" in describe(second.timeline)
    assert second.row.peak_flops_measured == first.row.peak_flops_measured > 0
    assert second.timeline["setup"]["warmup_seconds"]["infer"] > 0  # jobs/mmlu_tiny.yaml warms up one batch
    off = run_job(load_spec("jobs/mmlu_tiny.yaml", [*sets, "measure_peak=false"]), results_dir=tmp_path / "r",
                  in_process=True)
    assert off.timeline["setup"]["peak_seconds"] is None and "measured peak not taken" in describe(off.timeline)
    assert off.row.MFU_measured is None and "measure_peak: false" in off.row.mfu_measured_note
