#!/usr/bin/env bash
# (Re)start Prometheus on the Ray head with the scrape config Ray wrote for this session.
#
#   bash scripts/prometheus_head.sh [--temp-dir DIR] [--listen HOST:PORT] [--stop]
#
# Ray writes <temp dir>/session_latest/metrics/prometheus/prometheus.yml at `ray start --head`: it
# scrapes every node's metrics endpoint through a service-discovery file that Ray keeps current, so
# nodes that join later are scraped too. That config names the session, so Prometheus is restarted
# at every head start (cluster.yaml runs this after `ray start --head`). It listens on the head's
# loopback by default (the dashboard reads it there through RAY_PROMETHEUS_HOST; reach it with an
# ssh tunnel), keeps its data in ~/prometheus-data, and is stopped by the pid it recorded, never by
# name. Debian/Ubuntu's `prometheus` package is installed when missing.
set -uo pipefail

TEMP_DIR=/tmp/ray
LISTEN=127.0.0.1:9090
STOP=0
while (($#)); do
    case $1 in
        --temp-dir) TEMP_DIR=${2:?}; shift ;;
        --temp-dir=*) TEMP_DIR=${1#*=} ;;
        --listen) LISTEN=${2:?}; shift ;;
        --listen=*) LISTEN=${1#*=} ;;
        --stop) STOP=1 ;;
        *) echo "prometheus_head.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
PIDFILE=$HOME/prometheus.pid

stop_ours() {  # only the process this script started: its pid, and still a prometheus
    [[ -f $PIDFILE ]] || return 0
    local pid
    pid=$(<"$PIDFILE")
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == prometheus ]]; then
        kill "$pid" && for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$PIDFILE"
}

stop_ours
((STOP)) && exit 0

if ! command -v prometheus >/dev/null; then
    sudo=$([[ $(id -u) == 0 ]] || echo sudo)
    echo "prometheus_head.sh: installing Debian's prometheus package"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null \
        || { echo "prometheus_head.sh: could not install prometheus (apt-get); the dashboard's Metrics tab stays empty" >&2; exit 0; }
    # the package starts a system-wide Prometheus on 0.0.0.0:9090 with its own config: not ours
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

config=$TEMP_DIR/session_latest/metrics/prometheus/prometheus.yml
for _ in $(seq 1 30); do [[ -f $config ]] && break; sleep 1; done
if [[ ! -f $config ]]; then
    echo "prometheus_head.sh: Ray wrote no $config (is this the head, and --temp-dir right?)" >&2
    exit 0  # metrics are an extra: never fail the node's start over them
fi
mkdir -p "$HOME/prometheus-data"
nohup prometheus --config.file="$config" --storage.tsdb.path="$HOME/prometheus-data" \
    --web.listen-address="$LISTEN" </dev/null >"$HOME/prometheus.log" 2>&1 &
echo $! >"$PIDFILE"
echo "prometheus_head.sh: Prometheus (pid $!) on $LISTEN scrapes the nodes Ray lists in $config"
