"""A run finished by `--resume` counts the time a driver was running it, not the time none was.

In-process workers and the synthetic engine: drivers that stop are made by shards that fail
(`engine.fail_shards`, one attempt), and "time passing with no driver" by moving everything the
stopped drivers left on disk 1,000 s into the past, as if they had run then.
"""

import json
from pathlib import Path

import pytest

from orchestrator.driver import run_all
from orchestrator.session import SESSIONS, pauses_between
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


# ---------------------------------------------- a resume must finish the same data, cut the same way
def text_job(results: Path, text: Path, fail_shard: int | None = None, run_id: str = "resume-data-run",
             resume: bool = False, **more):
    """Masked-LM on a text file (a real tokenizer), the synthetic engine, in this process."""
    from tests.builders import bert_vocab

    sets = ["workers=1", f"data={text}", f"model.tokenizer={bert_vocab()}", "model.random.vocab_size=30522",
            "model.random.max_position_embeddings=64", "seq_len=16", "engine.latency_ms=1", "shard_size=8",
            "max_attempts=1", f"data_cache={results / 'data-cache'}"]
    if fail_shard is not None:
        sets.append(f"engine.fail_shards=[{fail_shard}]")
    return run_all(load_spec("jobs/synthetic.yaml", sets + [f"{k}={v}" for k, v in more.items()]),
                   results_dir=results, in_process=True, run_id=run_id, resume=resume)


def started_run(tmp_path: Path, text: Path) -> Path:
    """A run whose first driver saved shards 0-2 and stopped (shard 3 failed for good)."""
    text.write_text("the quick brown fox jumps over the lazy dog and runs far away\n" * 60)
    with pytest.raises(RunFailed):
        text_job(tmp_path, text, fail_shard=3)
    run_dir = tmp_path / "runs" / "resume-data-run"
    assert (run_dir / "plan.json").exists() and len(list((run_dir / "shards").glob("*.json"))) == 3
    return run_dir


def test_a_resume_whose_data_changed_is_refused_in_one_line(tmp_path):
    """The text was edited after the first driver stopped: shard ids would now name other windows."""
    from orchestrator.metrics.store import ResultsStore
    from workers.errors import UserError

    text = tmp_path / "text.txt"
    run_dir = started_run(tmp_path, text)
    saved = {p.name: p.read_bytes() for p in (run_dir / "shards").glob("*.json")}
    text.write_text("a different text now, the file was edited in between the two drivers\n" * 60)
    with pytest.raises(UserError) as refused:
        text_job(tmp_path, text, resume=True)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("--resume resume-data-run: the data differ from the run's")
    assert {p.name: p.read_bytes() for p in (run_dir / "shards").glob("*.json")} == saved  # nothing ran
    assert ResultsStore(tmp_path).read_metrics().num_rows == 0


def test_a_resume_whose_plan_changed_is_refused(tmp_path, monkeypatch):
    """A newer raybench that cuts other shards (here: all of the data in the tapered tail's
    half-size shards) must not finish an older run."""
    from orchestrator.modes.offline import plan as plan_module
    from workers.errors import UserError

    text = tmp_path / "text.txt"
    run_dir = started_run(tmp_path, text)
    monkeypatch.setattr(plan_module, "TAPER_FRACTION", 1.0)
    with pytest.raises(UserError, match=r"^--resume resume-data-run: the shard plan differs from the run's \(bs 4"):
        text_job(tmp_path, text, resume=True)
    (run_dir / "plan.json").unlink()  # a run from before plan.json: its shards' own ranges are checked
    with pytest.raises(UserError, match=r"saved shard infer-0000\d holds examples \d+-\d+, the plan now"):
        text_job(tmp_path, text, resume=True)


def test_a_resume_may_change_the_number_of_workers_and_stays_exact(tmp_path):
    """A preemptible cluster often comes back smaller: the shards do not depend on the worker count."""
    from orchestrator.cli import _load

    text = tmp_path / "text.txt"
    run_dir = started_run(tmp_path, text)
    spec = _load(None, None, 3, "resume-data-run", str(tmp_path))
    assert spec.workers == 3 and spec.data.path == str(text)
    (run,) = text_job(tmp_path, text, resume=True)  # (in-process is one worker: the count comes from the CLI)
    (reference,) = text_job(tmp_path / "ref", text, run_id="reference")
    keys = ("examples", "items_infer", "scored_infer", "correct_infer", "acc")
    assert {k: getattr(run.row, k) for k in keys} == {k: getattr(reference.row, k) for k in keys}
    starts = sorted((r.shard_id, r.start, r.stop) for r in run.results)
    assert starts == [(i, a, b) for i, (a, b) in enumerate(json.loads((run_dir / "plan.json").read_text())["plan"]["bounds"])]


def test_a_resume_of_a_complete_run_says_so_and_adds_nothing(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app
    from orchestrator.metrics.store import ResultsStore

    text = tmp_path / "text.txt"
    started_run(tmp_path, text)
    text_job(tmp_path, text, resume=True)  # finishes it: one row
    out = CliRunner().invoke(app, ["submit", "--resume", "resume-data-run", "--no-ray", "--results", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("run resume-data-run is already complete") and "nothing added" in out.output
    assert ResultsStore(tmp_path).read_metrics().column("run_id").to_pylist() == ["resume-data-run"]
