"""data_prep: what preparing the data costs as workers are added.

Masked-LM on a large text: WikiText-2 (`../shared/data/text`) repeated to `--mb` megabytes, the real
bert-base-uncased vocabulary (30,522 tokens), a random BERT behind the synthetic engine (so nothing
but the data costs CPU), on a local Ray with 1, 4 and 8 workers of 0.25 CPU each (they fit on 2
cores). `task.limit` keeps the measured passes short: the whole text is still read, tokenised and
masked (the masks are drawn over the whole stream), only the first windows are run.

Per worker count, one run with an empty data cache:
  - preparation CPU seconds: process CPU time (all threads) spent inside the data-preparation entry
    point, summed over every process that ran it. A hook installed in every Ray worker process
    (`worker_process_setup_hook`) times it. The entry point is `workers.data.dataprep.prepare_dataset`
    where it exists (issue 13: once per run), else the task constructor `MaskedLM.__init__` (before:
    every worker built its own copy), so the same script measures both versions of the code;
  - the run's e2e_time;
  - each worker's peak RSS (`peak_mem_bytes` in shards.parquet, the process's ru_maxrss).
Then, where the data cache exists, the 8-worker job once more: the cache hit it should be.

Headline: preparation CPU seconds at 8 workers / at 1 worker (target <= 1.2), and the largest
worker peak RSS at 8 workers / at 1 worker (target <= 1.2). The old code tokenises the text in every
worker: ~150 MiB of tokenizer memory per MB of text per worker, so at 8 workers keep `--mb` small
enough for the machine (5 MB: ~1.2 GiB per worker before issue 13).

    python benchmarks/data_prep.py [--mb 5] [--counts 1,4,8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._ray import local_ray

WIKITEXT = ROOT.parent / "shared" / "data" / "text" / "wikitext-2-raw-test.raw"
CPUS = 2
CPU_PER_WORKER = 0.25
LOG_ENV = "RAYBENCH_PREP_LOG"


def instrument() -> None:
    """Time the data-preparation entry point in this process (installed in every Ray worker).

    Self-contained on purpose: Ray ships it to the workers by value. Each call appends one JSON
    line (pid, CPU and wall seconds) to a file named after the process in $RAYBENCH_PREP_LOG.
    """
    import functools
    import importlib
    import json
    import os
    import time

    folder = os.environ.get("RAYBENCH_PREP_LOG")
    if not folder:
        return
    try:
        owner, name = importlib.import_module("workers.data.dataprep"), "prepare_dataset"
    except ImportError:
        owner, name = importlib.import_module("workers.tasks.masked_lm").MaskedLM, "__init__"
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            line = {"pid": os.getpid(), "entry": f"{getattr(owner, '__name__', owner)}.{name}",
                    "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0}
            with open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a") as fh:
                fh.write(json.dumps(line) + "\n")

    setattr(owner, name, timed)


def make_text(folder: Path, megabytes: float) -> Path:
    """WikiText-2's test split repeated to about `megabytes` MB (whole copies)."""
    text = WIKITEXT.read_text(encoding="utf-8")
    copies = max(1, round(megabytes * 1e6 / len(text.encode())))
    path = folder / f"wikitext-x{copies}.raw"
    path.write_text(text * copies, encoding="utf-8")
    return path


def job(workers: int, text: Path, cache: Path, has_data_cache: bool) -> dict:
    from tests.builders import bert_vocab

    spec = {
        "name": f"data-prep-{workers}",
        "task": {"name": "masked_lm", "limit": 256},
        "model": {"random": {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128},
                  "tokenizer": str(bert_vocab())},
        "data": str(text),
        "bs": 4,
        "seq_len": 128,
        "engine": {"name": "synthetic", "latency_ms": 0},
        "passes": ["infer"],
        "workers": workers,
        "gpus_per_worker": 0,
        "cpus_per_worker": CPU_PER_WORKER,
        "warmup": 1,
    }
    if has_data_cache:
        spec["data_cache"] = str(cache)
    return spec


