"""The schedule: each arrival process has the rate and shape it claims, the same seed gives the same
schedule, and the split among clients keeps each client's share evenly spread."""

import numpy as np
import pytest

from orchestrator.modes.endpoint.arrivals import (
    closed_schedule,
    cut,
    rate_schedule,
    read_trace,
    scheduled_rate,
    split,
    split_concurrency,
)
from orchestrator.spec.load import EndpointLoad
from workers.errors import UserError


def load(**fields) -> EndpointLoad:
    return EndpointLoad(rate=fields.pop("rate", 10.0), **fields)


def gaps(schedule) -> np.ndarray:
    return np.diff([s.at_s for s in schedule])


def test_constant_is_evenly_spaced_from_zero():
    schedule = rate_schedule(load(arrival="constant"), 8.0, 5, None, seed=0)
    assert [s.at_s for s in schedule] == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5])
    assert [s.request_id for s in schedule] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("arrival, burstiness, cv", [("poisson", 1.0, 1.0), ("gamma", 0.25, 2.0), ("gamma", 4.0, 0.5)])
def test_poisson_and_gamma_have_the_rate_and_the_gap_cv_they_claim(arrival, burstiness, cv):
    schedule = rate_schedule(load(arrival=arrival, burstiness=burstiness), 50.0, 20_000, None, seed=1)
    g = gaps(schedule)
    assert g.mean() == pytest.approx(1 / 50.0, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(cv, rel=0.05)
    assert scheduled_rate(schedule) == pytest.approx(50.0, rel=0.03)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another():
    a = rate_schedule(load(), 10.0, 50, None, seed=3)
    assert a == rate_schedule(load(), 10.0, 50, None, seed=3)
    assert a != rate_schedule(load(), 10.0, 50, None, seed=4)


def test_a_duration_keeps_what_is_scheduled_before_it_and_a_count_cuts_first():
    by_time = rate_schedule(load(), 100.0, None, 2.0, seed=0)
    assert max(s.at_s for s in by_time) < 2.0 and 150 < len(by_time) < 250
    assert len(rate_schedule(load(), 100.0, 30, 2.0, seed=0)) == 30
    assert len(rate_schedule(load(arrival="constant"), 10.0, 1000, 1.0, seed=0)) == 10


def test_the_split_is_round_robin_in_send_order_so_each_client_gets_the_rate_over_n():
    schedule = rate_schedule(load(arrival="constant"), 30.0, 30, None, seed=0)
    shares = split(schedule, 3)
    assert [len(s) for s in shares] == [10, 10, 10]
    assert [s.request_id for s in shares[1][:3]] == [1, 4, 7]
    for share in shares:
        assert scheduled_rate(share) == pytest.approx(10.0)
    assert sorted(s.request_id for share in shares for s in share) == list(range(30))
    assert split_concurrency(7, 3) == [3, 2, 2] and sum(split_concurrency(64, 5)) == 64


def test_a_trace_is_replayed_from_its_first_time_with_its_lengths():
    lines = ['{"t": 10.0, "input_tokens": 5, "output_tokens": 7}', "", '{"t": 10.5}', '{"t": 12, "output_tokens": 3}']
    schedule = read_trace(lines, "trace.jsonl")
    assert [s.at_s for s in schedule] == [0.0, 0.5, 2.0]
    assert (schedule[0].input_tokens, schedule[0].output_tokens) == (5, 7)
    assert schedule[1].input_tokens is None and schedule[2].output_tokens == 3
    assert [s.request_id for s in cut(schedule, None, 1.0)] == [0, 1]


@pytest.mark.parametrize("lines, said", [
    (['{"t": 1}', '{"t": 0.5}'], "line 2: t 0.5 is before"),
    (['{"time": 1}'], "line 1: expected"),
    (['{"t": 1, "output_tokens": 0}'], "whole numbers above 0"),
    (["not json"], "line 1"),
    ([], "has no requests"),
])
def test_a_bad_trace_is_one_line_naming_the_line(lines, said):
    with pytest.raises(UserError, match="load.trace: t.jsonl") as caught:
        read_trace(lines, "t.jsonl")
    assert said in str(caught.value)


def test_a_closed_loop_has_an_order_and_no_times():
    assert [s.request_id for s in closed_schedule(4)] == [0, 1, 2, 3]
