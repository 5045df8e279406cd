"""LoadGen's own logs, read back: the summary file's figures and verdict, the trace's per-query latencies.

The row's scenario figures are LoadGen's, read from `mlperf_log_summary.txt` exactly as printed
(no figure is recomputed here), so a raybench Server figure is the figure MLPerf would report.
Latencies there are in ns: per sample for Server and SingleStream (a query is one sample), per
query for MultiStream (its "Per-query latency" block; a query ends with its last sample).

The per-query distribution comes from the trace (`mlperf_log_trace.json`): one "Sample" begin
event per sample whose `complete_ns` counts from the query's scheduled start, LoadGen's latency.
The file is not strict JSON (LoadGen writes some events with raw newlines), so its sample lines
are matched one by one. A query's latency is its latest sample's; sorted, these give LoadGen's
percentiles at index n x p (results.cc), which a test checks against the summary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PERCENTILE = re.compile(r"^(\d+(?:\.\d+)?) percentile latency \(ns\)\s*:\s*(\d+)")
_SAMPLE = re.compile(r'"name":"Sample".*"ph":"b".*"query_seq":(\d+).*"complete_ns":(\d+)')


@dataclass(frozen=True)
class LoadGenSummary:
    scenario: str  # LoadGen's name: Server, SingleStream, MultiStream
    mode: str  # PerformanceOnly, AccuracyOnly
    result: str | None  # VALID | INVALID; None where LoadGen prints none (AccuracyOnly)
    constraints: dict[str, str] = field(default_factory=dict)  # "Min duration satisfied" -> "Yes" | "NO" | "Skipped"
    recommendations: tuple[str, ...] = ()
    early_stopping: str = ""  # the "Early Stopping Result" text, one line
    completed_samples_per_s: float | None = None  # Server
    qps_with_loadgen_overhead: float | None = None  # SingleStream
    latency_ns: dict[float, int] = field(default_factory=dict)  # percentile (50.0, 90.0, 99.0, ...) -> ns
    parameters: dict[str, str] = field(default_factory=dict)  # "Test Parameters Used", as printed

    def invalid_reason(self) -> str:
        """Why LoadGen said INVALID, in its own words, on one line ('' when it did not)."""
        if self.result != "INVALID":
            return ""
        failed = [name.replace(" satisfied", "") for name, value in self.constraints.items() if value == "NO"]
        parts = [f"LoadGen INVALID: not satisfied: {', '.join(failed) or '?'}"]
        parts += [r.lstrip("* ").strip() for r in self.recommendations]
        if "Early stopping satisfied" in [n for n, v in self.constraints.items() if v == "NO"] and self.early_stopping:
            parts.append(f"early stopping: {self.early_stopping}")
        return "; ".join(p for p in parts if p)


def _value(line: str) -> str:
    return line.split(":", 1)[1].strip()


def parse_summary(text: str) -> LoadGenSummary:
    """The summary file's fields (see the module docstring); unknown lines are skipped."""
    fields: dict = {"constraints": {}, "latency_ns": {}, "parameters": {}}
    recommendations: list[str] = []
    early: list[str] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or set(line) == {"="}:
            if section in ("recommendations", "early"):
                section = ""
            continue
        if line in ("Recommendations:", "Early Stopping Result:", "Test Parameters Used"):
            section = {"Recommendations:": "recommendations", "Early Stopping Result:": "early"}.get(line, "parameters")
            continue
        if line in ("Additional Stats", "MLPerf Results Summary") or line.startswith("No warnings") or \
                line.startswith("No errors"):
            section = ""
            continue
        if section == "parameters" and ":" in line:
            key, value = line.split(":", 1)
            fields["parameters"][key.strip()] = value.strip()
            continue
        if section == "recommendations" and line.startswith("*"):
            recommendations.append(line)
            continue
        if section == "early" and not line.endswith("satisfied"):
            early.append(line.lstrip("* ").strip())
            continue
        _read_line(line, raw, fields)
    return LoadGenSummary(scenario=fields.get("scenario", ""), mode=fields.get("mode", ""),
                          result=fields.get("result"), constraints=fields["constraints"],
                          recommendations=tuple(recommendations), early_stopping=" ".join(early),
                          completed_samples_per_s=fields.get("completed"), qps_with_loadgen_overhead=fields.get("qps"),
                          latency_ns=fields["latency_ns"], parameters=fields["parameters"])


