"""startup: from `bench submit` to the first measured batch, on a warm cluster with a cached engine.

A Ray head is started first, configured as cluster.yaml configures nodes (token auth on, idle
workers preloading `workers.preload`), and one job is run to fill the engine cache and warm the
node's caches (OS page cache, Python bytecode). After the idle worker pool has refilled, the
measured submit: a fresh `bench submit --address ...` process; the time from launching it to the
start of the first measured batch (the earliest shard start of the first pass, after warm-up) is
the figure. Target <= 3 s.

Ray prestarts as many idle worker processes as the node has CPUs when the first driver connects,
and those serve any job; a process that served a job exits with it, and Ray does not start new
idle ones for later jobs. So once the first jobs on a node have used them up, every new worker
actor is a cold process (importing torch and transformers: 7-14 s on a 2-core node). `--submits N`
measures N submits after the fill and prints each with its timeline (orchestrator/timeline.py);
the headline stays the first, as it always was (the 2-CPU node here has one prestarted process left
for it, after the fill's actor).

    python benchmarks/startup.py [--engine onnxruntime] [--submits 2]
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
# A warm cluster: the worker processes Ray prestarts when the first driver connects have finished
# importing workers.preload (seconds each on 2 loaded cores). Without this wait the fill's actor may
# be requested while they still import: Ray then starts one more process for it, and the extra idle
# one it kills later may be a prestarted one, leaving the measured submit none (it went from 1.65 s
# to 10.3 s that way in two rounds). After the fill, the same wait lets its actor's process exit.
WARM_S = 15
sys.path.insert(0, str(ROOT))
from tests.cluster import LocalCluster  # noqa: E402


def submit(cluster: LocalCluster, results: Path, engine: str, cache: Path) -> tuple[float, float, str]:
    """Launch one `bench submit`; returns (launch time, first measured batch start, run id)."""
    args = [sys.executable, "-m", "orchestrator.cli", "submit", str(ROOT / "jobs/smoke.yaml"), "--address",
            cluster.address, "--results", str(results), "--workers", "1", "--set", f"engine={engine}",
            "--set", "passes=[infer]", "--set", "warmup=1", "--set", f"engine_cache={cache}"]
    launched = time.time()
    out = subprocess.run(args, capture_output=True, text=True, env=cluster.env(), cwd=ROOT, timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"bench submit failed: {out.stderr.strip()}")
    run_id = next(line.split()[-1] for line in out.stdout.splitlines() if line.startswith("run id:"))
    shards = pq.read_table(results / "runs" / run_id / "shards.parquet").to_pylist()
    return launched, min(s["start_ts"] for s in shards), run_id


def idle_workers(cluster: LocalCluster) -> int:
    """Idle Ray worker processes of the head node (its `ray start` process group) ready for a new job."""
    out = subprocess.run(["ps", "-eo", "pgid=,args="], capture_output=True, text=True, check=True).stdout
    group = str(cluster.procs[0].pid)
    return sum(1 for line in out.splitlines() if line.split(None, 1)[0] == group and "ray::IDLE" in line)


def describe(results: Path, run_id: str, launched: float, first_batch: float) -> str:
    workers = pq.read_table(results / "runs" / run_id / "workers.parquet").to_pylist()[0]
    steps = json.loads((results / "runs" / run_id / "timeline.json").read_text())["steps"]
    return (f"{first_batch - launched:.2f} s to the first measured batch; since the driver started: Ray joined "
            f"{steps['ray_started']:.2f} s, data ready {steps['data_ready']:.2f} s, workers ready "
            f"{steps['workers_ready']:.2f} s; engine cache hit {workers['engine_cache_hit']}, worker load "
            f"{workers['load_seconds']:.2f} s, data {workers['data_seconds']:.2f} s, build/load engine "
            f"{workers['build_seconds']:.2f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default="onnxruntime")
    parser.add_argument("--submits", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="engine torch, 2 s between submits: a smoke run")
    args = parser.parse_args(argv)
    engine, warm_s = ("torch", 2.0) if args.tiny else (args.engine, WARM_S)
    figures = []
    with tempfile.TemporaryDirectory(prefix="rb-startup-") as tmp:
        tmp_path = Path(tmp)
        results = tmp_path / "results"
        cluster = LocalCluster(tmp_path / "cluster", gpus_per_node=0,
                               node_env={"RAY_preload_python_modules": "workers.preload"}).start(nodes=1)
        try:
            time.sleep(warm_s)
            submit(cluster, results, engine, tmp_path / "engines")  # fills the engine cache
            time.sleep(warm_s)
            for i in range(args.submits):
                idle = idle_workers(cluster)
                launched, first_batch, run_id = submit(cluster, results, engine, tmp_path / "engines")
                figures.append(first_batch - launched)
                print(f"engine {engine}, measured submit {i + 1} ({idle} idle prestarted worker process(es) before it): "
                      f"{describe(results, run_id, launched, first_batch)}", flush=True)
                time.sleep(warm_s)
        finally:
            cluster.stop()
    print(f"startup_seconds: {figures[0]:.2f}")


if __name__ == "__main__":
    main()
