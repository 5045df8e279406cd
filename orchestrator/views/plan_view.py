"""Printing `bench validate JOB --plan`: a few header lines, then one table row per pass and shard."""

from __future__ import annotations

import json
from typing import Any


def plan_json(preview: dict[str, Any]) -> str:
    return json.dumps(preview)


def print_plan(preview: dict[str, Any], width: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=width)
    data, workers = preview["data"], preview["workers"]
    shards = preview["shards"]
    per_pass = len(shards) // max(1, len(preview["passes"]))
    repeats = f", the {preview['measured_pass']} pass {preview['repeats']} times" if preview["repeats"] > 1 else ""
    hit = {True: "read from the cache", False: "made now and cached", None: "generated"}[data["cache_hit"]]
    lines = [
        f"{preview['job']}: {preview['task']}, {preview['num_examples']} examples ({preview['item_unit']}), bs "
        f"{preview['bs']}, {per_pass} shards per pass by {preview['by']}{repeats}",
        f"data: {data['where']}; here: {hit} in {data['prepared_now_seconds']:.2f} s, fingerprint {data['fingerprint']}",
        f"workers: {workers['note']}",
        f"dispatch order (the bulk by id, then the tapered tail dearest first): {_order(preview['dispatch_order'])}",
    ]
    if preview.get("order") == "cost":
        lines.append("examples sorted by cost (prompt length), dearest first, so batches hold similar lengths: "
                     "start and stop are positions in that order")
    for line in lines:
        console.print(line, soft_wrap=True, markup=False)
    table = Table("pass", "shard_id", "start", "stop", "examples", "share")
    for s in shards:
        table.add_row(s["pass"], str(s["shard_id"]), str(s["start"]), str(s["stop"]), str(s["examples"]),
                      f"{100 * s['share']:.2f} %")
    console.print(table)


def _order(order: list[int]) -> str:
    """'0-211, 230 215 ...': the leading run in id order shortened, the rest as handed out."""
    lead = next((i for i, k in enumerate(order) if k != i), len(order))
    head = [f"0-{lead - 1}"] if lead > 1 else [str(k) for k in order[:lead]]
    return " ".join(head + [str(k) for k in order[lead:]])
