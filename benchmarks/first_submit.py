"""first_submit: the newcomer's first command, `bench submit jobs/smoke.yaml`, with no cluster running.

A fresh `bench` process starts its own local Ray (bound to 127.0.0.2, which stays on loopback),
runs the smoke job (tiny random BERT, synthetic data, 2 workers, val and infer passes) and stores
its row. Printed: the command's wall time and where it went, from the run's timeline.json (when
Ray was up, the data ready, the workers ready, each pass) and its row (ray_start_time, data_time,
load_time, build_time). Headline: the command's wall time; `after_ray` is what is ours.

    python benchmarks/first_submit.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def first_submit(results: Path) -> tuple[float, dict, dict]:
    args = [sys.executable, "-m", "orchestrator.cli", "submit", str(ROOT / "jobs/smoke.yaml"), "--results",
            str(results), "--node-ip", "127.0.0.2"]
    launched = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    wall = time.perf_counter() - launched
    if out.returncode != 0:
        raise SystemExit(f"bench submit failed: {out.stderr.strip()}")
    (metrics,) = (results / "metrics").glob("*.parquet")
    row = pq.read_table(metrics).to_pylist()[0]
    path = results / "runs" / row["run_id"] / "timeline.json"  # (a raybench before issue 21 wrote none)
    return wall, row, json.loads(path.read_text()) if path.exists() else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="one round (what it always is, by default)")
    rounds = parser.parse_args(argv).rounds
    walls = []
    for i in range(rounds):
        with tempfile.TemporaryDirectory(prefix="rb-first-") as tmp:
            wall, row, timeline = first_submit(Path(tmp))
        walls.append(wall)
        if not timeline:
            print(f"round {i + 1}: {wall:.1f} s in all; row: data_time {row['data_time']:.2f} s, load_time "
                  f"{row['load_time']:.2f} s, build_time {row['build_time']:.2f} s, e2e_time {row['e2e_time']:.1f} s")
            continue
        steps = timeline["steps"]
        passes = ", ".join(f"{name} {a:.1f}-{b:.1f} s" for name, (a, b) in timeline["passes"].items())
        print(f"round {i + 1}: {wall:.1f} s in all; since submit: ray started {steps['ray_started']:.1f} s, data ready "
              f"{steps['data_ready']:.1f} s, workers ready {steps['workers_ready']:.1f} s, {passes}, row written "
              f"{steps['row_written']:.1f} s; row: ray_start_time {row['ray_start_time']:.1f} s, data_time "
              f"{row['data_time']:.2f} s, load_time {row['load_time']:.2f} s, build_time {row['build_time']:.2f} s, "
              f"e2e_time {row['e2e_time']:.1f} s; after_ray {wall - row['ray_start_time']:.1f} s")
    print(f"first_submit_seconds: {min(walls):.1f}")


if __name__ == "__main__":
    main()
