#!/usr/bin/env bash
# Loopback check of cluster.yaml: `ray up` for real, two nodes on one Linux machine, then a job.
#
#   scripts/ray_up_loopback.sh [--keep] [--dir DIR]     (as root, with `ray` and `bench` on PATH)
#
# Starts one sshd per node, on port 22 of 127.0.0.2 (head) and 127.0.0.3 (worker), each with its own
# config and pid file and in its own mount namespace where /root is DIR/h2 or DIR/h3, so the two
# "nodes" have separate homes like real machines. Applies the site fields of
# scripts/loopback_overlay.yaml to the shipped cluster.yaml, runs `ray up -y`, waits for both nodes,
# checks that the nodes' login shells have token auth, submits jobs/smoke.yaml with
# `bench submit --as-job`, and checks that shards ran on both nodes and that the metrics row came
# back to the head's default results folder, and that the head's Prometheus (scripts/prometheus_head.sh)
# saw the run's series. Then it stops what it started, by process id: each node's Ray
# (scripts/ray_node.sh --stop), the head's Prometheus and the two sshds. It never runs `ray stop`/`ray down` (they stop every Ray on the machine).
# --keep leaves the cluster up and prints how to stop it. DIR (default /tmp/rbl; short, as Ray's
# socket paths must stay under ~107 bytes) keeps the node homes, so a second run reuses their venvs.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=/tmp/rbl
KEEP=0
while (($#)); do
    case $1 in
        --keep) KEEP=1 ;;
        --dir) WORK=${2:?--dir needs a folder}; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "ray_up_loopback: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
CLUSTER=raybench-loopback-$(basename "$WORK")
HEAD=127.0.0.2
WORKER=127.0.0.3
SSH_KEY=$HOME/.ssh/raybench_loopback
# The job is submitted without --results: it writes to the head's durable default (cluster.yaml's
# RAYBENCH_RESULTS, ~/raybench-results), which on loopback is under the head's home, $WORK/h2.
LOGS=$WORK/logs
export RAY_AUTH_MODE=token  # the submitting side's Jobs API and state API calls carry the token

step() { echo "==> $*"; }
die() { echo "ray_up_loopback: FAILED: $*" >&2; exit 1; }
show_tail() { [[ -f $1 ]] && { echo "---- last lines of $1"; tail -n "${2:-40}" "$1"; echo "----"; } >&2; }

# ---------------------------------------------------------------- preconditions
[[ $(id -u) == 0 ]] || die "run as root (it installs openssh-server and starts an sshd)"
for tool in ray bench python; do
    command -v "$tool" >/dev/null || die "\`$tool\` is not on PATH (activate the venv with raybench and Ray first)"
done
if ! command -v rsync >/dev/null || [[ ! -x /usr/sbin/sshd ]]; then
    step "installing openssh-server and rsync (apt)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server rsync; } >/dev/null \
        || die "apt-get install openssh-server rsync failed"
fi
for pidfile in "$WORK"/sshd.*.pid; do
    if [[ -f $pidfile ]] && kill -0 "$(<"$pidfile")" 2>/dev/null; then
        die "a previous run in $WORK is still up; stop it first: $WORK/teardown.sh"
    fi
done
# Port 22: Ray drops ssh_proxy_command from the config it gives the head (commands.py), so the
# head's autoscaler reaches workers on port 22 only. A system sshd on 0.0.0.0:22 holds it.
for ip in $HEAD $WORKER; do
    python -c "import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 22))" "$ip" 2>/dev/null \
        || die "port 22 on $ip is taken (a system sshd on 0.0.0.0:22?); the head's autoscaler can only reach workers on port 22"
