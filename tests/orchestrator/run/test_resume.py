"""A run finished by `--resume` counts the time a driver was running it, not the time none was.

In-process workers and the synthetic engine: drivers that stop are made by shards that fail
(`engine.fail_shards`, one attempt), and "time passing with no driver" by moving everything the
stopped drivers left on disk 1,000 s into the past, as if they had run then.
"""

import json
from pathlib import Path

import pytest

from orchestrator.run.driver import run_all
from orchestrator.run.sessions import SESSIONS, pauses_between
from orchestrator.spec import load_spec
from workers.errors import RunFailed

RUN = "resume-clock-run"
GAP_S = 1000.0


def attempt(results: Path, fail_shard: int | None, resume: bool):
    sets = ["workers=1", "data.synthetic.size=400", "engine.latency_ms=1", "shard_size=40", "max_attempts=1"]
    if fail_shard is not None:
        sets.append(f"engine.fail_shards=[{fail_shard}]")
    return run_all(load_spec("jobs/synthetic.yaml", sets), results_dir=results, in_process=True, run_id=RUN,
                   resume=resume)


def move_into_the_past(run_dir: Path, seconds: float) -> None:
    for path in (run_dir / "shards").glob("*.json"):
        shard = json.loads(path.read_text())
        shard["start_ts"] -= seconds
        shard["end_ts"] -= seconds
        path.write_text(json.dumps(shard))
    meta = json.loads((run_dir / "run.json").read_text())
    meta["started_at"] -= seconds
    (run_dir / "run.json").write_text(json.dumps(meta))
    if (run_dir / SESSIONS).exists():  # written by the first resume
        starts = json.loads((run_dir / SESSIONS).read_text())
        (run_dir / SESSIONS).write_text(json.dumps([s - seconds for s in starts]))


def test_twice_resumed_run_counts_only_the_drivers_time(tmp_path):
    run_dir = tmp_path / "runs" / RUN
    with pytest.raises(RunFailed):
        attempt(tmp_path, fail_shard=3, resume=False)  # driver 1 saves shards 0-2, then stops
    move_into_the_past(run_dir, GAP_S)
    with pytest.raises(RunFailed):
        attempt(tmp_path, fail_shard=6, resume=True)  # driver 2, 1,000 s later, saves shards 3-5
    move_into_the_past(run_dir, GAP_S)
    (run,) = attempt(tmp_path, fail_shard=None, resume=True)  # driver 3, 1,000 s after that, finishes
    row = run.row
    assert row.resumed and row.items_infer == 400
    assert len(json.loads((run_dir / SESSIONS).read_text())) == 3
    worked = sum(r.wall_seconds for r in run.results)
    assert worked <= row.e2e_time < 60, row.e2e_time  # not the ~2,000 s with no driver
    whole_span = row.items_infer / row.p_infer_whole
    assert worked * 0.99 <= whole_span < 60, whole_span


def test_pauses_run_from_the_last_sign_of_life_to_the_next_start():
    # driver 1 started at 0 and saved shards until 40; driver 2 started at 100, saved nothing, died;
    # driver 3 started at 200
    assert pauses_between([0.0, 100.0, 200.0], [10.0, 40.0]) == ((40.0, 100.0), (100.0, 200.0))
    assert pauses_between([0.0], [10.0]) == ()
    assert pauses_between([0.0, 50.0], [10.0, 60.0, 70.0]) == ((10.0, 50.0),)
