"""The row's generation section (task generate): the figures of docs/measurement.md, each made here.

Latencies come from the requests' records through orchestrator/metrics/requests.py, the one place
TTFT, TPOT, ITL and E2E are computed; percentiles pool every request of every worker. The rest,
per METRICS.md's rules for core figures (workers run concurrently, so per-worker rates add up):
- output tokens/s are the pass's p_infer_core and p_infer_whole (items are output tokens);
- requests_per_s = completed requests / (last end - first arrival), from the records;
- prefill_tokens_per_s = sum over workers of prompt tokens_w / prefill seconds_w (static batches);
- MFU_prefill, MFU_decode = sum over workers of FLOPs_w / seconds_w of that phase / the summed
  datasheet peaks (MFU's denominator); *_measured against the measured matmul peaks;
- MBU = sum over workers of decode bytes_w / decode seconds_w / the summed datasheet bandwidths of
  their devices (each physical device once); MBU_measured against the measured bandwidths.
Prefill and decode apart need static batches (continuous batching interleaves them): the phase
figures are blank for it, and `mbu_note` says why.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from orchestrator.metrics.requests import request_figures
from orchestrator.metrics.sections import distinct_devices
from orchestrator.spec import EngineJob
from workers.contract import DecodeTotals, ShardResult, WorkerInfo
from workers.requests import RequestRecord

LEVELS = (50.0, 90.0, 99.0)


def _per_worker(results: Sequence[ShardResult]) -> dict[int, DecodeTotals]:
    totals: dict[int, DecodeTotals] = defaultdict(DecodeTotals)
    for r in results:
        if r.decode is not None:
            totals[r.worker_id] = totals[r.worker_id].add(r.decode)
    return dict(totals)


def _rate(totals: dict[int, DecodeTotals], amount: str, seconds: str) -> float | None:
    """Sum over workers of amount_w / seconds_w; None when a worker's split is unknown."""
    rates = []
    for t in totals.values():
        value, time_s = getattr(t, amount), getattr(t, seconds)
        if value is None or time_s is None:
            return None
        if time_s > 0:
            rates.append(value / time_s)
    return sum(rates) if rates and any(rates) else None


def _share(rate: float | None, peak: float | None) -> float | None:
    return rate / peak if rate is not None and peak else None


def _bandwidths(infos: list[WorkerInfo], ran: set[int]) -> tuple[float | None, float | None, str | None]:
    """(datasheet, measured) bandwidth summed over the physical devices of the workers in `ran`, and
    why the datasheet one is missing."""
    used = [i for i in infos if i.worker_id in ran]
    by_device: dict[str, WorkerInfo] = {}
    for info in used:
        by_device.setdefault(next(iter(distinct_devices([info]))), info)
    sheet = [i.mem_bandwidth for i in by_device.values()]
    measured = [i.mem_bandwidth_measured for i in by_device.values()]
    missing = next((i for i in used if i.mem_bandwidth is None), None)
    return (sum(sheet) if sheet and missing is None else None,
            sum(measured) if measured and all(m is not None for m in measured) else None,
            (missing.mem_bandwidth_reason or f"no bandwidth known for {missing.device_name}") if missing else None)


def generation_columns(spec: EngineJob, results: Sequence[ShardResult], infos: list[WorkerInfo],
                       peaks: dict[str, Any], requests: Sequence[RequestRecord] | None = None) -> dict[str, Any]:
    """The generation section of the row (module docstring); {} for tasks that do not generate.
    `results`: the measured pass's (first repeat); `peaks`: the row's MFU section (its denominators);
    `requests`: records to use instead of the results' own (LoadGen's, on the driver's clock)."""
    task = spec.task
    if not type(task).generates:
        return {}
    records = list(requests) if requests is not None else [rec for r in results for rec in r.requests]
    figures = request_figures(records)
    totals = _per_worker(results)
    continuous = any(t.prefill_seconds is None for t in totals.values())
    sheet, measured, why = _bandwidths(infos, set(totals))
    decode_bytes_per_s = _rate(totals, "decode_bytes", "decode_seconds")
    prefill_flops_per_s = _rate(totals, "prefill_flops", "prefill_seconds")
    decode_flops_per_s = _rate(totals, "decode_flops", "decode_seconds")
    if continuous:
        note = f"engine {spec.engine.name} interleaves prefill and decode: no decode-only time to divide by"
    elif decode_bytes_per_s is None:
        note = f"engine {spec.engine.name} runs no model: no bytes read"
    else:
        note = why
    columns: dict[str, Any] = {
        "requests": figures.requests,
        "requests_per_s": figures.requests_per_s,
        "input_tokens_mean": figures.input_tokens_mean,
        "output_tokens_mean": figures.output_tokens_mean,
        "prefill_tokens_per_s": _rate(totals, "input_tokens", "prefill_seconds"),
        "MFU_prefill": _share(prefill_flops_per_s, peaks.get("peak_flops")),
        "MFU_decode": _share(decode_flops_per_s, peaks.get("peak_flops")),
        "MFU_prefill_measured": _share(prefill_flops_per_s, peaks.get("peak_flops_measured")),
        "MFU_decode_measured": _share(decode_flops_per_s, peaks.get("peak_flops_measured")),
        "MBU": _share(decode_bytes_per_s, sheet),
        "MBU_measured": _share(decode_bytes_per_s, measured),
        "mem_bandwidth": sheet,
        "mem_bandwidth_measured": measured,
        "mbu_note": note if _share(decode_bytes_per_s, sheet) is None else None,
        "sampling": task.sampling_label,
        "ignore_eos": task.ignore_eos,
        "input_tokens": task.input_tokens.label,
        "max_new_tokens": task.max_new_tokens.label,
    }
    for name, levels in (("ttft", figures.ttft), ("tpot", figures.tpot), ("itl", figures.itl), ("e2e", figures.e2e)):
        for level in LEVELS:
            columns[f"{name}_p{level:g}"] = levels.get(level)
    return columns


def requests_table(records: Sequence[RequestRecord]) -> list[dict[str, Any]]:
    """requests.parquet: one row per request, its times (s, the recorder's clock) and its latencies."""
    from orchestrator.metrics.requests import e2e_s, tpot_s, ttft_s

    return [{"request": r.request_id, "source": r.source, "arrival_s": r.arrival_s, "sent_s": r.sent_s,
             "first_token_s": r.first_token_s, "end_s": r.end_s, "input_tokens": r.input_tokens,
             "output_tokens": r.output_tokens, "ttft_s": ttft_s(r), "tpot_s": tpot_s(r), "e2e_s": e2e_s(r),
             "token_times_s": list(r.token_times_s), "error": r.error.message if r.error else None}
            for r in sorted(records, key=lambda r: (r.arrival_s, r.request_id))]
