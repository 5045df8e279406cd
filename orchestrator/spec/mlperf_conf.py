"""LoadGen's mlperf.conf, read without importing LoadGen: which models measure token latencies.

The wheel has no mlperf.conf file: its build compiles loadgen/mlperf.conf into the extension as a
C string (`mlperf_conf.h`), and no Python call returns it. The text is read here from the
extension's bytes (from its first line, `# The format of this config file is`, to the NUL that
ends the string) and split as `TestSettings.FromConfig` does: whitespace-separated
`key = value`, a `#` token starts a comment, later keys win; keys are `<model>.<scenario>.<name>`
and model names may hold dots (`wan-2.2-t2v-a14b`), so they are split from the right.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

MARK = b"# The format of this config file is"


@functools.cache
def conf_text() -> str:
    """The mlperf.conf compiled into the installed mlperf_loadgen ("" when it cannot be found)."""
    spec = importlib.util.find_spec("mlperf_loadgen")
    if spec is None or spec.origin is None:
        return ""
    data = Path(spec.origin).read_bytes()
    start = data.find(MARK)
    return "" if start < 0 else data[start: data.index(b"\0", start)].decode(errors="replace")


@functools.cache
def conf_values() -> dict[tuple[str, str, str], str]:
    """(model, scenario, key) -> value, as FromConfig reads them."""
    values: dict[tuple[str, str, str], str] = {}
    for line in conf_text().splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] == "=" and not words[0].startswith("#"):
            parts = words[0].rsplit(".", 2)
            if len(parts) == 3:
                values[(parts[0], parts[1], parts[2])] = words[2]
    return values


def token_models() -> frozenset[str]:
    """The models mlperf.conf switches token latencies on for (`<model>.*.use_token_latencies = 1`): its LLMs."""
    return frozenset(model for (model, _, key), value in conf_values().items()
                     if key == "use_token_latencies" and value == "1")


def server_token_bounds_ms(model: str) -> tuple[float | None, float | None]:
    """mlperf.conf's Server TTFT and TPOT bounds of `model` (ms), None where it sets none."""
    values = conf_values()

    def read(key: str) -> float | None:
        raw = values.get((model, "Server", key))
        return float(raw) if raw is not None else None

    return read("ttft_latency"), read("tpot_latency")
