"""`bench` against a real two-node Ray cluster started with `ray start` (token auth on)."""

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pyarrow.parquet as pq
import pytest

from orchestrator.modes.offline.plan import shard_bounds
from tests.builders import stored_rows

pytestmark = pytest.mark.slow
BENCH = [sys.executable, "-m", "orchestrator.cli"]
SYNTHETIC_3200_SHARDS = len(shard_bounds(3200, 80, 4))  # jobs/synthetic.yaml with data.synthetic.size=3200
COUNTS = ("examples", "items_val", "items_infer", "scored_val", "scored_infer", "correct_val", "correct_infer", "acc")


def bench(cluster, *args, timeout=240):
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=timeout, env=cluster.env())


def start_bench(cluster, *args):
    return subprocess.Popen([*BENCH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cluster.env())


def rows(results):
    return stored_rows(results)


def wait_for_shards(results, run_id, count, timeout=120):
    deadline = time.time() + timeout
    folder = results / "runs" / run_id / "shards"
    while time.time() < deadline:
        if folder.exists() and len(list(folder.glob("*.json"))) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"fewer than {count} shards finished in {folder}")


def test_four_workers_spread_over_both_nodes_and_match_one_worker(ray_cluster, tmp_path):
    four = bench(ray_cluster, "submit", "jobs/smoke.yaml", "--address", ray_cluster.address, "--workers", "4",
                 "--results", str(tmp_path))
    assert four.returncode == 0, four.stderr
    one = bench(ray_cluster, "submit", "jobs/smoke.yaml", "--address", ray_cluster.address, "--workers", "1",
                "--results", str(tmp_path))
    assert one.returncode == 0, one.stderr
    first, second = rows(tmp_path)
    assert (first["workers"], first["nodes"], second["workers"]) == (4, 2, 1)
    assert {k: first[k] for k in COUNTS} == {k: second[k] for k in COUNTS}
    shards = pq.read_table(tmp_path / "runs" / first["run_id"] / "shards.parquet").to_pylist()
    assert len({s["node_id"] for s in shards}) == 2
    assert all(re.search(r"\(GPU \d\)", s["device"]) for s in shards)  # the GPU Ray gave each worker


def test_a_loadgen_server_run_hands_batches_over_direct_lanes_to_workers_on_both_nodes(ray_cluster, tmp_path):
    """The driver (`bench submit`, a process of its own) opens a connection to each worker on each node
    at the address Ray knows the node by; LoadGen's verdict and the hand-over are in the row. The bound
    is loose: two nodes' Ray processes share this machine's 2 cores (p99 50 to 85 ms at 400 QPS)."""
    run = bench(ray_cluster, "submit", "jobs/synthetic_server.yaml", "--address", ray_cluster.address,
                "--workers", "4", "--results", str(tmp_path), "--set", "load.latency_bound_ms=1000")
    assert run.returncode == 0, run.stderr
    assert "load.hand_over" not in run.stderr  # no fallback to actor calls
    (row,) = rows(tmp_path)
    assert (row["workers"], row["nodes"], row["loadgen_result"]) == (4, 2, "VALID")
    assert json.loads(row["loadgen_settings"])["hand_over"] == "direct"


