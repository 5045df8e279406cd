"""loadgen_ceiling: the samples per second at which raybench's LoadGen driver itself saturates.

MLPerf BERT Server on one 8-GPU H100 node is tens of thousands of samples per second; the one Python
driver issuing per query (LoadGen, the bridge's dispatcher, the lanes) must not be the system under
test. Here the system is free: the synthetic engine at 0 ms (a tiny random BERT's inputs, no model
call), bs 64, on 8 and 32 Ray worker actors sharing this machine's cores with the driver, and
`run_job` runs LoadGen Server in find_peak mode (quick rules: 1,307 queries at least, 1 s; a 100 ms
bound), so the peak it finds is where raybench stops keeping up. Two figures per worker count:

- peak: find_peak's highest VALID rate, samples/s (Server: one sample per query), and why it stopped;
- driver CPU per sample: the driver process's CPU time (user + system: LoadGen's threads, the
  dispatcher, the lanes' readers, Ray's core worker) over each probe's LoadGen test, divided by the
  samples LoadGen completed in it, at the highest VALID probe. The dispatcher is one Python thread
  and most of that time is spent holding the GIL, so a driver on any head node, 32 cores or 2, keeps
  up with at most about 1e6 / (that figure) samples/s on one fast core: more cores do not raise it.

Each worker count runs ROUNDS times; every round is printed. Target here (2 cores, workers on the
same cores): at least 10,000 samples/s with bs 64. Last line: the lowest peak over worker counts and
rounds.

    python benchmarks/loadgen_ceiling.py [--workers 8,32] [--rounds 2] [--start-qps 4000]
    python benchmarks/loadgen_ceiling.py --tiny      seconds: 2 workers, smoke rules, 2 probes
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._ray import local_ray  # noqa: E402

BS = 64
JOB = {
    "name": "loadgen-ceiling",
    "task": "masked_lm",
    "model": {"random": {"model_type": "bert", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1,
                         "num_attention_heads": 1, "intermediate_size": 16, "max_position_embeddings": 16}},
    "data": {"synthetic": {"seed": 0, "size": 4096}},
    "bs": BS,
    "seq_len": 16,
    "engine": {"name": "synthetic", "latency_ms": 0},
    "passes": ["infer"],
    "gpus_per_worker": 0,
    "cpus_per_worker": 0,
    "warmup": 1,
}


@dataclass
class Probe:
    target_qps: float
    valid: bool
    samples: int
    cpu_s: float

    @property
    def cpu_us_per_sample(self) -> float:
        return self.cpu_s / self.samples * 1e6 if self.samples else float("nan")


@dataclass
class CpuMeter:
    """The driver's CPU time over each LoadGen test: `run_test` wrapped, nothing else changed."""

    probes: list[Probe] = field(default_factory=list)

    def install(self):
        import orchestrator.modes.loadgen.serve as serve

        original = serve.run_test

        def timed(built, workers, options, examples, log_dir, meter, trace, target_qps=None):
            before = _cpu_s()
            test = original(built, workers, options, examples, log_dir, meter, trace, target_qps=target_qps)
            spent = _cpu_s() - before
            samples = int(test.detail.get("result_query_count") or 0)  # Server: one sample per query
            self.probes.append(Probe(test.target_qps or 0.0, test.valid, samples, spent))
            return test

        serve.run_test = timed
        return lambda: setattr(serve, "run_test", original)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def spec_for(workers: int, start_qps: float, tiny: bool):
    from orchestrator.spec import validate

    load = {"kind": "loadgen", "scenario": "server", "mode": "find_peak", "target_qps": start_qps,
            "latency_bound_ms": 100, "find_peak_tolerance": 0.1, "find_peak_max_runs": 2 if tiny else 8}
    if tiny:
        load.update(rules="smoke", min_duration_s=0.2)
    return validate({**JOB, "workers": workers, "load": load}, "loadgen_ceiling")


def one_round(workers: int, start_qps: float, tiny: bool, results: str):
    from orchestrator.driver import run_job

    meter = CpuMeter()
    restore = meter.install()
    try:
        row = run_job(spec_for(workers, start_qps, tiny), results_dir=results).row
    finally:
        restore()
    return row, meter.probes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="8,32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--start-qps", type=float, default=4000)
    parser.add_argument("--tiny", action="store_true", help="2 workers, smoke rules, 2 probes: seconds")
    args = parser.parse_args(argv)
    if args.tiny:
        args.workers, args.rounds, args.start_qps = "2", 1, 500
    counts = [int(n) for n in args.workers.split(",")]
    peaks: list[float] = []
    print(f"engine: synthetic, 0 ms, bs {BS}; LoadGen Server find_peak from {args.start_qps:g} QPS, 100 ms bound; "
          f"{'smoke' if args.tiny else 'quick'} rules")
    with local_ray(num_cpus=2, _node_ip_address="127.0.0.2"), tempfile.TemporaryDirectory() as results:
        for n in counts:
            for r in range(args.rounds):
                row, probes = one_round(n, args.start_qps, args.tiny, results)
                peak = row.target_qps if row.loadgen_result == "VALID" else 0.0
                peaks.append(peak)
                tried = ", ".join(f"{p.target_qps:.0f}{'' if p.valid else ' INVALID'} "
                                  f"({p.cpu_us_per_sample:.1f} us/sample)" for p in probes)
                best = max((p for p in probes if p.valid), key=lambda p: p.target_qps, default=None)
                cost = f"{best.cpu_us_per_sample:.1f}" if best else "-"
                saturated = "driver, not the system, was saturated" in (row.verdict_reasons or "")
                print(f"{n} workers, round {r + 1}: peak {peak:.0f} samples/s ({row.find_peak_stop}); driver CPU "
                      f"{cost} us/sample at the peak; issue delay p99 {(row.issue_delay_p99 or 0) * 1e3:.2f} ms"
                      f"{' (the row says: the driver was saturated)' if saturated else ''}; probes: {tried}")
                if best:
                    print(f"  one driver core saturates at about {1e6 / best.cpu_us_per_sample:,.0f} samples/s "
                          "(any head node: the dispatcher is one thread under the GIL)")
    print(f"loadgen_ceiling_samples_per_s: {min(peaks):.0f}")


if __name__ == "__main__":
    main()