def preparation_cpu(log: Path) -> tuple[float, int]:
    """(CPU seconds, calls) logged by `instrument` since the folder was emptied."""
    calls = [json.loads(line) for path in log.glob("*.jsonl") for line in path.read_text().splitlines()]
    return sum(c["cpu_s"] for c in calls), len(calls)


def worker_peaks(run_dir: Path) -> dict[int, int]:
    import pyarrow.parquet as pq

    peaks: dict[int, int] = {}
    for shard in pq.read_table(run_dir / "shards.parquet").to_pylist():
        peaks[shard["worker_id"]] = max(peaks.get(shard["worker_id"], 0), shard["peak_mem_bytes"] or 0)
    return peaks


def run_one(spec: dict, results: Path, log: Path) -> dict:
    from orchestrator.driver import run_job
    from orchestrator.spec import validate

    for path in log.glob("*.jsonl"):
        path.unlink()
    result = run_job(validate(spec, "data_prep"), results_dir=results)
    time.sleep(0.5)  # the preparation's log line is written as its call returns
    cpu, calls = preparation_cpu(log)
    peaks = worker_peaks(result.run_dir)
    return {"cpu": cpu, "calls": calls, "e2e": result.row.e2e_time, "peaks": peaks, "row": result.row}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=5.0, help="size of the text in MB")
    parser.add_argument("--counts", default="1,4,8")
    parser.add_argument("--tiny", action="store_true", help="0.1 MB, 1 and 2 workers: seconds")
    args = parser.parse_args(argv)
    if args.tiny:
        args.mb, args.counts = 0.1, "1,2"
    counts = [int(c) for c in args.counts.split(",")]
    import workers
    from orchestrator.spec import JobSpec

    has_data_cache = "data_cache" in JobSpec.model_fields
    print(f"code: {Path(workers.__file__).parent.parent} ({'shared preparation' if has_data_cache else 'per-worker preparation'})")
    with tempfile.TemporaryDirectory(prefix="rb-data-prep-") as tmp:
        tmp_path = Path(tmp)
        log = tmp_path / "prep-log"
        log.mkdir()
        os.environ[LOG_ENV] = str(log)
        text = make_text(tmp_path, args.mb)
        print(f"text: {text.stat().st_size / 1e6:.1f} MB ({text.name}), workers of {CPU_PER_WORKER} CPU on {CPUS} CPUs")
        runs: dict[int, dict] = {}
        env = {"worker_process_setup_hook": instrument, "env_vars": {LOG_ENV: str(log)}}
        with local_ray(num_cpus=CPUS, runtime_env=env, _node_ip_address="127.0.0.13"):
            instrument()  # the driver too: the in-process path would prepare here
            for n in counts:
                cache = tmp_path / f"data-cache-{n}"  # empty: every count prepares from scratch
                runs[n] = out = run_one(job(n, text, cache, has_data_cache), tmp_path / "results", log)
                peaks = sorted(out["peaks"].values())
                print(f"{n} worker(s): preparation {out['cpu']:.1f} CPU s in {out['calls']} call(s), e2e_time "
                      f"{out['e2e']:.1f} s, data_time {out['row'].data_time:.1f} s, worker peak RSS max "
                      f"{peaks[-1] / 2**20:,.0f} MiB (min {peaks[0] / 2**20:,.0f}, {len(peaks)} workers with shards)",
                      flush=True)
            if has_data_cache:
                again = run_one(job(counts[-1], text, tmp_path / f"data-cache-{counts[-1]}", True),
                                tmp_path / "results", log)
                print(f"{counts[-1]} worker(s) again: data_cache_hit {again['row'].data_cache_hit}, preparation "
                      f"{again['cpu']:.1f} CPU s in {again['calls']} call(s), data_time {again['row'].data_time:.2f} s,"
                      f" e2e_time {again['e2e']:.1f} s", flush=True)
    first, last = counts[0], counts[-1]
    print(f"rss_ratio_{last}_over_{first}: {max(runs[last]['peaks'].values()) / max(runs[first]['peaks'].values()):.2f}")
    print(f"prep_cpu_ratio_{last}_over_{first}: {runs[last]['cpu'] / runs[first]['cpu']:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
