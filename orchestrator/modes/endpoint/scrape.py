"""The server's own view while the load runs: its Prometheus metrics (vLLM, SGLang and TGI serve them at
/metrics; transformers serve has none), scraped every `endpoint.scrape_interval_s` on a thread of
the driver, into the run's timeline (server_metrics.parquet: time since the schedule's start,
metric, labels, value), so a report can put queue depth and KV-cache use beside TTFT.

Parsed with prometheus_client's own text parser. Gauges, counters and untyped samples are kept, and
a histogram's or summary's `_sum` and `_count` (not its buckets: dozens per metric, read back as
the sum over the count). A URL whose first scrape fails (404: no metrics there; nothing listening)
is dropped with the reason, and the row's `server_metrics` says so; the load goes on either way.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

KEPT_TYPES = {"gauge", "counter", "untyped", "unknown"}


@dataclass
class Scraped:
    samples: list[dict] = field(default_factory=list)  # t_s, url, name, labels, value
    notes: dict[str, str] = field(default_factory=dict)  # url -> why nothing came from it

    @property
    def summary(self) -> str:
        """The row's `server_metrics`: what came from where, and why not."""
        got = {}
        for s in self.samples:
            got[s["url"]] = got.get(s["url"], 0) + 1
        parts = [f"{n} samples from {url}" for url, n in got.items()]
        parts += [f"none from {url}: {why}" for url, why in self.notes.items() if url not in got]
        return "; ".join(parts)


def parse(text: str, url: str, t_s: float) -> list[dict]:
    """One scrape's samples (module docstring says which are kept)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            kept = family.type in KEPT_TYPES or sample.name.endswith(("_sum", "_count"))
            if kept and not sample.name.endswith("_created"):
                out.append({"t_s": t_s, "url": url, "name": sample.name,
                            "labels": json.dumps(sample.labels, sort_keys=True), "value": float(sample.value)})
    return out


class Scraper:
    """Scrapes `urls` every `interval_s` between `start` and `stop`; times are seconds since
    `start_epoch_s` (the schedule's shared start, as the clients' records)."""

    def __init__(self, urls: list[str], interval_s: float, headers: dict[str, str], timeout_s: float) -> None:
        self.urls = list(urls)
        self.interval_s = interval_s
        self.headers = {k: v for k, v in headers.items() if k == "Authorization"}
        self.timeout_s = timeout_s
        self.result = Scraped()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_epoch_s = time.time()

    def start(self, start_epoch_s: float) -> None:
        self.start_epoch_s = start_epoch_s
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="raybench-scrape", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while self.urls:
            for url in list(self.urls):
                self._scrape(url)
            if self._stop.wait(self.interval_s):
                return

    def _scrape(self, url: str) -> None:
        t = time.time() - self.start_epoch_s
        try:
            request = urllib.request.Request(url, headers=self.headers)
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                samples = parse(response.read().decode(errors="replace"), url, t)
        except urllib.error.HTTPError as exc:
            return self._drop(url, f"HTTP {exc.code}")
        except (urllib.error.URLError, OSError) as exc:
            return self._drop(url, str(getattr(exc, "reason", exc)))
        except ValueError as exc:  # not Prometheus' text format
            return self._drop(url, f"not Prometheus text ({exc})")
        self.result.samples += samples

    def _drop(self, url: str, why: str) -> None:
        """A URL that never answered is dropped; one that did and then failed once is kept."""
        if not any(s["url"] == url for s in self.result.samples):
            self.urls.remove(url)
            self.result.notes[url] = why
