"""LoadGen's own logs, read back: the detail log's MLLOG entries (what MLPerf's submission checker
reads) and the trace's per-sample events. Pure; no figure is recomputed here.

`mlperf_log_detail.txt`: one `:::MLLOG {json}` per line; a key can repeat (the first value is the
one the checker takes), and errors are entries whose metadata says `is_error` (keys error_runtime,
error_invalid_config, ...), counted here because `num_errors` is missing in accuracy mode and misses
errors logged after the results block. Latencies are ns: per sample, and for MultiStream also per
query (a query ends with its last sample).

`mlperf_log_trace.json` is not strict JSON (LoadGen writes some events with doubled quotes), so its
sample events are matched line by line: each "Sample" begin event has the query it belongs to, when
LoadGen actually issued it (`issue_start_ns`, from its scheduled time: the issue delay) and when it
completed (`complete_ns`, LoadGen's latency).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

MLLOG = ":::MLLOG "
_SAMPLE = re.compile(r'"name":"Sample".*"ph":"b".*"query_seq":(\d+).*"issue_start_ns":(\d+).*"complete_ns":(\d+)')


@dataclass(frozen=True)
class DetailLog:
    values: dict[str, Any] = field(default_factory=dict)  # each key's first value
    errors: tuple[str, ...] = ()  # the messages of every error entry, in order
    warnings: tuple[str, ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    @property
    def scenario(self) -> str:
        """LoadGen's name for it: Server, SingleStream, MultiStream, Offline."""
        return str(self.get("effective_scenario", "")).replace(" ", "")

    @property
    def accuracy(self) -> bool:
        return self.get("effective_test_mode") == "AccuracyOnly"

    @property
    def result(self) -> str | None:
        """VALID | INVALID; None in accuracy mode (LoadGen judges nothing there)."""
        return self.get("result_validity")

    @property
    def target_percentile(self) -> float | None:
        """The percentile LoadGen's verdict and headline use, as a fraction (0.9, 0.99, 0.999)."""
        value = self.get("effective_target_latency_percentile")
        return float(value) if value is not None else None

    def latency_ns(self, percentile: float, per_query: bool = False) -> int | None:
        """LoadGen's raw percentile (sorted[int(n x p)]), per sample or (MultiStream) per query."""
        kind = "_per_query" if per_query else ""
        return self.get(f"result_{percentile:.2f}_percentile{kind}_latency_ns")

    @property
    def early_stopping_ns(self) -> int | None:
        """MLPerf's stream metric: the early-stopping estimate of the target percentile (0: none)."""
        key = {"SingleStream": "early_stopping_latency_ss", "MultiStream": "early_stopping_latency_ms"}
        value = self.get(key.get(self.scenario, ""))
        return int(value) if value else None

    @property
    def samples_per_s(self) -> float | None:
        """The throughput figure the checker reads: Server's completed samples/s, Offline's samples/s,
        SingleStream's QPS with LoadGen's overhead (its one sample per query); MultiStream has none."""
        key = {"Server": "result_completed_samples_per_sec", "Offline": "result_samples_per_second",
               "SingleStream": "result_qps_with_loadgen_overhead"}.get(self.scenario)
        return self.get(key) if key else None

    def invalid_reason(self) -> str:
        """Why LoadGen said INVALID, in its own words, on one line ('' when it did not)."""
        if self.result != "INVALID":
            return ""
        parts = [str(self.get("result_invalid_reason", "")).strip()]
        if self.get("early_stopping_met") is False:  # with token latencies, LoadGen says it of TTFT and TPOT
            said = [(name, " ".join(str(self.get(f"early_stopping_{key}", "")).split()))
                    for name, key in (("", "result"), ("TTFT ", "ttft_result"), ("TPOT ", "tpot_result"))]
            parts += [f"{name}early stopping: {text}" for name, text in said if text] or ["early stopping not met"]
        if self.get("result_perf_constraints_met") is False and not parts[0]:
            parts.append("performance constraints not met")
        return "LoadGen INVALID: " + ("; ".join(p for p in parts if p) or "no reason given")

    def settings(self) -> dict[str, Any]:
        """What LoadGen ran with: every effective_* value, under its name without the prefix."""
        return {key.removeprefix("effective_"): value for key, value in self.values.items()
                if key.startswith("effective_")}


def parse_detail(text: str) -> DetailLog:
    values: dict[str, Any] = {}
    errors, warnings = [], []
    for line in text.splitlines():
        if not line.startswith(MLLOG):
            continue
        try:
            entry = json.loads(line[len(MLLOG):])
        except ValueError:
            continue
        key, value, meta = entry.get("key"), entry.get("value"), entry.get("metadata") or {}
        values.setdefault(key, value)
        if meta.get("is_error"):
            errors.append(f"{key}: {value}")
        elif meta.get("is_warning"):
            warnings.append(str(value))
    return DetailLog(values, tuple(errors), tuple(warnings))


def trace_samples(lines: Iterable[str]) -> Iterator[tuple[int, int, int]]:
    """(query_seq, issue_start_ns, complete_ns) of every sample in the trace, in file order."""
    for line in lines:
        if '"Sample"' in line:
            match = _SAMPLE.search(line)
            if match:
                yield int(match.group(1)), int(match.group(2)), int(match.group(3))


def query_latencies_ns(trace_lines: Iterable[str]) -> dict[int, tuple[int, int]]:
    """query_seq -> (samples, latency in ns): a query ends with its latest sample."""
    queries: dict[int, tuple[int, int]] = {}
    for query, _, complete in trace_samples(trace_lines):
        samples, latency = queries.get(query, (0, 0))
        queries[query] = (samples + 1, max(latency, complete))
    return queries


@dataclass(frozen=True)
class TokenLatencies:
    """LoadGen's token figures (use_token_latencies), from the detail log's keys the checker reads:
    TTFT (`result_first_token_<p>_percentile_latency_ns`) and TPOT
    (`result_time_per_output_token_<p>_percentile_ns`, LoadGen's per-sample (latency - TTFT) /
    (tokens - 1)) percentiles in ns, and its tokens per second (`result_completed_tokens_per_second`;
    Offline `result_tokens_per_second`)."""

    ttft_ns: dict[float, int] = field(default_factory=dict)
    tpot_ns: dict[float, int] = field(default_factory=dict)
    tokens_per_s: float | None = None


TOKEN_PERCENTILES = (50.0, 90.0, 95.0, 97.0, 99.0, 99.9)


def token_latencies(detail: DetailLog) -> TokenLatencies | None:
    """The test's token figures; None when it did not measure tokens."""
    ttft = {p: detail.get(f"result_first_token_{p:.2f}_percentile_latency_ns") for p in TOKEN_PERCENTILES}
    tpot = {p: detail.get(f"result_time_per_output_token_{p:.2f}_percentile_ns") for p in TOKEN_PERCENTILES}
    ttft = {p: int(v) for p, v in ttft.items() if v is not None}
    tpot = {p: int(v) for p, v in tpot.items() if v is not None}
    rate = detail.get("result_completed_tokens_per_second", detail.get("result_tokens_per_second"))
    if not ttft and not tpot and rate is None:
        return None
    return TokenLatencies(ttft, tpot, float(rate) if rate is not None else None)
