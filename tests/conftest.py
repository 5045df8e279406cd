import os

import pytest

# Keep Hugging Face from trying the network: every model in the tests is built or shipped locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LOOPBACK = "127.0.0.2"  # Ray rewrites 127.0.0.1 to the outward address; 127.0.0.2 stays on loopback
CLUSTER_FIXTURES = {"ray_local", "ray_cluster"}


def pytest_collection_modifyitems(items):
    """A test that starts Ray (through its fixtures) is slow whether or not its module says so: the
    fast lane (`pytest -m "not slow"`, the README) never waits for a cluster."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if CLUSTER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        if "ray_cluster" in fixtures:  # selectable: `pytest -m multinode`
            item.add_marker(pytest.mark.multinode)
        if item.get_closest_marker("real_model") is not None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray per test module, pretending to have 3 GPUs (engines then run on the CPU: the
    workers are told the GPUs are fake, as a worker given a GPU without CUDA otherwise fails)."""
    import ray

    from workers.measure.device import FAKE_GPUS_ENV

    ray.init(num_cpus=4, num_gpus=3, _node_ip_address=LOOPBACK, include_dashboard=False,
             log_to_driver=False, logging_level="warning", runtime_env={"env_vars": {FAKE_GPUS_ENV: "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """Two `ray start` nodes (127.0.0.2 head, 127.0.0.3 worker), 2 fake GPUs each, token auth on. The
    nodes hold the test S3 credentials (moto's placeholders), as a site's nodes hold their own."""
    from tests.cluster import LocalCluster

    from tests.s3 import CREDENTIALS

    hf_home = tmp_path_factory.mktemp("hf-home")  # the nodes' Hugging Face cache (offline: filled by tests)
    head_results = tmp_path_factory.mktemp("head-results")  # what cluster.yaml's nodes export as RAYBENCH_RESULTS
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"),
                           node_env={"HF_HOME": str(hf_home), "RAYBENCH_RESULTS": str(head_results), **CREDENTIALS})
    cluster.hf_home = hf_home
    cluster.head_results = head_results
    cluster.start(nodes=2)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def moto_s3():
    """A real S3 API on 127.0.0.2 (moto's server in this process), for the results store on S3."""
    from tests.s3 import start_moto

    s3, server = start_moto()
    yield s3
    server.stop()