def test_live_metrics_on_the_node_endpoints_with_run_tags(ray_cluster, tmp_path):
    run_id = "metrics-test-run"
    proc = start_bench(ray_cluster, "submit", "jobs/synthetic.yaml", "--address", ray_cluster.address,
                       "--results", str(tmp_path), "--run-id", run_id, "--set", "data.synthetic.size=3200")
    found: dict[str, str] = {}
    names: set[str] = set()
    actors: list[str] = []
    try:
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and not (found and len(names) >= 4 and actors):
            for ip, port in ray_cluster.metrics_ports.items():
                body = urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=5).read().decode()
                for line in body.splitlines():
                    if line.startswith("ray_raybench_") and f'run_id="{run_id}"' in line:
                        names.add(line.split("{")[0])
                        if line.startswith("ray_raybench_items_total{"):  # a worker's series (the driver's have no worker tag)
                            found[ip] = line
            if found and not actors:  # the workers are running now: read their names while they live
                actors = _alive_actor_names(ray_cluster)
            time.sleep(1)
    finally:
        out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert found, "no raybench metric with the run's tag appeared on any node's metrics endpoint"
    assert {"ray_raybench_items_total", "ray_raybench_batch_latency_seconds_bucket"} <= names, names
    line = next(iter(found.values()))
    assert 'pass="infer"' in line and re.search(r'worker="\d"', line)
    # actors are named after the run, the node and the device slot
    ours = [a for a in actors if run_id in a]
    assert len(ours) == 4 and all(re.fullmatch(rf"raybench:{run_id}:w\d@127\.0\.0\.\d:cpu\d", a) for a in ours), ours


