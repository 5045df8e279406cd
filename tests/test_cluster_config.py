"""cluster.yaml against Ray's own cluster-launcher schema, and the Grafana dashboard against our metrics."""

import copy
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from workers.metric_names import METRICS


def ray_validate(config: dict) -> None:
    """What `ray up` does before touching any machine: fill defaults, then check the schema."""
    from ray.autoscaler._private.commands import prepare_config
    from ray.autoscaler._private.util import validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load(Path("cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_schema(cluster):
    ray_validate(cluster)
    assert cluster["provider"]["type"] == "local"
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head
    assert "NCCL_IB_HCA" in head and "NCCL_IB_HCA" in " ".join(cluster["worker_start_ray_commands"])
    assert any("raybench" in cmd for cmd in cluster["setup_commands"])


def test_ray_detects_each_nodes_gpus_and_the_token_stays_private(cluster):
    """A 4-GPU node must not advertise 8; every node's copy of the token is its user's alone."""
    starts = cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    assert not [cmd for cmd in starts if "--num-gpus" in cmd]
    for node_type in cluster["available_node_types"].values():
        assert "GPU" not in node_type["resources"]
    setup = cluster["setup_commands"]
    assert setup[0] == "chmod 600 ~/.ray/auth_token"  # before anything else runs there
    assert cluster["head_setup_commands"] == cluster["worker_setup_commands"] == setup


def run_ray_node(tmp_path, mode: int, **env) -> subprocess.CompletedProcess:
    """scripts/ray_node.sh with a home holding a token of `mode`, and a `ray` on PATH that only says it ran."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    (home / ".ray").mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(exist_ok=True)
    token = home / ".ray" / "auth_token"
    token.write_text("0123abcd\n")
    token.chmod(mode)
    (bin_dir / "ray").write_text("#!/bin/sh\necho \"ray ran: $*\"\n")
    (bin_dir / "ray").chmod(0o755)
    environment = {"HOME": str(home), "PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    return subprocess.run(["bash", "scripts/ray_node.sh", "ray", "start", "--head", f"--temp-dir={tmp_path / 't'}"],
                          env=environment, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_ray_node_refuses_a_token_others_can_read(tmp_path, mode):
    done = run_ray_node(tmp_path, mode)
    assert done.returncode == 2 and "ray ran" not in done.stdout
    assert done.stderr.strip() == (f"ray_node.sh: refusing to start Ray: the cluster token {tmp_path}/home/.ray/"
                                   f"auth_token is readable by group or others (mode {mode:o}); chmod 600 "
                                   f"{tmp_path}/home/.ray/auth_token")


def test_ray_node_starts_ray_with_a_private_token_or_one_from_the_environment(tmp_path):
    done = run_ray_node(tmp_path, 0o600)
    assert done.returncode == 0 and done.stdout.startswith("ray ran: start --head"), done.stderr
    assert run_ray_node(tmp_path, 0o644, RAY_AUTH_TOKEN="0123abcd").returncode == 0  # the file is not used then


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda c: c.__setitem__("setup_comands", c.pop("setup_commands")), "'setup_comands' was unexpected"),
        (lambda c: c.__setitem__("max_workers", -1), "-1 is less than the minimum of 0"),
        (lambda c: c.__setitem__("idle_timeout_minutes", "soon"), "'soon' is not of type 'number'"),
    ],
)
def test_a_broken_copy_fails_with_rays_message(cluster, breakage, message):
    broken = copy.deepcopy(cluster)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError, match=re.escape(message)):
        ray_validate(broken)


def test_grafana_dashboard_queries_only_metrics_we_export():
    dashboard = json.loads(Path("grafana/raybench.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m.removeprefix("ray_").removesuffix("_bucket") for e in exprs for m in re.findall(r"ray_raybench_\w+", e)}
    assert used and used <= set(METRICS), used - set(METRICS)
    assert set(METRICS) <= used  # every exported metric has a panel
    assert all('run_id=~"$run_id"' in e for e in exprs)