done
mkdir -p "$WORK/h2" "$WORK/h3" "$WORK/t2" "$WORK/t3" "$LOGS" "$HOME/.ssh" || die "cannot create $WORK"
rm -f "$LOGS"/*

if [[ ! -s $HOME/.ray/auth_token ]]; then
    step "creating the cluster token $HOME/.ray/auth_token (cluster.yaml's file_mounts copy it)"
    (umask 077 && mkdir -p "$HOME/.ray" && python -c "import secrets; print(secrets.token_hex(32))" >"$HOME/.ray/auth_token")
fi
chmod 600 "$HOME/.ray/auth_token"  # one made by an older version of this script was 0644
if [[ ! -f $SSH_KEY ]]; then
    step "creating the ssh key $SSH_KEY"
    ssh-keygen -q -t ed25519 -N '' -C raybench-loopback -f "$SSH_KEY" || die "ssh-keygen failed"
fi

# ---------------------------------------------------------------- ports
# Free now on every address; Ray's fixed defaults (6379, 8265, 10001, 8080, 52365, 44217, 44227 and
# worker ports 10002-19999) may belong to other clusters on this machine.
read -r GCS_PORT DASHBOARD_PORT CLIENT_PORT HEAD_METRICS_PORT WORKER_METRICS_PORT \
    HEAD_AGENT_PORT WORKER_AGENT_PORT AUTOSCALER_METRICS_PORT DASHBOARD_METRICS_PORT PROMETHEUS_PORT \
    HEAD_MIN_WORKER_PORT WORKER_MIN_WORKER_PORT < <(python - <<'EOF'
import random, socket

def free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
            return True
        except OSError:
            return False

held = []
for _ in range(10):  # bound together, so all different
    s = socket.socket()
    s.bind(("", 0))
    held.append(s)
ports = [s.getsockname()[1] for s in held]
blocks = []  # 100 worker ports per node, below the kernel's ephemeral range
while len(blocks) < 2:
    base = random.randrange(20000, 32000, 100)
    if base not in blocks and all(free(p) for p in range(base, base + 100)):
        blocks.append(base)
print(*ports, *blocks)
EOF
)
[[ -n ${WORKER_MIN_WORKER_PORT:-} ]] || die "could not find free ports"
HEAD_MAX_WORKER_PORT=$((HEAD_MIN_WORKER_PORT + 99))
WORKER_MAX_WORKER_PORT=$((WORKER_MIN_WORKER_PORT + 99))
DASHBOARD=http://$HEAD:$DASHBOARD_PORT
echo "    ports: GCS $GCS_PORT, dashboard $DASHBOARD_PORT; node homes (their /root) $WORK/h2 (head), $WORK/h3 (worker)"

# ---------------------------------------------------------------- teardown (by pid only)
cat >"$WORK/teardown.sh" <<EOF
#!/usr/bin/env bash
# Stops what ray_up_loopback.sh started in $WORK, by process id; touches nothing else.
bash "$REPO/scripts/ray_node.sh" --stop --temp-dir=$WORK/t2/ray   # the head first: its autoscaler
bash "$REPO/scripts/ray_node.sh" --stop --temp-dir=$WORK/t3/ray   # would restart the worker
HOME=$WORK/h2 bash "$REPO/scripts/prometheus_head.sh" --stop       # the head's Prometheus, by its pid file
for pidfile in $WORK/sshd.2.pid $WORK/sshd.3.pid; do
    [[ -f \$pidfile ]] && kill "\$(cat \$pidfile)" 2>/dev/null; rm -f \$pidfile
done
# the cluster's state files: ray up's (this machine's /tmp/ray) and the head autoscaler's
rm -f /tmp/ray/cluster-$CLUSTER.state /tmp/ray/cluster-$CLUSTER.lock $WORK/t2/ray/cluster-$CLUSTER.state $WORK/t2/ray/cluster-$CLUSTER.lock
EOF
chmod +x "$WORK/teardown.sh"
finish() {
    local rc=$?
    if ((KEEP)); then
        echo "    --keep: the cluster stays up. Dashboard $DASHBOARD; config $WORK/cluster.yaml"
        echo "    stop it (by pid, only what this run started): $WORK/teardown.sh"
    else
        step "tearing down by pid: each node's Ray (its recorded process group), the head's Prometheus, the two sshds"
        "$WORK/teardown.sh"
        local left
        left=$(pgrep -f -- "$WORK/t[23]/ray/session_" | tr '\n' ' ')
        [[ -z $left ]] || echo "ray_up_loopback: warning: processes of this run still alive: $left" >&2
    fi
    exit $rc
}
trap finish EXIT

# ---------------------------------------------------------------- one sshd per node
# Each sshd runs in its own mount namespace with /root bound to the node's home: its sessions, and
# the Ray they start, see that home as ~. (ssh finds -i ~/ray_bootstrap_key.pem through the passwd
# entry's home, /root, not through $HOME, so a HOME variable alone would not do.)
[[ -f $WORK/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh_host_ed25519_key"
mkdir -p /run/sshd  # sshd's privilege-separation directory
for n in 2 3; do
    ip=127.0.0.$n
    home=$WORK/h$n
    step "starting sshd on $ip:22 (config $WORK/sshd_config.$n; /root there is $home)"
    [[ -f $home/.profile ]] || cp -rT /etc/skel "$home"  # a fresh home, as a new user's
    mkdir -p "$home/.ssh" && cp "$SSH_KEY.pub" "$home/.ssh/authorized_keys"
    for conf in .config/pip/pip.conf .pip/pip.conf; do  # this machine's pip settings (its local
        if [[ -f $HOME/$conf ]]; then                   # wheels and index), as a site's nodes have theirs
            mkdir -p "$home/$(dirname "$conf")" && cp "$HOME/$conf" "$home/$conf"
        fi
    done
    printf '%s\n' "ListenAddress $ip:22" "HostKey $WORK/ssh_host_ed25519_key" "PidFile $WORK/sshd.$n.pid" \
        "PermitRootLogin prohibit-password" "PasswordAuthentication no" "KbdInteractiveAuthentication no" \
        "UsePAM no" >"$WORK/sshd_config.$n"
    unshare --mount --propagation private -- sh -c 'mount --bind "$0" /root && exec /usr/sbin/sshd -f "$1" -E "$2"' \
        "$home" "$WORK/sshd_config.$n" "$LOGS/sshd.$n.log" || die "sshd on $ip did not start (see $LOGS/sshd.$n.log)"
    for _ in $(seq 1 50); do [[ -s $WORK/sshd.$n.pid ]] && break; sleep 0.1; done
    [[ -s $WORK/sshd.$n.pid ]] || die "sshd on $ip wrote no pid file (see $LOGS/sshd.$n.log)"
    echo "    sshd pid $(<"$WORK/sshd.$n.pid")"
done

# ---------------------------------------------------------------- merged config and ray up
step "cluster.yaml + scripts/loopback_overlay.yaml -> $WORK/cluster.yaml"
vars=()
for name in WORK CLUSTER SSH_KEY GCS_PORT DASHBOARD_PORT CLIENT_PORT HEAD_METRICS_PORT \
    WORKER_METRICS_PORT HEAD_AGENT_PORT WORKER_AGENT_PORT AUTOSCALER_METRICS_PORT DASHBOARD_METRICS_PORT PROMETHEUS_PORT \
    HEAD_MIN_WORKER_PORT HEAD_MAX_WORKER_PORT WORKER_MIN_WORKER_PORT WORKER_MAX_WORKER_PORT; do
    vars+=("$name=${!name}")
done
python "$REPO/scripts/overlay_yaml.py" "$REPO/cluster.yaml" "$REPO/scripts/loopback_overlay.yaml" "${vars[@]}" \
    >"$WORK/cluster.yaml" || die "could not apply the overlay"

step "ray up -y $WORK/cluster.yaml (setup and start of the head; log $LOGS/ray_up.log)"
started=$SECONDS
(cd "$REPO" && ray up -y --no-config-cache "$WORK/cluster.yaml") >"$LOGS/ray_up.log" 2>&1 \
    || { show_tail "$LOGS/ray_up.log"; die "ray up failed (full log $LOGS/ray_up.log)"; }
echo "    head up after $((SECONDS - started)) s"

# ---------------------------------------------------------------- both nodes joined
step "waiting for both nodes to join (the head's autoscaler sets up and starts the worker)"
alive_ips() {
    ray list nodes --address "$DASHBOARD" --filter state=ALIVE --format json 2>/dev/null \
        | python -c "import json, sys; print(' '.join(sorted(n['node_ip'] for n in json.load(sys.stdin))))" 2>/dev/null
}
deadline=$((SECONDS + 1500))
while :; do
    ips=$(alive_ips)
    [[ $ips == "$HEAD $WORKER" ]] && break
    if ((SECONDS > deadline)); then
        show_tail "$(ls -t "$WORK"/t2/ray/session_latest/logs/monitor.* 2>/dev/null | head -1)" 60
        die "after 25 min the cluster's alive nodes are [${ips}], not [$HEAD $WORKER] (head's autoscaler log above)"
    fi
    sleep 10
done
echo "    alive: $ips (after $((SECONDS - started)) s)"

# ---------------------------------------------------------------- token auth in the nodes' shells
step "the nodes' shells have the venv and RAY_AUTH_MODE=token: \`ray status\` there"
(cd "$REPO" && ray exec "$WORK/cluster.yaml" "ray status --address=$HEAD:$GCS_PORT") >"$LOGS/head_status.log" 2>&1 \
    || { show_tail "$LOGS/head_status.log"; die "\`ray exec cluster.yaml 'ray status'\` failed on the head"; }
echo "    head (ray exec cluster.yaml 'ray status'):   ok"
ssh -T -i "$SSH_KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes \
    "root@$WORKER" \
    "bash --login -i -c 'ray status --address=$HEAD:$GCS_PORT'" >"$LOGS/worker_status.log" 2>&1 \
    || { show_tail "$LOGS/worker_status.log"; die "\`ray status\` in a login shell on the worker failed"; }
echo "    worker (ssh + login shell, 'ray status'):   ok"

# ---------------------------------------------------------------- a job through the Jobs API
step "bench submit jobs/smoke.yaml --as-job --address $DASHBOARD   (no --results: the head's default)"
submit_out=$(cd "$REPO" && bench submit jobs/smoke.yaml --as-job --address "$DASHBOARD" 2>&1) \
    || { echo "$submit_out" >&2; die "bench submit --as-job failed"; }
echo "$submit_out" | sed 's/^/    /'
run_id=$(echo "$submit_out" | sed -n 's/^submitted run \([^ ]*\) as a Ray job.*/\1/p')
[[ -n $run_id ]] || die "could not read the run id from bench submit's output"

