"""`bench export mlperf RUN_ID... DIR`: LoadGen runs laid out as an MLPerf Inference submission.

Each run's LoadGen logs go where the submission checker looks for them, under
`DIR/<division>/<submitter>/results/<system>/<benchmark>/<scenario>/`:
- a performance test (a plain run's logs, an audited run's `performance/`, find_peak's best probe) ->
  `performance/run_1/` (summary and detail logs);
- an accuracy test (load.mode accuracy, or an audited run's `accuracy/`) -> `accuracy/`: its logs, the
  accuracy log truncated as MLPerf's truncate_accuracy_log.py does (its first and last 4 KiB; the
  full log's sha256 in accuracy.txt) and accuracy.txt with raybench's accuracy script's figure;
- a compliance test (TEST01, TEST04) -> `TEST0x/performance/run_1/` and its verify files, which
  carry raybench's verdict by the test's own criterion (orchestrator/modes/loadgen/compliance.py);
beside them `user.conf` (what the run set), `measurements.json`, `README.md`, mlperf.conf, and
`systems/<system>.json` from what the runs recorded (nodes, devices, memory, versions; what raybench
cannot know about the hosts is left empty for `--system-json` to fill). The tree is then checked
(check.py) and every problem is printed: a quick run exports, and says why it is no submission.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.metrics.row import MetricsRow
from orchestrator.metrics.store import ResultsStore, RunFolder
from orchestrator.modes.loadgen.logs import DetailLog, parse_detail
from orchestrator.spec import mlperf_conf
from orchestrator.submission import rules
from workers.errors import UserError

LOGS = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")
ACCURACY_LOG = "mlperf_log_accuracy.json"


@dataclass(frozen=True)
class Identity:
    """Who submits what: the tree's folder names."""

    division: str = "open"
    submitter: str = "raybench"
    system: str | None = None  # default: from the first run's devices
    benchmark: str | None = None  # default: the checker's name of the job's mlperf_model, else the job's name
    system_json: dict | None = None  # the submitter's own system description fields, over the recorded ones


@dataclass(frozen=True)
class Test:
    """One LoadGen test's logs in a run: its folder, what LoadGen logged, its role in the tree."""

    run: RunFolder
    row: MetricsRow
    folder: str  # inside the run, e.g. loadgen/performance
    detail: DetailLog
    role: str  # performance | accuracy | TEST01 | TEST04


def export_runs(store: ResultsStore, rows: list[MetricsRow], out: Path, who: Identity) -> tuple[Path, list[str]]:
    """Write the tree for these runs' rows; returns the scenario folders' parent and the checker's problems."""
    from orchestrator.submission.check import check_tree

    if who.division not in rules.DIVISIONS:
        raise UserError(f"--division: '{who.division}' is not one of {', '.join(rules.DIVISIONS)}")
    tests = [t for row in rows for t in _tests(store.run(row.run_id), row)]
    system = who.system or _system_name(rows[0])
    base = out / who.division / who.submitter
    placed: dict[Path, str] = {}
    for test in tests:
        benchmark = who.benchmark or _benchmark(test.run)
        scenario_dir = base / "results" / system / benchmark / test.detail.scenario
        target = _place(scenario_dir, test)
        if target in placed:
            raise UserError(f"runs {placed[target]} and {test.row.run_id} both give {target.relative_to(out)}: "
                            "export one of them")
        placed[target] = test.row.run_id
        _copy_logs(test, target)
        _write_scenario_files(scenario_dir, test, benchmark)
    (base / "src").mkdir(parents=True, exist_ok=True)
    (base / "src" / "README.md").write_text(f"Produced by raybench (runs {', '.join(r.run_id for r in rows)}).\n")
    (base / "systems").mkdir(parents=True, exist_ok=True)
    description = system_description(rows, who, system)
    (base / "systems" / f"{system}.json").write_text(json.dumps(description, indent=2) + "\n")
    return base / "results" / system, check_tree(out)