def _read_line(line: str, raw: str, fields: dict) -> None:
    if line.startswith("Scenario :"):
        fields["scenario"] = _value(line)
    elif line.startswith("Mode "):
        fields["mode"] = _value(line)
    elif line.startswith("Result is :"):
        fields["result"] = _value(line)
    elif raw.startswith("  ") and ":" in line and "satisfied" in line:
        name, value = line.split(":", 1)
        fields["constraints"][name.strip()] = value.strip()
    elif line.startswith("Completed samples per second") and "completed" not in fields:
        fields["completed"] = float(_value(line))
    elif line.startswith("QPS w/ loadgen overhead"):
        fields["qps"] = float(_value(line))
    elif match := _PERCENTILE.match(line):
        fields["latency_ns"].setdefault(float(match.group(1)), int(match.group(2)))


_FIRST_TOKEN = re.compile(r"^(\d+(?:\.\d+)?) percentile first token latency \(ns\)\s*:\s*(\d+)")
_FIRST_TOKEN_STREAM = re.compile(r"^(\d+(?:\.\d+)?)th first token percentile latency \(ns\)\s*:\s*(\d+)")
_PER_TOKEN = re.compile(r"^(\d+(?:\.\d+)?) percentile time to output token \(ns\)\s*:\s*(\d+)")
_TOKENS_PER_S = re.compile(r"^(?:Completed tokens per second|Tokens per second|TPS w/o loadgen overhead)\s*:\s*"
                           r"([\d.eE+-]+)")


@dataclass(frozen=True)
class TokenLatencies:
    """LoadGen's token figures (use_token_latencies), from the summary as printed: TTFT ("first token
    latency") and TPOT ("time to output token", which is LoadGen's per-sample (latency - TTFT) /
    (tokens - 1)) percentiles in ns, and its tokens per second."""

    ttft_ns: dict[float, int] = field(default_factory=dict)
    tpot_ns: dict[float, int] = field(default_factory=dict)
    tokens_per_s: float | None = None


def parse_token_latencies(text: str) -> TokenLatencies | None:
    """The summary's token figures; None when the test did not measure tokens."""
    ttft: dict[float, int] = {}
    tpot: dict[float, int] = {}
    tokens_per_s = None
    for raw in text.splitlines():
        line = raw.strip()
        if match := _FIRST_TOKEN.match(line) or _FIRST_TOKEN_STREAM.match(line):
            ttft.setdefault(float(match.group(1)), int(match.group(2)))
        elif match := _PER_TOKEN.match(line):
            tpot.setdefault(float(match.group(1)), int(match.group(2)))
        elif (match := _TOKENS_PER_S.match(line)) and tokens_per_s is None:
            tokens_per_s = float(match.group(1))
    if not ttft and not tpot and tokens_per_s is None:
        return None
    return TokenLatencies(ttft, tpot, tokens_per_s)


def query_latencies_ns(trace_lines) -> dict[int, tuple[int, int]]:
    """query_seq -> (samples, latency in ns) from the trace's sample events."""
    queries: dict[int, tuple[int, int]] = {}
    for line in trace_lines:
        if '"Sample"' not in line:
            continue
        match = _SAMPLE.search(line)
        if match:
            query, complete = int(match.group(1)), int(match.group(2))
            samples, latency = queries.get(query, (0, 0))
            queries[query] = (samples + 1, max(latency, complete))
    return queries


def loadgen_percentile(sorted_values: list[int], percentile: float) -> int:
    """LoadGen's percentile of sorted values: the element at index n x p (results.cc), no interpolation."""
    return sorted_values[int(len(sorted_values) * percentile / 100)]
