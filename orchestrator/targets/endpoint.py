"""A running OpenAI-compatible server as the target: client actors spread over the cluster's nodes
(workers/client.py) that send it their shares of a schedule, and the job's first check of the server.

`check_endpoint` runs before anything starts or is stored (the driver's preflight): for each URL,
a TCP connect within `connect_timeout_s` (nothing listening fails in seconds, not after a
request timeout), then one streamed request of one token with the job's own body, so whatever the
server would refuse in every request (the key: 401/403, the model: 404 or 400, a field it does not
take: 422) is one line naming the field before any load is sent.

`ClientPool`: `clients` actors in a SPREAD placement group (one bundle of `cpus_per_client` CPUs
each, so Ray puts them on different nodes where it can), or threads of this process with `--no-ray`
(in-process: the GIL is shared, so only for small loads and tests). `run` hands every client its
plan and waits for all of them.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import urlsplit

from orchestrator.spec.job import EndpointJob
from workers.client import ClientPlan, ClientRun, EndpointClient
from workers.errors import RunFailed, UserError, first_line

PLACEMENT_TIMEOUT_S = 60.0


# ------------------------------------------------------------------------------ the first check
def check_endpoint(spec: EndpointJob, body: bytes) -> None:
    """The job's first check (module docstring); `body` is one request as the job will send it."""
    endpoint = spec.endpoint
    headers = endpoint.headers()
    for base, url in zip(endpoint.url, endpoint.request_urls):
        _reachable(base, endpoint.connect_timeout_s)
        status, text = _post(url, body, headers, endpoint.timeout_s)
        if status == 200:
            continue
        detail = _detail(text)
        if status in (401, 403):
            how = (f"the key in ${endpoint.api_key_env} is not one it takes" if endpoint.api_key_env
                   else "set endpoint.api_key_env to the variable holding its API key")
            raise UserError(f"endpoint.api_key_env: the server at {base} refused the request (HTTP {status}: "
                            f"{detail}): {how}")
        if status == 422:
            raise UserError(f"endpoint: the server at {base} refused a field of the request (HTTP 422: {detail}); "
                            "drop it (prompts.ignore_eos, endpoint.extra_body)")
        served = _served_models(base, headers, endpoint.connect_timeout_s)
        if endpoint.model not in served and (status in (400, 404) or "model" in detail.lower()):
            listed = f"; it serves: {', '.join(served)}" if served else ""
            raise UserError(f"endpoint.model: the server at {base} does not serve '{endpoint.model}' (HTTP {status}: "
                            f"{detail}){listed}")
        raise UserError(f"endpoint: the server at {base} answered the job's first request with HTTP {status}: {detail}")


def _reachable(base: str, timeout_s: float) -> None:
    parts = urlsplit(base)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UserError(f"endpoint.url: nothing answers at {base} ({why} within {timeout_s:g} s, "
                        "endpoint.connect_timeout_s); is the server up?") from None


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """One request, its stream read to the end (a probe of one token: `max_tokens` set to 1)."""
    probe = json.loads(body)
    probe["max_tokens"] = 1
    request = urllib.request.Request(url, data=json.dumps(probe).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"endpoint.url: {url} did not answer the job's first request within endpoint.timeout_s "
                        f"{timeout_s:g}: {first_line(getattr(exc, 'reason', exc))}") from None


def _detail(text: str) -> str:
    """The server's own words: OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, or the text."""
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:200] or "(no body)"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:200]
    if isinstance(data, dict) and (data.get("detail") or data.get("message")):
        return str(data.get("detail") or data.get("message"))[:200]
    return " ".join(text.split())[:200]


def _served_models(base: str, headers: dict[str, str], timeout_s: float) -> list[str]:
    """What /v1/models lists ([] where it lists nothing or is not there)."""
    try:
        request = urllib.request.Request(base + "/v1/models", headers=headers)
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return [m["id"] for m in json.loads(response.read()).get("data", []) if "id" in m]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


# ------------------------------------------------------------------------------- client actors
@dataclass(frozen=True)
class ClientPlace:
    client: int
    node: str  # the node's address (Ray), or "local" in process


class ClientPool:
    """The job's client actors (module docstring)."""

    def __init__(self, spec: EndpointJob, run_id: str, in_process: bool, kind: type = EndpointClient,
                 args: tuple = (), concurrency: int = 1) -> None:
        """`kind(client_id, *args)` is each client (EndpointClient: a schedule's share per call;
        workers/stream_client.py's StreamClient: LoadGen's samples), taking `concurrency` calls at
        once (a threaded actor above 1)."""
        self.size = spec.clients
        self.in_process = in_process
        self._pg = None
        if in_process:
            self.clients = [kind(i, *args) for i in range(self.size)]
            self.places = [ClientPlace(i, "local") for i in range(self.size)]
            return
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from orchestrator.cluster.placement import bundle_nodes, node_addresses

        self._pg = _reserve(run_id, self.size, spec.cpus_per_client)
        actor = ray.remote(num_cpus=spec.cpus_per_client, max_restarts=0, max_concurrency=concurrency)(kind)
        self.clients = [actor.options(scheduling_strategy=PlacementGroupSchedulingStrategy(self._pg, i),
                                      name=f"raybench-client-{run_id}-{i}").remote(i, *args) for i in range(self.size)]
        try:
            ray.get([c.ping.remote() for c in self.clients], timeout=PLACEMENT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any start failure ends the run, in one line
            self.shutdown()
            raise RunFailed(f"the client actors did not start: {first_line(exc)}") from None
        addresses = node_addresses()
        self.places = [ClientPlace(i, addresses.get(n, n[:8])) for i, n in enumerate(bundle_nodes(self._pg, self.size))]

    def run(self, plans: Sequence[ClientPlan]) -> list[ClientRun]:
        """Every client's plan at once; their runs, in client order."""
        if self.in_process:
            with ThreadPoolExecutor(len(plans), thread_name_prefix="raybench-client") as threads:
                return list(threads.map(lambda pair: pair[0].run(pair[1]), zip(self.clients, plans)))
        import ray

        try:
            return ray.get([c.run.remote(p) for c, p in zip(self.clients, plans)])
        except ray.exceptions.RayError as exc:
            raise RunFailed(f"a client actor failed: {first_line(exc)}") from None

    def shutdown(self) -> None:
        if self.in_process:
            for client in self.clients:
                getattr(client, "close", lambda: None)()
            return
        import ray
        from ray.util.placement_group import remove_placement_group

        for client in self.clients:
            ray.kill(client, no_restart=True)
        if self._pg is not None:
            remove_placement_group(self._pg)
            self._pg = None


def _reserve(run_id: str, clients: int, cpus: float):
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group([{"CPU": cpus} for _ in range(clients)], strategy="SPREAD", name=f"raybench-clients:{run_id}")
    ready, _ = ray.wait([pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
    if not ready:
        remove_placement_group(pg)
        raise UserError(f"clients: the cluster could not place {clients} client actors x {cpus:g} CPU within "
                        f"{PLACEMENT_TIMEOUT_S:.0f} s; lower clients or cpus_per_client")
    return pg