step "waiting for run $run_id"
deadline=$((SECONDS + 900))
while :; do
    state=$(bench status "$run_id" --address "$DASHBOARD" 2>&1 | sed -n "s/^$run_id: \([A-Z]*\).*/\1/p")
    case $state in
        SUCCEEDED) break ;;
        FAILED|STOPPED)
            bench logs "$run_id" --address "$DASHBOARD" >"$LOGS/job.log" 2>&1
            show_tail "$LOGS/job.log" 40
            die "run $run_id ended $state (job log $LOGS/job.log)" ;;
    esac
    ((SECONDS < deadline)) || die "run $run_id still ${state:-unknown} after 15 min"
    sleep 5
done
bench logs "$run_id" --address "$DASHBOARD" >"$LOGS/job.log" 2>&1
echo "    $run_id: SUCCEEDED (job log $LOGS/job.log)"
# the job's first line names its results store, as the head sees it (bench submit prints it too)
head_results=$(sed -n 's/^raybench results: //p' "$LOGS/job.log" | head -1)
[[ $head_results == /root/* ]] || die "the job did not report a results folder under the head's home (got '${head_results}')"
RESULTS=$WORK/h2/${head_results#/root/}  # the head's /root is $WORK/h2 on this machine

# ---------------------------------------------------------------- results on the head
step "checking $RESULTS (the head's $head_results): shards on both nodes, the metrics row"
python - "$RESULTS" "$run_id" <<'EOF' || die "the results of run $run_id are not what they should be (see above)"
import sys

from orchestrator.metrics.store import ResultsStore

store, run_id = ResultsStore(sys.argv[1]), sys.argv[2]
shards = store.run(run_id).read_table("shards.parquet").to_pylist()
nodes = sorted({s["node_id"] for s in shards})
print(f"    shards.parquet: {len(shards)} shards on {len(nodes)} nodes ({', '.join(n[:12] for n in nodes)})")
rows = [r for r in store.read_metrics().to_pylist() if r["run_id"] == run_id]
if rows:
    shown = {k: rows[0][k] for k in ("run_id", "engine", "workers", "nodes", "p_infer_whole", "e2e_time")}
    print(f"    metrics row: {shown}")
if len(nodes) != 2:
    sys.exit(f"ray_up_loopback: shards ran on {len(nodes)} node(s), expected 2")
if not rows:
    sys.exit(f"ray_up_loopback: no metrics row for {run_id} in {store.location}")
EOF

# ---------------------------------------------------------------- the head's Prometheus
step "the head's Prometheus (127.0.0.2:$PROMETHEUS_PORT) has ray_raybench_items_total for $run_id"
python - "$PROMETHEUS_PORT" "$run_id" <<'EOF' || die "Prometheus on the head did not see the run's series (log $WORK/h2/prometheus.log)"
import json, sys, time, urllib.parse, urllib.request

port, run_id = sys.argv[1], sys.argv[2]
query = urllib.parse.urlencode({"query": f'ray_raybench_items_total{{run_id="{run_id}"}}'})
deadline = time.time() + 60
while True:
    try:
        body = json.loads(urllib.request.urlopen(f"http://127.0.0.2:{port}/api/v1/query?{query}", timeout=5).read())
        series = body["data"]["result"]
    except OSError as exc:
        series, body = [], {"error": str(exc)}
    if series:
        nodes = sorted({s["metric"].get("NodeAddress", "?") for s in series})
        print(f"    {len(series)} series of the run, from node(s) {', '.join(nodes)}")
        break
    if time.time() > deadline:
        sys.exit(f"no series after 60 s: {body}")
    time.sleep(3)
targets = json.loads(urllib.request.urlopen(f"http://127.0.0.2:{port}/api/v1/targets", timeout=5).read())
up = sorted({t["labels"]["instance"].split(":")[0] for t in targets["data"]["activeTargets"] if t["health"] == "up"})
print(f"    scrape targets up: {', '.join(up)}")
if not {"127.0.0.2", "127.0.0.3"} <= set(up):
    sys.exit(f"Prometheus does not scrape both nodes (up: {up})")
EOF
step "PASSED: ray up of cluster.yaml, 2 nodes joined, shards on both, metrics row back, Prometheus sees the run"
