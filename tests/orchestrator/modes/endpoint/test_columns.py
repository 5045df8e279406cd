"""The endpoint rule set and find_peak's probe rule on figures of known values (pure), and the row's
columns as orchestrator/metrics/requests.py fills them."""

import json

import pytest

from orchestrator.metrics.requests import (
    Slo,
    repeated_figures,
    request_columns,
    request_figures,
    schedule_columns,
    schedule_figures,
)
from orchestrator.metrics.row import MetricsRow
from orchestrator.modes.endpoint.columns import BOTTLENECK, EndpointFigures, endpoint_rules
from orchestrator.modes.endpoint.peak import FEWEST, judge_probe
from orchestrator.modes.endpoint.send import Sent
from orchestrator.spec.verdict import VerdictSpec
from workers.requests import RequestError, RequestRecord

QUICK = VerdictSpec().rules(0.0)


def rec(i: int, arrival: float, lag: float = 0.0, ttft: float = 0.02, tokens: int = 4, error: str | None = None):
    sent = arrival + lag
    times = [sent + ttft + 0.005 * k for k in range(tokens)]
    return RequestRecord(i, arrival, sent_s=sent, first_byte_s=sent, token_times_s=times, token_counts=[1] * tokens,
                         end_s=times[-1], input_tokens=8, output_tokens=tokens,
                         error=RequestError(error, "x") if error else None)


def figures(repeats, client_cpu=(0.2,), **fields) -> EndpointFigures:
    return EndpointFigures(requests=repeated_figures(repeats), schedule=schedule_figures(repeats),
                           per_repeat=[request_figures(r) for r in repeats], client_cpu=list(client_cpu),
                           client_nodes=["n"], offered_rate=10.0, arrival="poisson", warmup_requests=0, **fields)


def steady(n: int = 40, rate: float = 10.0, **kw) -> list[RequestRecord]:
    return [rec(i, i / rate, **kw) for i in range(n)]


def test_a_client_that_kept_up_passes_and_one_that_fell_behind_is_named_with_its_cpu():
    assert endpoint_rules(figures([steady()]), QUICK).reasons == ()
    late = steady()
    for r in late[20:]:  # the second half sent 30 ms late
        r.sent_s += 0.03
    reasons = endpoint_rules(figures([late], client_cpu=(0.97, 0.4)), QUICK).reasons
    assert len(reasons) == 1 and reasons[0].startswith(BOTTLENECK)
    assert "schedule lag p99 30 ms > max_schedule_lag_ms 10" in reasons[0] and "0.97 cores" in reasons[0]


def test_a_sent_rate_below_the_schedule_is_the_client_too():
    slow = [rec(i, i / 10.0) for i in range(40)]
    for i, r in enumerate(slow):  # sent at 8/s against 10/s scheduled; each lag under the bound only at first
        r.sent_s = i / 8.0
    f = schedule_figures([slow])
    assert f.sent_ratio == pytest.approx(0.8)
    reasons = endpoint_rules(figures([slow]), VerdictSpec(max_schedule_lag_ms=10_000).rules(0.0)).reasons
    assert reasons == (f"{BOTTLENECK}: sent at 0.8 x the scheduled 10 req/s < min_sent_ratio 0.95 (busiest client "
                       "at 0.20 cores: its node's CPU went to other processes; give the clients nodes of their own)",)


def test_repeats_that_disagree_are_flagged_and_repeats_that_agree_are_not():
    agree = [steady(), steady(), steady()]
    assert endpoint_rules(figures(agree), QUICK).reasons == ()
    apart = [steady(ttft=0.02), steady(ttft=0.02), steady(ttft=0.2)]
    (reason, *more) = endpoint_rules(figures(apart), QUICK).reasons
    assert reason.startswith("repeats disagree: TTFT p50 per repeat 20, 20, 200 ms (CV")


def test_nothing_completed_and_too_short_are_reasons():
    broken = [rec(i, i / 100.0, error="http_5xx") for i in range(5)]
    reasons = endpoint_rules(figures([broken]), QUICK).reasons
    assert 'no request completed of 5 (errors: {"http_5xx": 5})' in reasons
    assert any(r.startswith("measured 0.") and "min_duration_s 1" in r for r in reasons)


def test_the_row_columns_are_the_figures_and_every_one_is_a_column():
    records = steady(n=100)
    records[3] = rec(3, 0.3, error="timeout")
    columns = {**request_columns(request_figures(records, Slo(ttft_s=0.05)), Slo(ttft_s=0.05)),
               **schedule_columns(schedule_figures([records]))}
    assert set(columns) <= set(MetricsRow.model_fields)
    assert (columns["requests"], columns["requests_completed"], columns["request_errors"]) == (100, 99, 1)
    assert json.loads(columns["errors_by_kind"]) == {"timeout": 1} and json.loads(columns["slo"]) == {"ttft_ms": 50.0}
    assert columns["ttft_p50"] == pytest.approx(0.02) and columns["tpot_p99"] == pytest.approx(0.005)
    assert columns["goodput_per_s"] == pytest.approx(99 / (9.9 + 0.035))


def test_repeats_pool_their_samples_and_average_their_rates():
    fast, slow = steady(rate=10.0), steady(rate=5.0)
    pooled = repeated_figures([fast, slow])
    assert pooled.requests == 80
    assert pooled.requests_per_s == pytest.approx((request_figures(fast).requests_per_s
                                                   + request_figures(slow).requests_per_s) / 2)


def sent(records) -> Sent:
    return Sent(10.0, records, [], 0.0)


def test_a_probe_passes_only_with_enough_requests_to_show_its_p99():
    slo = Slo(ttft_s=0.05)
    assert FEWEST == 299
    assert not judge_probe(10.0, sent(steady(n=298)), slo, QUICK).passed  # all met, but too few to say
    assert judge_probe(10.0, sent(steady(n=299)), slo, QUICK).passed
    one_miss = steady(n=400)
    one_miss[7] = rec(7, 0.7, ttft=0.5)
    probe = judge_probe(10.0, sent(one_miss), slo, QUICK)
    assert not probe.passed and probe.misses == 1 and "1 of 400 requests missed the slo" in probe.why
    assert judge_probe(10.0, sent(one_miss + steady(n=100)), slo, QUICK).misses == 1


def test_a_probe_whose_clients_fell_behind_fails_and_says_so():
    records = steady(n=300)
    for r in records[150:]:
        r.sent_s += 0.05
    probe = judge_probe(10.0, sent(records), Slo(ttft_s=1.0), QUICK)
    assert not probe.passed and probe.why.startswith("the clients fell behind: schedule lag p99")
