"""The LoadGen bridge against a fake target (tests/fakes/fake_target.py) and the real LoadGen, in this
process, with a few hundred queries: Offline's fault policy (a failing worker's samples go to another,
and it is taken out), a hung worker abandoned at its deadline, a restarting worker held back until it
is back, every sample completed once with its own response, and LoadGen's flush honoured."""

import json
from pathlib import Path

import pytest

from orchestrator.cluster.live import ScenarioMeter
from orchestrator.cluster.policy import FAILURES_IN_A_ROW
from orchestrator.modes.loadgen.bridge import BridgeOptions
from orchestrator.modes.loadgen.runner import run_test
from orchestrator.modes.loadgen.settings import build_test_settings
from orchestrator.spec.load import LoadGenLoad
from tests.fakes.fake_target import FakeTarget, Place

EXAMPLES = 64


def run_bridge(target: FakeTarget, folder: Path, scenario: str = "server", accuracy: bool = False, bs: int = 4,
         timeout_s: float | None = None, wait_s: float = 0.0, **load):
    fields = {"target_qps": 500, "min_queries": 200, "min_duration_s": 0.2, "latency_bound_ms": 1000, **load}
    if scenario != "server":
        fields = {k: v for k, v in fields.items() if k not in ("target_qps",)}
    spec = LoadGenLoad(scenario=scenario, **fields)
    built = build_test_settings(spec, EXAMPLES, accuracy=accuracy)
    options = BridgeOptions("infer", bs, wait_s, max_attempts=3, accuracy=accuracy, batch_timeout_s=timeout_s)
    return run_test(built, target, options, EXAMPLES, folder, ScenarioMeter(""), trace=False)


def logged(folder: Path) -> list[tuple[int, int]]:
    entries = json.loads((folder / "mlperf_log_accuracy.json").read_text())
    return [(e["qsl_idx"], int.from_bytes(bytes.fromhex(e["data"]), "little")) for e in entries]


def test_a_worker_failing_every_batch_is_taken_out_and_the_healthy_one_serves_its_samples(tmp_path):
    target = FakeTarget([Place(), Place(fails=True)])
    result = run_bridge(target, tmp_path, accuracy=True)
    assert result.distinct_examples == EXAMPLES and result.detail.errors == ()
    assert set(target.lost) == {1} and "failed batches in a row" in target.lost[1]
    assert len(target.places[1].batches) == FAILURES_IN_A_ROW  # then no more
    assert len(result.failed) == FAILURES_IN_A_ROW and all(r.worker_id == 1 for r in result.failed)
    assert sorted(idx for idx, _ in logged(tmp_path)) == list(range(EXAMPLES))
    assert all(idx == data for idx, data in logged(tmp_path))  # each sample answered with its own response


def test_a_hung_worker_is_abandoned_at_its_deadline_and_its_samples_are_run_elsewhere(tmp_path):
    target = FakeTarget([Place(), Place(hangs=True)])
    result = run_bridge(target, tmp_path, accuracy=True, timeout_s=0.3)
    assert target.abandoned == [1] and result.distinct_examples == EXAMPLES
    assert any("did not answer a batch within 0.3 s" in r.error.message for r in result.failed)
    assert sorted(idx for idx, _ in logged(tmp_path)) == list(range(EXAMPLES))


def test_a_worker_still_restarting_gets_no_batch_until_it_is_back(tmp_path):
    """A find_peak probe after one that lost a worker: it joins once back, not before."""
    target = FakeTarget([Place(), Place(back_after_s=0.5)])
    run_bridge(target, tmp_path, min_duration_s=1.0)
    assert target.places[1].batches  # it joined
    assert target.places[0].batches[:10] and len(target.places[0].batches) > len(target.places[1].batches)


def test_multistream_accuracy_scores_each_example_once_though_loadgen_pads_its_last_query(tmp_path):
    """42 examples at 8 per query: LoadGen issues 48 samples, 6 of them again; each example runs once."""
    target = FakeTarget([Place()])
    spec = LoadGenLoad(scenario="multi_stream", samples_per_query=8)
    built = build_test_settings(spec, 42, accuracy=True)
    options = BridgeOptions("infer", 8, 0.0, max_attempts=3, accuracy=True)
    result = run_test(built, target, options, 42, tmp_path, ScenarioMeter(""), trace=False)
    entries = logged(tmp_path)
    assert len(entries) == 48 and sorted({idx for idx, _ in entries}) == list(range(42))  # LoadGen's 48
    ran = [i for batch in target.places[0].batches for i in batch]
    assert sorted(ran) == list(range(42)) and result.distinct_examples == 42  # each once
    assert all(idx == data for idx, data in entries)


def test_a_flushed_server_test_holds_nothing_back_for_a_fuller_batch(tmp_path):
    """With a 300 ms wait for full batches, the last partial batch would wait it out; after
    LoadGen's flush nothing waits, so no sample is as slow as the wait."""
    target = FakeTarget([Place(latency_s=0.0005)])
    result = run_bridge(target, tmp_path, bs=8, wait_s=0.3, target_qps=4000, min_queries=400, min_duration_s=0.1)
    assert result.detail.get("result_max_latency_ns") < 0.3e9, result.detail.get("result_max_latency_ns")
