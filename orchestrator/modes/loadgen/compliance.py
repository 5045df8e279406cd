"""MLPerf's compliance tests, run by LoadGen from an audit.config raybench writes into the test's own
log folder, each judged by the test's own criterion (as compliance/TEST0x/run_verification.py does).

- TEST01: performance-mode responses must equal accuracy mode's. The audit config turns a run into
  PerformanceOnly with responses sampled into its accuracy log; each sampled response must equal, byte
  for byte, the response the accuracy run logged for the same sample (MLPerf's script compares the
  first element; this compares all), and at least one must match. Its performance must also stay
  within 10 % of the reference performance run (20 % for streams faster than 0.2 ms / 1.6 ms), both
  VALID: logging responses must not change the figure.
- TEST04: the same sample issued again and again must not be much faster than different samples (a
  cache of answers would be): the TEST04 run's score (samples/s; streams 1 / the early-stopping
  estimate) must be below the reference's x 1.10 (x 1.20 for streams).
- a path: LoadGen runs with that audit.config; raybench knows no criterion for it and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orchestrator.modes.loadgen.logs import DetailLog

COMPLIANCE_SEED = 720381539243781796  # compliance/TEST01/*/audit.config's accuracy_log_rng_seed
TEST01_SAMPLING = 4096  # most models' accuracy_log_sampling_target (3d-unet 64, retinanet 256, ...)
LOADGEN_SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
KNOWN = ("TEST01", "TEST04")


def audit_config(test: str) -> str:
    """The audit.config text of a known test, or the file a path names."""
    if test == "TEST01":
        return (f"*.*.mode = 2\n*.*.accuracy_log_rng_seed = {COMPLIANCE_SEED}\n"
                f"*.*.accuracy_log_sampling_target = {TEST01_SAMPLING}\n")
    if test == "TEST04":
        return "".join(f"*.{s}.mode = 2\n*.{s}.performance_issue_unique = 0\n*.{s}.performance_issue_same = 1\n"
                       f"*.{s}.performance_issue_same_index = 3\n" for s in LOADGEN_SCENARIOS)
    return Path(test).expanduser().read_text()


def write_audit(folder: Path, test: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "audit.config"
    path.write_text(audit_config(test))
    return path


@dataclass(frozen=True)
class Compliance:
    test: str  # TEST01, TEST04 or the audit.config's path
    passed: bool | None  # None: no criterion known (a path)
    why: str

    @property
    def result(self) -> str:
        return "ran (no criterion known for this audit.config)" if self.passed is None else \
            ("PASS" if self.passed else "FAIL") + f": {self.why}"


def score(detail: DetailLog) -> float | None:
    """The figure the compliance scripts compare: samples/s, or 1 / the stream's estimate (s)."""
    if detail.scenario in ("SingleStream", "MultiStream"):
        estimate = detail.early_stopping_ns
        return 1e9 / estimate if estimate else None
    return detail.samples_per_s


def _stream(detail: DetailLog) -> bool:
    return detail.scenario in ("SingleStream", "MultiStream")


def test04(reference: DetailLog, audited: DetailLog) -> Compliance:
    margin = 0.2 if _stream(reference) else 0.1
    ref, test = score(reference), score(audited)
    if reference.result != "VALID" or audited.result != "VALID" or ref is None or test is None:
        return Compliance("TEST04", False, "the reference or the TEST04 run is not VALID")
    same = audited.get("effective_performance_issue_same")
    if not same:
        return Compliance("TEST04", False, "LoadGen did not issue the same sample (performance_issue_same is off)")
    ok = test < ref * (1 + margin)
    return Compliance("TEST04", ok, f"the same sample scored {test:.6g} against {ref:.6g} for different ones "
                                    f"({'<' if ok else '>='} x{1 + margin:g})")


def test01(reference: DetailLog, audited: DetailLog, accuracy_log: Path, audited_log: Path) -> Compliance:
    """Sampled performance-mode responses against the accuracy run's, and the performance kept."""
    truth = first_responses(accuracy_log)
    sampled = accuracy_log_entries(audited_log)
    matched = [(idx, data) for idx, data in sampled if idx in truth]
    wrong = [idx for idx, data in matched if data != truth[idx]]
    ref, test = score(reference), score(audited)
    if not matched or wrong:
        why = "no sampled response to compare" if not matched else \
            f"{len(wrong)} of {len(matched)} sampled responses differ from accuracy mode's (samples {wrong[:5]})"
        return Compliance("TEST01", False, why)
    if reference.result != "VALID" or audited.result != "VALID" or not ref or test is None:
        return Compliance("TEST01", False, f"{len(matched)} responses equal; the reference or the TEST01 run is not "
                                           "VALID")
    fast = (reference.early_stopping_ns or 0) <= (200_000 if reference.scenario == "SingleStream" else 1_600_000)
    margin = 0.2 if _stream(reference) and fast else 0.1
    ok = abs(test - ref) <= margin * ref
    return Compliance("TEST01", ok, f"{len(matched)} sampled responses equal accuracy mode's; performance "
                                    f"{test:.6g} against {ref:.6g} ({'within' if ok else 'beyond'} {margin:.0%})")


def accuracy_log_entries(path: Path) -> list[tuple[int, bytes]]:
    """LoadGen's accuracy log: every (qsl_idx, response bytes) entry, in order."""
    entries = json.loads(path.read_text()) if path.exists() else []
    return [(int(e["qsl_idx"]), bytes.fromhex(e["data"])) for e in entries]


def first_responses(path: Path) -> dict[int, bytes]:
    """qsl_idx -> the first response logged for it (an example issued twice answers the same)."""
    out: dict[int, bytes] = {}
    for idx, data in accuracy_log_entries(path):
        out.setdefault(idx, data)
    return out
