"""cluster.yaml against Ray's own cluster-launcher schema, and the Grafana dashboard against our metrics."""

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from workers.live_metrics import METRICS


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
    assert "--dashboard-host=127.0.0.1" in head and "--num-gpus=8" in head and "RAY_AUTH_MODE=token" in head
    assert "NCCL_IB_HCA" in head and "NCCL_IB_HCA" in " ".join(cluster["worker_start_ray_commands"])
    assert any("raybench" in cmd for cmd in cluster["setup_commands"])


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
