"""A submission tree checked by the rules of MLPerf's submission checker that raybench can state
(rules.py; the checker's own source: mlcommons/inference tools/submission/submission_checker):

- the tree `<division>/<submitter>/{systems/<system>.json, src/, results/<system>/<benchmark>/<scenario>/}`;
- each scenario folder: measurements.json (its required fields non-empty), user.conf and README.md
  non-empty, `performance/run_1/` with the summary and detail logs, `accuracy/` with those, accuracy.txt
  (with the `hash=` line of the full log) and an accuracy log truncated below 10 KiB;
- each performance detail log: no LoadGen error, VALID, early stopping met (Server and the streams),
  the folder's scenario, the seeds, a min_duration of at least 600 s and the performance sample count
  of the benchmark's mlperf.conf (Offline: its samples per query too), the scenario's metric key;
- the accuracy detail log: AccuracyOnly, no error, the benchmark's whole dataset;
- a compliance test present (TEST01, TEST04): its performance logs, checked as above, and "TEST PASS"
  in its verify files;
- the system description: every field, the meaningful ones non-empty, division and submitter equal to
  the folders', a known status and system type.

Pure: it reads the tree and returns the problems, each `path: what is wrong`; none means it passes
these rules (the checker has more: which compliance tests a model needs, accuracy targets per model,
power, network divisions).
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.modes.loadgen.logs import DetailLog, parse_detail
from orchestrator.spec import mlperf_conf
from orchestrator.submission import rules


def check_tree(root: Path) -> list[str]:
    """Every problem of the tree under `root` (the folder holding the division folders)."""
    problems: list[str] = []
    divisions = [d for d in sorted(root.iterdir()) if d.is_dir()] if root.is_dir() else []
    if not divisions:
        return [f"{root}: no division folder ({' or '.join(rules.DIVISIONS)})"]
    for division in divisions:
        if division.name not in rules.DIVISIONS:
            problems.append(f"{division}: not a division ({', '.join(rules.DIVISIONS)})")
            continue
        for submitter in sorted(d for d in division.iterdir() if d.is_dir()):
            problems += _check_submitter(submitter)
    return problems


def _check_submitter(folder: Path) -> list[str]:
    problems = []
    if not (folder / "src").is_dir():
        problems.append(f"{folder / 'src'}: missing (the code that produced the results)")
    results = folder / "results"
    systems = [d for d in sorted(results.iterdir()) if d.is_dir()] if results.is_dir() else []
    if not systems:
        problems.append(f"{results}: no system folder")
    for system in systems:
        problems += check_system_json(folder / "systems" / f"{system.name}.json", folder.parent.name, folder.name)
        for benchmark in sorted(d for d in system.iterdir() if d.is_dir()):
            for scenario in sorted(d for d in benchmark.iterdir() if d.is_dir()):
                problems += check_scenario(scenario, benchmark.name)
    return problems


def check_system_json(path: Path, division: str, submitter: str) -> list[str]:
    if not path.is_file():
        return [f"{path}: missing (the system description)"]
    try:
        system = json.loads(path.read_text())
    except ValueError as exc:
        return [f"{path}: not JSON ({exc})"]
    problems = [f"{path}: no field {name}" for name in rules.SYSTEM_FIELDS if name not in system]
    empty = [name for name in rules.SYSTEM_MEANINGFUL if name in system and not str(system[name]).strip()]
    if empty:
        problems.append(f"{path}: empty, the checker wants an answer: {', '.join(empty)}")
    for name, want in (("division", division), ("submitter", submitter)):
        if name in system and system[name] != want:
            problems.append(f"{path}: {name} '{system[name]}' is not the folder's '{want}'")
    if system.get("status") and system["status"] not in rules.STATUSES:
        problems.append(f"{path}: status '{system['status']}' is not one of {', '.join(rules.STATUSES)}")
    if system.get("system_type") and system["system_type"] not in rules.SYSTEM_TYPES:
        problems.append(f"{path}: system_type '{system['system_type']}' is not one of {', '.join(rules.SYSTEM_TYPES)}")
    return problems


def check_scenario(folder: Path, benchmark: str) -> list[str]:
    problems = _required(folder, ("measurements.json", *rules.REQUIRED_MEASURE_FILES))
    measurements = folder / "measurements.json"
    if measurements.is_file():
        try:
            fields = json.loads(measurements.read_text())
        except ValueError as exc:
            fields = {}
            problems.append(f"{measurements}: not JSON ({exc})")
        empty = [n for n in rules.MEASUREMENTS_FIELDS if not str(fields.get(n, "")).strip()]
        if empty and fields:
            problems.append(f"{measurements}: missing or empty: {', '.join(empty)}")
    problems += check_performance(folder / "performance" / "run_1", benchmark, folder.name)
    problems += check_accuracy(folder / "accuracy", benchmark)
    for test in rules.COMPLIANCE_TESTS:
        if (folder / test).is_dir():
            problems += check_compliance(folder / test, test, benchmark, folder.name)
    return problems


def _required(folder: Path, names: tuple[str, ...]) -> list[str]:
    return [f"{folder / n}: missing or empty" for n in names
            if not (folder / n).is_file() or (folder / n).stat().st_size == 0]


def _detail(folder: Path) -> DetailLog | None:
    path = folder / "mlperf_log_detail.txt"
    return parse_detail(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else None


def check_performance(folder: Path, benchmark: str, scenario: str) -> list[str]:
    problems = _required(folder, rules.REQUIRED_PERF_FILES)
    detail = _detail(folder)
    if detail is None:
        return problems
    where = folder / "mlperf_log_detail.txt"
    say = lambda text: problems.append(f"{where}: {text}")  # noqa: E731 - a local shorthand
    model = rules.conf_model_of(benchmark)
    if detail.errors:
        say(f"{len(detail.errors)} LoadGen error(s): {detail.errors[0]}")
    if detail.get("effective_test_mode") != "PerformanceOnly":
        say(f"test mode {detail.get('effective_test_mode')}, not PerformanceOnly")
    if detail.scenario != scenario:
        say(f"scenario {detail.scenario or '?'} in a {scenario} folder")
    if detail.result != "VALID":
        say(f"result {detail.result or 'missing'}, not VALID")
    if scenario in rules.EARLY_STOPPING_SCENARIOS and detail.get("early_stopping_met") is not True:
        say("early stopping not met")
    if detail.get(rules.METRIC_KEY.get(scenario, "")) is None:
        say(f"no {rules.METRIC_KEY.get(scenario, 'metric')} (the checker's metric for {scenario})")
    for seed in ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed"):
        want, found = mlperf_conf.value(model, scenario, seed), detail.get(f"effective_{seed}")
        if want is not None and str(found) != want:
            say(f"{seed} {found}, mlperf.conf's is {want}")
    duration = detail.get("effective_min_duration_ms")
    if duration is None or int(duration) < rules.TEST_DURATION_MS:
        say(f"min_duration {duration} ms, MLPerf's is {rules.TEST_DURATION_MS} ms")
    count = mlperf_conf.value(model, scenario, "performance_sample_count_override")
    found = detail.get("effective_performance_sample_count")
    if count is not None and int(count) > 0 and (found is None or int(found) < int(count)):
        say(f"performance sample count {found}, {benchmark} needs {count}")
    if scenario == "Offline":
        least = int(mlperf_conf.value(model, "Offline", "min_query_count") or 1)
        per_query = detail.get("effective_samples_per_query")
        if per_query is None or int(per_query) < least:
            say(f"{per_query} samples per query, {benchmark} Offline needs {least}")
    return problems


def check_accuracy(folder: Path, benchmark: str) -> list[str]:
    problems = _required(folder, rules.REQUIRED_ACC_FILES)
    log = folder / "mlperf_log_accuracy.json"
    if log.is_file() and log.stat().st_size > rules.MAX_ACCURACY_LOG_SIZE:
        problems.append(f"{log}: {log.stat().st_size} bytes, over {rules.MAX_ACCURACY_LOG_SIZE} (truncate it)")
    text = (folder / "accuracy.txt").read_text() if (folder / "accuracy.txt").is_file() else ""
    if text and not any(line.startswith("hash=") for line in text.splitlines()):
        problems.append(f"{folder / 'accuracy.txt'}: no hash= line of the full accuracy log")
    detail = _detail(folder)
    if detail is not None:
        if detail.get("effective_test_mode") != "AccuracyOnly":
            problems.append(f"{folder / 'mlperf_log_detail.txt'}: test mode {detail.get('effective_test_mode')}, "
                            "not AccuracyOnly")
        if detail.errors:
            problems.append(f"{folder / 'mlperf_log_detail.txt'}: {len(detail.errors)} LoadGen error(s): "
                            f"{detail.errors[0]}")
        wanted = rules.ACCURACY_SAMPLES.get(benchmark)
        covered = detail.get("effective_accuracy_sample_count", detail.get("qsl_reported_total_count"))
        if wanted is not None and covered != wanted:
            problems.append(f"{folder / 'mlperf_log_detail.txt'}: the accuracy run covers {covered} samples, "
                            f"{benchmark}'s dataset has {wanted}")
    return problems


def check_compliance(folder: Path, test: str, benchmark: str, scenario: str) -> list[str]:
    problems = check_performance(folder / "performance" / "run_1", benchmark, scenario)
    verify = ["verify_performance.txt"] + (["verify_accuracy.txt"] if test == "TEST01" else [])
    for name in verify:
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif "TEST PASS" not in path.read_text():
            problems.append(f"{path}: no TEST PASS")
    return problems