def _tests(run: RunFolder, row: MetricsRow) -> list[Test]:
    if row.load != "loadgen":
        raise UserError(f"run {row.run_id} is not a LoadGen run (load {row.load}): only LoadGen's logs make a "
                        "submission")
    folders = ["loadgen"]
    if row.loadgen_mode == "find_peak" and row.target_qps is not None:
        folders = [f"loadgen/qps-{row.target_qps:.6g}"]  # the best probe: the figure the row reports
    folders += [f"loadgen/{name}" for name in ("performance", "accuracy", *rules.COMPLIANCE_TESTS)]
    out = []
    for folder in folders:
        if not run.has(f"{folder}/mlperf_log_detail.txt"):
            continue
        detail = parse_detail(run.read_text(f"{folder}/mlperf_log_detail.txt"))
        name = folder.rpartition("/")[2]
        role = name if name in rules.COMPLIANCE_TESTS else ("accuracy" if detail.accuracy else "performance")
        out.append(Test(run, row, folder, detail, role))
    if not out:
        raise UserError(f"run {row.run_id} has no LoadGen logs")
    return out


def _place(scenario_dir: Path, test: Test) -> Path:
    if test.role == "performance":
        return scenario_dir / "performance" / "run_1"
    if test.role == "accuracy":
        return scenario_dir / "accuracy"
    return scenario_dir / test.role / "performance" / "run_1"


