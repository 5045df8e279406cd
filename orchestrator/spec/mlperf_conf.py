"""LoadGen's own mlperf.conf, read from the installed wheel: the model names it knows and their values.

The wheel compiles mlperf.conf into its extension module (a C string, no file), and
`TestSettings.FromConfig` accepts any model name, silently taking the values every model shares for
one it does not know (`bert-99` gets a 10 ms Server bound instead of bert's 130 ms). So the names
are read here from the text in the extension, without importing LoadGen (a job file is checked on
every `bench validate`), and a job may name only those.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

MARKER = b"# The format of this config file is"


@lru_cache(maxsize=1)
def conf_text() -> str:
    """The mlperf.conf compiled into the installed mlperf_loadgen ('' where LoadGen is not installed)."""
    spec = importlib.util.find_spec("mlperf_loadgen")
    if spec is None or spec.origin is None:
        return ""
    data = Path(spec.origin).read_bytes()
    start = data.find(MARKER)
    if start < 0:
        return ""
    return data[start:data.index(b"\0", start)].decode("utf-8", errors="replace")


@lru_cache(maxsize=1)
def entries() -> dict[tuple[str, str, str], str]:
    """(model, scenario, key) -> value, as written (model names may hold dots: wan-2.2-t2v-a14b)."""
    out = {}
    for line in conf_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        name, value = (part.strip() for part in line.split("=", 1))
        parts = name.rsplit(".", 2)
        if len(parts) == 3:
            out[tuple(parts)] = value
    return out


def models() -> tuple[str, ...]:
    """The model names mlperf.conf knows (every name but '*')."""
    return tuple(sorted({model for model, _, _ in entries()} - {"*"}))


def value(model: str, scenario: str, key: str) -> str | None:
    """A key's value as FromConfig looks it up: model.scenario, *.scenario, model.*, then *.*."""
    table = entries()
    for m, s in ((model, scenario), ("*", scenario), (model, "*"), ("*", "*")):
        if (m, s, key) in table:
            return table[(m, s, key)]
    return None


def uses_token_latencies(model: str) -> bool:
    """LLM benchmarks: LoadGen judges them on time to first token and per output token."""
    return any(value(model, scenario, "use_token_latencies") == "1"
               for scenario in ("Server", "SingleStream", "MultiStream", "Offline"))


conf_values = entries  # the name issue 28's readers use


def token_models() -> frozenset[str]:
    """The models mlperf.conf switches token latencies on for (`use_token_latencies = 1`): its LLMs."""
    return frozenset(model for (model, _, key), value in entries().items()
                     if key == "use_token_latencies" and value == "1" and model != "*")


def server_token_bounds_ms(model: str) -> tuple[float | None, float | None]:
    """mlperf.conf's Server TTFT and TPOT bounds of `model` (ms), None where it sets none."""
    def read(key: str) -> float | None:
        raw = entries().get((model, "Server", key))
        return float(raw) if raw is not None else None

    return read("ttft_latency"), read("tpot_latency")
