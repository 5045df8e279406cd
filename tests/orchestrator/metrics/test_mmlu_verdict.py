"""The verdict of a real MMLU run: VALID when the machine is steady, INVALID (saying where) when a
third of its batches run at half speed.

The run is jobs/mmlu_tiny.yaml (a random Llama with SmolLM2's tokenizer on the shared MMLU copy)
through the real driver, in-process, with several shards, on three subjects whose 5-shot prompts
run from about 250 tokens (world_religions) to the 2,048-token cap (high_school_european_history):
its batches take from 0.25 s to 3 s by design. The disturbance is then planted in that run's own
shard results (every third shard, every batch in it twice as slow) and the results go through the
same merge and verdict code again.

The first test needs a steady machine: a run that another process slows down in stretches is
INVALID, rightly (that is the rule working), so run it under the shared lock, as the suite is; a
disturbed run is followed by another (up to three), and the steadiest is judged.
"""

import copy
import re

import pytest
import torch

from orchestrator.metrics.merge import merge
from orchestrator.driver import run_job
from orchestrator.spec import load_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # One intra-op thread: with two, a process on the other core of a 2-core machine stalls every
    # batch at the threads' join, and the run is (rightly) judged unsteady.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        subjects = "task.subjects=[abstract_algebra,high_school_european_history,world_religions]"
        # invariance_check=0: the bs-1 rerun is not judged here (tests/orchestrator/modes/offline/test_invariance_check.py is its test)
        spec = load_spec("jobs/mmlu_tiny.yaml", [subjects, "task.limit=40", "passes=[infer]", "shard_size=12",
                                                 "invariance_check=0"])
        # A machine disturbed in stretches during the run (another process on a 2-core VM, or the
        # VM's host: a CI run met two disturbed runs in a row, 45 s each instead of 30) makes it
        # INVALID, rightly; then another run, up to three, and the steadiest is judged. A verdict
        # that is wrong for steady runs fails all three.
        runs = []
        for _ in range(3):
            runs.append(run_job(spec, results_dir=tmp_path_factory.mktemp("results"), in_process=True))
            if runs[-1].row.verdict == "VALID":
                break
        return spec, min(runs, key=lambda r: r.row.latency_shard_cv or 0.0)
    finally:
        torch.set_num_threads(threads)


def every_third_shard(results) -> set[int]:
    """Shards 1, 4, 7, ...: a third of the run's batches, spread over its time and its prompt lengths.

    A slowdown confined to one range of prompt lengths (say, only the shards of the subject with the
    longest prompts) cannot be told from what those prompts cost, and the fit takes it in; this is
    the limit of judging stability against a cost fitted from the same run (verdict.py)."""
    return {shard for i, shard in enumerate(sorted({r.shard_id for r in results})) if i % 3 == 1}


def test_a_steady_run_is_valid_on_the_quick_profile(run):
    spec, result = run
    row = result.row
    assert row.measured_batches == 30
    lengths = [r["prompt_tokens"] for r in result.predictions]
    assert max(lengths) > 6 * min(lengths)  # work of very different sizes, by design
    assert row.verdict == "VALID", row.verdict_reasons
    assert row.latency_shard_cv is not None and row.latency_shard_cv < 0.25
    print(f"\nlatency_cv {row.latency_cv:.3f} (not judged), latency_shard_cv {row.latency_shard_cv:.3f}")


def test_the_same_run_with_a_third_of_its_batches_at_half_speed_is_invalid_and_says_where(run):
    spec, result = run
    planted = copy.deepcopy(result.results)
    slow = every_third_shard(planted)
    for r in planted:
        if r.shard_id in slow:
            r.batch_core_seconds = [2 * t for t in r.batch_core_seconds]
            r.core_seconds = sum(r.batch_core_seconds)
    row = merge(spec=spec, run_id="planted", results=planted, infos=result.infos, data=result.data,
                e2e_seconds=1.0, retries=0, item_unit="tok")
    assert row.verdict == "INVALID" and row.latency_shard_cv > 0.25, row.verdict_reasons
    reason = row.verdict_reasons
    assert reason.startswith("core time off its fitted token cost: shard CV"), reason
    named = re.findall(r"shard (\d+) \(worker \d+\) at ([\d.]+)x", reason)
    slow_named = {int(shard) for shard, ratio in named if float(ratio) > 1}
    assert slow_named and slow_named <= slow, reason  # the shards named as slow are the planted ones
    assert len(slow_named) == min(len(slow), 4), reason  # as many as the reason lists
    print(f"\nplanted: shard CV {row.latency_shard_cv:.3f}; {reason}")