def _copy_logs(test: Test, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in LOGS:
        (target / name).write_bytes(test.run.file(f"{test.folder}/{name}").read_bytes())
    if test.role == "accuracy":
        _write_accuracy(test, target)
    elif test.role in rules.COMPLIANCE_TESTS:
        _write_verify(test, target.parent.parent)


def _write_accuracy(test: Test, target: Path) -> None:
    """The accuracy log, truncated as MLPerf's tool does, and accuracy.txt: raybench's accuracy script
    (orchestrator/modes/loadgen/accuracy.py) over the full log, and the full log's sha256."""
    from orchestrator.modes.loadgen.accuracy import accuracy_of_run

    data = test.run.file(f"{test.folder}/{ACCURACY_LOG}").read_bytes()
    scored = accuracy_of_run(test.run, f"{test.folder}/{ACCURACY_LOG}")
    figure = "-" if scored.accuracy is None else f"{scored.accuracy:.6f}"
    (target / "accuracy.txt").write_text(
        f"accuracy={figure} (raybench task {test.row.task}: {scored.correct} of {scored.scored} correct; "
        f"{scored.examples} examples answered, {scored.missing} missing)\nhash={hashlib.sha256(data).hexdigest()}\n")
    if len(data) > rules.MAX_ACCURACY_LOG_SIZE:
        data = data[:rules.VIEWABLE_SIZE] + b"\n...\n" + data[-rules.VIEWABLE_SIZE:]
    (target / ACCURACY_LOG).write_bytes(data)


def _write_verify(test: Test, folder: Path) -> None:
    """The compliance test's verdict by its own criterion, as the verification scripts print it."""
    result = test.row.compliance_result or ""
    verdict = "TEST PASS" if result.startswith("PASS") else "TEST FAIL"
    text = f"raybench {test.role} (orchestrator/modes/loadgen/compliance.py): {result or 'not judged'}\n{verdict}\n"
    (folder / "verify_performance.txt").write_text(text)
    if test.role == "TEST01":
        sampled = test.run.file(f"{test.folder}/{ACCURACY_LOG}")
        (folder / "verify_accuracy.txt").write_text(text)
        if sampled.exists():
            (folder / "accuracy").mkdir(parents=True, exist_ok=True)
            (folder / "accuracy" / ACCURACY_LOG).write_bytes(sampled.read_bytes())


def _write_scenario_files(folder: Path, test: Test, benchmark: str) -> None:
    model = rules.conf_model_of(benchmark)
    job = test.run.read_text("job.yaml")
    if test.role == "performance":
        (folder / "user.conf").write_text(user_conf(model, test.detail, _job_user_conf(test.run)))
    if not (folder / "measurements.json").exists():
        (folder / "measurements.json").write_text(json.dumps(measurements(test.row), indent=2) + "\n")
        (folder / "mlperf.conf").write_text(mlperf_conf.conf_text())
    readme = folder / "README.md"
    lines = readme.read_text().splitlines() if readme.exists() else [
        f"# {benchmark} {test.detail.scenario}", "", "Run with raybench; reproduce each run with "
        "`bench submit job.yaml` on the job below.", ""]
    lines += [f"## {test.role}: run {test.row.run_id}", "", "```yaml", job.rstrip(), "```", ""]
    readme.write_text("\n".join(lines) + "\n")


def _job(run: RunFolder):
    from orchestrator.spec import load_spec_text

    return load_spec_text(run.read_text("job.yaml"), f"{run.location}/job.yaml")


def _job_user_conf(run: RunFolder) -> str:
    """The user.conf the job named (under rules mlperf), if it can still be read."""
    path = getattr(_job(run).load, "user_conf", None)
    return Path(path).expanduser().read_text() if path and Path(path).expanduser().is_file() else ""


def user_conf(model: str, detail: DetailLog, own: str = "") -> str:
    """What the run set, as user.conf lines: the rate or expected latency LoadGen planned by, then the
    job's own user.conf."""
    scenario = detail.scenario
    lines = [f"# raybench: the settings this run gave LoadGen ({model}, {scenario})"]
    if scenario in ("Server", "Offline") and detail.get("effective_target_qps") is not None:
        lines.append(f"{model}.{scenario}.target_qps = {detail.get('effective_target_qps')}")
    if scenario in ("SingleStream", "MultiStream") and detail.get("effective_target_latency_ns") is not None:
        lines.append(f"{model}.{scenario}.target_latency = {detail.get('effective_target_latency_ns') / 1e6:g}")
    return "\n".join(lines) + "\n" + (own if own.endswith("\n") or not own else own + "\n")


def measurements(row: MetricsRow) -> dict[str, str]:
    transformations = {"tensorrt": f"TensorRT engine built from an ONNX export at {row.precision_effective}",
                       "onnxruntime": "exported to ONNX", "torch_compile": "none (compiled by torch.compile)"}
    return {
        "input_data_types": "int64 token ids",
        "retraining": "no",
        "starting_weights_filename": row.model,
        "weight_data_types": row.precision_effective,
        "weight_transformations": transformations.get(row.engine, "none"),
        "raybench_engine": row.engine,
    }


def system_description(rows: list[MetricsRow], who: Identity, system: str) -> dict[str, object]:
    """The checker's system fields, from what the runs recorded; the hosts' own details raybench does
    not record stay empty, for `--system-json` (the submitter's file) to give."""
    row = rows[0]
    count, name = _devices(row.devices)
    described = dict.fromkeys(rules.SYSTEM_FIELDS, "")
    described.update({
        "division": who.division, "submitter": who.submitter, "system_name": system,
        "number_of_nodes": row.nodes, "accelerators_per_node": count // max(row.nodes, 1) if count else 0,
        "accelerator_model_name": name,
        "accelerator_memory_capacity": f"{row.mem_total:g} GiB" if row.mem_total else "",
        "framework": f"raybench ({row.engine}), torch {row.torch_version}, transformers {row.transformers_version}, "
                     f"Ray {row.ray_version}",
        "other_software_stack": f"Python {row.python_version}, CUDA {row.cuda_version or '-'}, "
                                f"NVIDIA driver {row.driver_version or '-'}",
        "sw_notes": f"raybench runs {', '.join(r.run_id for r in rows)}",
    })
    described.update(who.system_json or {})
    return described


def _devices(devices: str) -> tuple[int, str]:
    """'8x NVIDIA H100 80GB HBM3' -> (8, the name); several kinds: the count of all, the names joined."""
    parts = [p.strip() for p in devices.split(",") if p.strip()]
    found = [re.match(r"(\d+)x\s+(.*)", p) for p in parts]
    return sum(int(m.group(1)) for m in found if m), ", ".join(m.group(2) for m in found if m)


def _system_name(row: MetricsRow) -> str:
    count, name = _devices(row.devices)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{row.nodes}-node_{count}x{name}" if count else "raybench_system")


def _benchmark(run: RunFolder) -> str:
    """The checker's name of the job's mlperf_model; the job's own name where it set none."""
    job = _job(run)
    model = getattr(job.load, "mlperf_model", None)
    return rules.benchmark_of(model) if model else job.name
