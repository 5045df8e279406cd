"""Where a run's time went: timeline.json in the run folder and the line `bench submit` prints."""

import json

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