def _alive_actor_names(cluster) -> list[str]:
    code = ("import ray\nfrom ray.util.state import list_actors\n"
            f"ray.init(address='{cluster.address}', log_to_driver=False, logging_level='error')\n"
            # the cluster's own address: other Ray instances may run on this machine
            f"print([a.name for a in list_actors(address='{cluster.address}', filters=[('state', '=', 'ALIVE')], "
            "limit=1000)])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cluster.env(), timeout=60)
    return eval(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else []


def test_unreachable_address_fails_fast_in_one_line(ray_cluster, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    out = bench(ray_cluster, "submit", "jobs/smoke.yaml", "--address", f"127.0.0.2:{port}", "--results", str(tmp_path))
    assert time.time() - t0 < 30
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --address 127.0.0.2:{port}: no Ray cluster answers")
    assert rows(tmp_path) == []


def wait_for_job(cluster, run_id, timeout=180) -> str:
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
        state = bench(cluster, "status", run_id, "--address", cluster.dashboard).stdout
        if any(s in state for s in ("SUCCEEDED", "FAILED", "STOPPED")):
            break
        time.sleep(2)
    return state


def job_info(cluster, run_id) -> dict:
    request = urllib.request.Request(f"{cluster.dashboard}/api/jobs/{run_id}",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


def test_as_job_through_the_jobs_api_with_status_logs_and_the_heads_results_folder(ray_cluster):
    """No --results: the job writes to the head's durable default (the nodes export RAYBENCH_RESULTS,
    as cluster.yaml does), and the submitting side prints exactly that folder."""
    out = bench(ray_cluster, "submit", "jobs/smoke.yaml", "--as-job", "--address", ray_cluster.dashboard, "--workers", "2")
    assert out.returncode == 0, out.stderr
    run_id = re.search(r"submitted run (\S+)", out.stdout).group(1)
    assert f"results go to {ray_cluster.head_results} on the head node" in out.stdout
    assert f"{run_id}: SUCCEEDED" in wait_for_job(ray_cluster, run_id)
    logs = bench(ray_cluster, "logs", run_id, "--address", ray_cluster.dashboard).stdout
    assert f"run id: {run_id}" in logs and "p_infer_core" in logs
    assert run_id in [r["run_id"] for r in rows(ray_cluster.head_results)]
    assert job_info(ray_cluster, run_id)["metadata"]["job_name"] == "smoke"  # the Jobs view's Name column
    unknown = bench(ray_cluster, "status", "no-such-run", "--address", ray_cluster.dashboard)
    assert unknown.returncode == 2 and "no-such-run" in unknown.stderr


def test_as_job_results_on_s3_are_read_back_on_the_submitting_side(ray_cluster, moto_s3, tmp_path):
    """The head writes to the S3 store named by the URI (the endpoint travels in it; the nodes hold
    their own credentials); this side reads the row back with `bench results`."""
    uri = moto_s3.uri_with_endpoint(moto_s3.new_bucket(), "shared")
    env = {**ray_cluster.env(), **moto_s3.env()}
    out = subprocess.run([*BENCH, "submit", "jobs/smoke.yaml", "--as-job", "--address", ray_cluster.dashboard,
                          "--results", uri, "--workers", "2", "--set", "data.synthetic.size=256"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    run_id = re.search(r"submitted run (\S+)", out.stdout).group(1)
    assert f"results go to s3://{uri.removeprefix('s3://').split('?')[0]}\n" in out.stdout
    assert f"{run_id}: SUCCEEDED" in wait_for_job(ray_cluster, run_id)
    listed = subprocess.run([*BENCH, "results", "--results", uri, "--format", "csv", "--columns", "run_id,workers"],
                            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1:] == [f"\"{run_id}\",2"]


def interrupt_after(cluster, results, run_id: str, shards: int, sig: int) -> subprocess.Popen:
    """Start the synthetic job, signal its driver once `shards` shards are on disk."""
    proc = start_bench(cluster, "submit", "jobs/synthetic.yaml", "--address", cluster.address, "--results",
                       str(results), "--run-id", run_id, "--set", "data.synthetic.size=3200")
    wait_for_shards(results, run_id, shards)
    proc.send_signal(sig)
    return proc


def test_driver_killed_then_resumed_reruns_only_missing_shards(ray_cluster, tmp_path):
    run_id = "resume-test-run"
    args = ["--address", ray_cluster.address, "--results", str(tmp_path)]
    proc = interrupt_after(ray_cluster, tmp_path, run_id, 10, signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    folder = tmp_path / "runs" / run_id / "shards"
    before = {p.name: p.read_bytes() for p in folder.glob("*.json")}
    assert 10 <= len(before) < SYNTHETIC_3200_SHARDS
    resumed = bench(ray_cluster, "submit", "--resume", run_id, *args, "--workers", "2")  # the cluster came back smaller
    assert resumed.returncode == 0, resumed.stderr
    after = {p.name: p.read_bytes() for p in folder.glob("*.json")}
    assert len(after) == SYNTHETIC_3200_SHARDS
    assert all(after[name] == data for name, data in before.items())  # finished shards were not re-run
    (row,) = rows(tmp_path)
    assert row["run_id"] == run_id and row["resumed"] and row["items_infer"] == 3200
    again = bench(ray_cluster, "submit", "--resume", run_id, *args)
    assert again.returncode == 0 and f"run {run_id} is already complete" in again.stdout, again.stderr
    assert len(rows(tmp_path)) == 1  # a resume of a complete run adds nothing
    reference = bench(ray_cluster, "submit", "jobs/synthetic.yaml", *args, "--workers", "2",
                      "--set", "data.synthetic.size=3200", "--set", "engine.latency_ms=1")
    assert reference.returncode == 0, reference.stderr
    ref = rows(tmp_path)[1]
    assert {k: row[k] for k in ("items_infer", "scored_infer", "correct_infer", "acc")} == \
           {k: ref[k] for k in ("items_infer", "scored_infer", "correct_infer", "acc")}


def test_ctrl_c_stops_the_workers_and_leaves_a_resumable_run(ray_cluster, tmp_path):
    run_id = "ctrl-c-test-run"
    args = ["--address", ray_cluster.address, "--results", str(tmp_path)]
    proc = interrupt_after(ray_cluster, tmp_path, run_id, 5, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"bench submit --resume {run_id}" in err
    assert not [a for a in _alive_actor_names(ray_cluster) if run_id in a]  # the workers were stopped
    assert rows(tmp_path) == []
    resumed = bench(ray_cluster, "submit", "--resume", run_id, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert rows(tmp_path)[0]["items_infer"] == 3200


def test_two_jobs_at_once_into_one_results_folder(ray_cluster, tmp_path):
    args = ["--address", ray_cluster.address, "--results", str(tmp_path), "--workers", "2",
            "--set", "data.synthetic.size=1600"]
    procs = [start_bench(ray_cluster, "submit", "jobs/synthetic.yaml", *args, "--run-id", f"concurrent-{i}")
             for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    assert sorted(r["run_id"] for r in rows(tmp_path)) == ["concurrent-0", "concurrent-1"]


def node_local_job(tmp_path, name: str, **overrides) -> tuple:
    """A masked-LM job whose text exists only on the nodes: a cluster whose nodes have their own HOME
    holding `~/<file>`, which the submitting machine's HOME lacks. Returns (job file, node home)."""
    import secrets
    import shutil

    import yaml

    from tests.builders import WIKITEXT, bert_vocab

    text = f"raybench-node-local-{secrets.token_hex(4)}.raw"
    node_home = tmp_path / "node-home"
    node_home.mkdir(exist_ok=True)
    shutil.copy(WIKITEXT, node_home / text)
    job = {"name": name, "task": {"name": "masked_lm", "limit": 32}, "data": f"~/{text}", "bs": 8,
           "seq_len": 128, "engine": "torch", "passes": ["infer"], "workers": 2, "warmup": 1,
           "model": {"random": {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32,
                                "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                                "max_position_embeddings": 128}, "tokenizer": str(bert_vocab())}, **overrides}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(job))
    return tmp_path / f"{name}.yaml", node_home


def test_losing_a_node_mid_run_still_gives_exact_results(tmp_path):
    """A separate two-node cluster (the shared one must survive): kill the worker node's processes.
    The data is node-local (prepared on each node), so the workers Ray restarts on the head cannot
    use the object prepared on the lost node: they are handed the head's preparation. Ray restarts
    them ~5 s after the loss here; the ~18 s of work left leaves them time to run shards there."""
    from tests.cluster import LocalCluster

    job_file, node_home = node_local_job(
        tmp_path, "node-loss", task={"name": "masked_lm", "limit": 3200}, bs=4, seq_len=32, workers=4,
        engine={"name": "synthetic", "latency_ms": 50}, gpus_per_worker=0, cpus_per_worker=0, shard_size=40)
    cluster = LocalCluster(tmp_path / "cluster", node_env={"HOME": str(node_home)}).start(nodes=2)
    try:
        run_id = "node-loss-run"
        results = tmp_path / "results"
        proc = start_bench(cluster, "submit", str(job_file), "--address", cluster.address,
                           "--results", str(results), "--run-id", run_id)
        wait_for_shards(results, run_id, 8)
        cluster.stop_node("127.0.0.3")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        (row,) = rows(results)
        assert row["items_infer"] == 3200 and row["retries"] >= 1 and row["workers_lost"] == 0
        assert row["data_prepared_on"] == "127.0.0.2,127.0.0.3"
        shards = pq.read_table(results / "runs" / run_id / "shards.parquet").to_pylist()
        assert sorted(s["shard_id"] for s in shards) == list(range(row["shards"]))
        nodes_of = {w: {s["node_id"] for s in shards if s["worker_id"] == w} for w in range(4)}
        assert any(len(nodes) == 2 for nodes in nodes_of.values()), nodes_of  # restarted on the head, ran there
        reference = bench(cluster, "submit", str(job_file), "--address", cluster.address, "--results",
                          str(results), "--workers", "2", "--set", "engine.latency_ms=1")
        assert reference.returncode == 0, reference.stderr
        ref = rows(results)[1]
        assert {k: row[k] for k in ("scored_infer", "correct_infer", "acc")} == \
               {k: ref[k] for k in ("scored_infer", "correct_infer", "acc")}
    finally:
        cluster.stop()


def put_in_hub_cache(hf_home, repo_id: str, folder) -> None:
    """Lay a saved model out as the Hugging Face hub cache does (refs/main -> snapshots/<sha>/)."""
    import shutil

    sha = "0" * 40
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    shutil.copytree(folder, repo / "snapshots" / sha, dirs_exist_ok=True)


def test_hub_weights_are_fetched_once_per_node_before_the_workers_start(ray_cluster, tmp_path):
    """A hub id (served offline from the nodes' hub cache): one fetch task per node, then 4 workers."""
    from transformers import BertTokenizer

    from tests.builders import bert_vocab, save_tiny_bert

    folder = save_tiny_bert(tmp_path / "tiny-bert", vocab_size=30522)
    BertTokenizer(vocab=str(bert_vocab())).save_pretrained(folder)
    put_in_hub_cache(ray_cluster.hf_home, "raybench-test/tiny-bert", folder)
    out = bench(ray_cluster, "submit", "jobs/smoke.yaml", "--address", ray_cluster.address, "--workers", "4",
                "--results", str(tmp_path / "results"), "--set", "model=raybench-test/tiny-bert",
                "--set", "seq_len=64", "--set", "data.synthetic.size=64")
    assert out.returncode == 0, out.stderr
    (row,) = rows(tmp_path / "results")
    meta = json.loads((tmp_path / "results" / "runs" / row["run_id"] / "run.json").read_text())
    assert len(meta["weights_fetched_on"]) == 2  # both nodes, once each
    assert row["model"] == "raybench-test/tiny-bert" and row["workers"] == 4 and row["nodes"] == 2


def _timed_one_line(cluster, env_changes: dict, *args, home=None):
    """Run `bench` with the cluster's environment changed; return (seconds, exit code, stderr lines)."""
    env = {k: v for k, v in cluster.env().items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    env.update(HOME=str(home), **env_changes)
    t0 = time.monotonic()
    out = subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=120, env=env)
    return time.monotonic() - t0, out.returncode, out.stderr.strip().splitlines()


@pytest.mark.parametrize("case, env, expected", [
    ("no auth mode", {}, "the cluster uses token auth: export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN="),
    ("mode but no token", {"RAY_AUTH_MODE": "token"}, "RAY_AUTH_MODE=token but no token is set here"),
    ("wrong token", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"},
     "the cluster rejected the token from RAY_AUTH_TOKEN: use the head's token"),
])
def test_a_missing_or_wrong_token_is_one_line_within_5_s(ray_cluster, tmp_path, case, env, expected):
    """On the GCS address (ray.init alone would retry ~20 s) and on the Jobs API; the home folder is
    empty, so no ~/.ray/auth_token stands in for the token."""
    for args in (["submit", "jobs/smoke.yaml", "--address", ray_cluster.address, "--results", str(tmp_path)],
                 ["status", "some-run", "--address", ray_cluster.dashboard]):
        seconds, code, lines = _timed_one_line(ray_cluster, env, *args, home=tmp_path)
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
        assert seconds < 5, f"{args[0]}: {seconds:.1f} s"
    assert rows(tmp_path) == []


def test_a_token_file_without_the_mode_says_to_export_the_mode(ray_cluster, tmp_path):
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(ray_cluster.token)
    _, code, lines = _timed_one_line(ray_cluster, {}, "submit", "jobs/smoke.yaml", "--address", ray_cluster.address,
                                     home=tmp_path)
    assert code == 2 and lines == ["error: --address 127.0.0.2:%d: the cluster uses token auth and this shell sends no "
                                   "token: export RAY_AUTH_MODE=token (the token is read from ~/.ray/auth_token)"
                                   % ray_cluster.gcs_port]


def test_address_auto_reads_the_clusters_own_temp_dir(ray_cluster, tmp_path, monkeypatch):
    """`ray start --temp-dir X` records the cluster in X/ray_current_cluster; --temp-dir X finds it."""
    from orchestrator.cluster.connect import resolve_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address("auto", str(ray_cluster.temp_dir)) == ray_cluster.address
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # a dashboard URL is for the Jobs API: not used
    assert resolve_address("auto", str(ray_cluster.temp_dir)) == ray_cluster.address
    out = bench(ray_cluster, "submit", "jobs/smoke.yaml", "--address", "auto", "--temp-dir", str(ray_cluster.temp_dir),
                "--results", str(tmp_path), "--workers", "1", "--set", "data.synthetic.size=64")
    assert out.returncode == 0, out.stderr
    assert rows(tmp_path)[0]["nodes"] == 1
    missing = bench(ray_cluster, "submit", "jobs/smoke.yaml", "--address", "auto", "--temp-dir", str(tmp_path / "none"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (f"error: --address auto: no running Ray cluster recorded in "
                                      f"{tmp_path / 'none' / 'ray_current_cluster'} (start one with `ray up cluster.yaml` "
                                      "or `ray start --head`, pass the --temp-dir it was started with, or give the "
                                      "head's address)")


def test_two_tensor_parallel_groups_each_on_one_node(ray_cluster, tmp_path):
    """workers: auto with parallel.tp 2 on 2 nodes x 2 (fake) GPUs: two groups, each packed on its own
    node; torch sees no CUDA there, so the ranks run on the CPU over gloo."""
    import yaml

    from tests.builders import save_bpe_tokenizer, tp_llama_job

    job_file = tmp_path / "tp.yaml"
    job_file.write_text(yaml.safe_dump(tp_llama_job(save_bpe_tokenizer(tmp_path / "tokenizer"), workers="auto",
                                                    passes=["infer"], shard_size=4)))
    out = bench(ray_cluster, "submit", str(job_file), "--address", ray_cluster.address, "--results", str(tmp_path))
    assert out.returncode == 0, out.stderr
    (row,) = rows(tmp_path)
    assert (row["workers"], row["tp"], row["nodes"], row["items_infer"] > 0) == (2, 2, 2, True)
    assert row["devices"].startswith("2x CPU")  # 4 CPU ranks on fake GPUs: each node's one CPU, counted once
    groups = pq.read_table(tmp_path / "runs" / row["run_id"] / "workers.parquet").to_pylist()
    assert [len(set(g["rank_nodes"])) for g in groups] == [1, 1]  # each group on one node
    assert len({g["rank_nodes"][0] for g in groups}) == 2  # the groups on different nodes
    assert all(re.search(r"\(GPU \d\)", d) for g in groups for d in g["rank_devices"])  # one Ray GPU per rank
    shards = pq.read_table(tmp_path / "runs" / row["run_id"] / "shards.parquet").to_pylist()
    assert {s["worker_id"] for s in shards} == {0, 1}
    assert sorted(s["shard_id"] for s in shards) == list(range(row["shards"]))


def test_node_local_data_is_prepared_once_per_node_and_checked(tmp_path):
    """A data path that exists only on the nodes. Each node with workers prepares its copy
    once; the row says where, and the numbers equal a run on the same file given by its full path."""
    from tests.cluster import LocalCluster

    job_file, node_home = node_local_job(tmp_path, "node-local")
    name = yaml_data_name(job_file)
    cluster = LocalCluster(tmp_path / "cluster", node_env={"HOME": str(node_home)}).start(nodes=2)
    try:
        args = ["--address", cluster.address, "--results", str(tmp_path / "results")]
        on_nodes = bench(cluster, "submit", str(job_file), *args)
        assert on_nodes.returncode == 0, on_nodes.stderr
        full_path = bench(cluster, "submit", str(job_file), *args, "--set", f"data={node_home / name}")
        assert full_path.returncode == 0, full_path.stderr
    finally:
        cluster.stop()
    local, shared = rows(tmp_path / "results")
    assert local["data_prepared_on"] == "127.0.0.2,127.0.0.3" and local["nodes"] == 2  # once on each node
    assert shared["data_prepared_on"] in ("127.0.0.2", "127.0.0.3")  # once, on the driver's node
    assert local["data_cache_hit"] is False
    assert {k: local[k] for k in COUNTS} == {k: shared[k] for k in COUNTS} and local["items_infer"] == 32
    assert list((node_home / ".cache" / "raybench" / "data").glob("data-*/data.arrow"))  # the nodes' own cache


def yaml_data_name(job_file) -> str:
    import yaml

    return yaml.safe_load(job_file.read_text())["data"].removeprefix("~/")
