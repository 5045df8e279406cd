"""An endpoint job's own parts: the server it asks (`endpoint:`), the prompts it sends (`prompts:`) and
the latency bounds a request must meet to count in goodput (`slo:`).

An endpoint job names a running OpenAI-compatible server instead of a model: it has no engine,
precision or workers of its own, only client actors (orchestrator/targets/endpoint.py) that stream
its answers. Its load is `load: {kind: endpoint, ...}` (orchestrator/spec/load.py).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from workers.specs import StrictModel

Api = Literal["completions", "chat"]
API_PATHS: dict[str, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
# one URL or several: the loader makes a list of either; the schema says both are fine
Urls = Annotated[list[str], WithJsonSchema({"anyOf": [{"type": "string"},
                                                      {"type": "array", "items": {"type": "string"}, "minItems": 1}]})]


class EndpointSpec(StrictModel):
    """`endpoint:`: where the server is and how to ask it."""

    url: Urls = Field(..., min_length=1, description="the server's base URL (http://host:8000), or a list of "
                           "them: requests are spread over them in turn (one server's replicas, or several "
                           "servers behind no balancer)")
    api: Api = Field("completions", description="completions (/v1/completions, a prompt) or chat "
                     "(/v1/chat/completions, the prompt as one user message)")
    model: str = Field(..., min_length=1, description="the model name sent in every request, as the server "
                       "knows it (its /v1/models lists them)")
    api_key_env: str | None = Field(None, min_length=1, description="the environment variable holding the API key "
                                    "(sent as `Authorization: Bearer ...`); read on the driver when the job "
                                    "starts, never stored")
    timeout_s: float = Field(60.0, gt=0, description="one request's whole time, from its send to its last byte; "
                             "longer is a timeout error (counted, never dropped)")
    connect_timeout_s: float = Field(3.0, gt=0, description="opening a connection; the job's first check fails "
                                     "within it when nothing answers at the URL")
    max_connections: int = Field(0, ge=0, description="connections per client actor (0: as many as there are "
                                 "requests in flight). A limit holds requests back in the client once that many "
                                 "are in flight: their latency from the scheduled send then shows the wait, and "
                                 "the schedule lag makes the row INVALID")
    tokenizer: str | None = Field(None, description="hub id or folder of the model's tokenizer, for synthetic "
                                  "prompts of exact token lengths and to count tokens a server sends no `usage` "
                                  "for; default: prompts of words, counts from `usage`")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="fields added to every request's JSON "
                                       "as they are (temperature, vLLM's min_tokens, transformers serve's "
                                       "generation_config, ...)")
    metrics_url: Urls | None = Field(None, description="the server's Prometheus metrics, scraped while the "
                                          "load runs (vLLM and SGLang serve them); default: <url>/metrics of "
                                          "each url, skipped when the server has none")
    scrape_interval_s: float = Field(1.0, gt=0, description="seconds between two scrapes of metrics_url")

    @field_validator("url", "metrics_url", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("url", "metrics_url")
    @classmethod
    def _http(cls, value: list[str] | None) -> list[str] | None:
        for url in value or []:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"'{url}' is not an http(s) URL (http://host:port)")
            if parts.path.rstrip("/").endswith(tuple(API_PATHS.values())):
                raise ValueError(f"'{url}' names an API path: give the base URL (http://host:port), api: picks the "
                                 "path")
        return [u.rstrip("/") for u in value] if value is not None else None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "a").isalnum():
            raise ValueError(f"'{value}' is not an environment variable's name (the key itself goes in that "
                             "variable, never in the job file)")
        return value

    @property
    def request_urls(self) -> list[str]:
        return [u + API_PATHS[self.api] for u in self.url]

    @property
    def scrape_urls(self) -> list[str]:
        return self.metrics_url if self.metrics_url is not None else [u + "/metrics" for u in self.url]

    def headers(self) -> dict[str, str]:
        """The request headers: the API key read from its variable now (the driver's environment)."""
        from workers.errors import UserError

        headers = {"Content-Type": "application/json"}
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise UserError(f"endpoint.api_key_env: the environment variable {self.api_key_env} is not set "
                                "(export it with the server's API key)")
            headers["Authorization"] = f"Bearer {key}"
        return headers


class PromptsSpec(StrictModel):
    """`prompts:`: what every request asks. One source: seeded synthetic prompts of a set length, a
    plain text file cut into prompts, or MMLU questions (the mmlu task's own 5-shot prompts)."""

    source: Literal["synthetic", "text", "mmlu"] = Field("synthetic", description="synthetic (seeded random "
                                                         "words, or token ids with endpoint.tokenizer), text (a "
                                                         "text file cut into prompts) or mmlu (an MMLU folder)")
    path: str | None = Field(None, description="text: the file; mmlu: the MMLU folder (dev/, test/)")
    input_tokens: int = Field(128, gt=0, description="synthetic and text: prompt length (tokens with "
                              "endpoint.tokenizer, else words)")
    count: int = Field(256, gt=0, description="distinct prompts; requests take them in turn")
    shots: int = Field(5, ge=0, description="mmlu: dev rows shown before each question")
    seed: int = Field(0, description="seed of the synthetic prompts")
    max_tokens: int = Field(64, gt=0, description="output tokens asked for in each request (`max_tokens`); a "
                            "trace's output lengths replace it")
    ignore_eos: bool = Field(False, description="send `ignore_eos: true` (vLLM, SGLang), so every response is "
                             "max_tokens long; servers that refuse it (transformers serve) are named by the job's "
                             "first check: use extra_body there")

    @model_validator(mode="after")
    def _path(self) -> "PromptsSpec":
        if self.source == "synthetic" and self.path is not None:
            raise ValueError("path: synthetic prompts read no file (source: text or mmlu)")
        if self.source != "synthetic" and self.path is None:
            raise ValueError(f"path: source {self.source} reads a {'file' if self.source == 'text' else 'folder'}")
        return self

    @property
    def label(self) -> str:
        if self.source == "synthetic":
            return f"synthetic(seed={self.seed}, input_tokens={self.input_tokens})"
        return f"{self.source}:{self.path}"


class SloSpec(StrictModel):
    """`slo:`: bounds a request must meet to count in goodput (and in find_peak's p99 rule)."""

    ttft_ms: float | None = Field(None, gt=0, description="time to first token, from the scheduled send, ms")
    tpot_ms: float | None = Field(None, gt=0, description="time per output token after the first, ms")
    e2e_ms: float | None = Field(None, gt=0, description="the whole request, from the scheduled send, ms")

    @model_validator(mode="after")
    def _some(self) -> "SloSpec":
        if self.ttft_ms is None and self.tpot_ms is None and self.e2e_ms is None:
            raise ValueError("give at least one of ttft_ms, tpot_ms, e2e_ms")
        return self
