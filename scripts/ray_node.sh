#!/usr/bin/env bash
# Start this node's Ray, first stopping the Ray that this script started here before, and only that.
#
#   ray_node.sh ray start [options]      e.g. ray_node.sh ray start --head --port=6379 --num-gpus=8
#   ray_node.sh --stop [--temp-dir=DIR]  stop the Ray this script started (nothing else)
# The temp dir is Ray's: --temp-dir if given, else $RAY_TMPDIR/ray, $TMPDIR/ray or /tmp/ray. (A worker
# started without --temp-dir takes the head's: give workers --temp-dir if the head's is not that.)
#
# Why not `ray stop` (Ray's default start commands): it kills every Ray process of this user on the
# machine, including clusters that this cluster.yaml did not start (a colleague's test cluster, a
# second cluster on shared nodes). Instead `ray start` runs in a new session, so its daemons (GCS,
# raylet, dashboard, agents, and the workers they spawn) share one process group; its id is
# recorded in <temp dir>/raybench-node.pgid and a restart signals that group alone. A stale id
# (reboot, reused pid) is ignored unless a process of that group still runs out of our temp dir.
# `ray down` still runs Ray's own `ray stop` on every node, which is what a dedicated cluster wants.
#
# Refuses to start Ray with a token file that group or others can read (the cluster's one secret:
# whoever reads it controls the cluster): the file Ray reads, $RAY_AUTH_TOKEN_PATH or
# ~/.ray/auth_token, unless the token comes in $RAY_AUTH_TOKEN. One line, exit 2; chmod 600 fixes it.
#
# Also raises the soft open-files limit towards 65536 (Ray opens a socket per worker and per
# object transfer), as far as the hard limit allows; a low hard limit is a warning, never a failure
# (`ulimit -n 65536 && ray start` aborted the start on nodes whose hard limit is lower).
set -u

temp_dir=${RAY_TMPDIR:-${TMPDIR:-/tmp}}/ray  # Ray's default --temp-dir (ray._common.utils)
stop_only=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
        --temp-dir=*) temp_dir=${args[i]#--temp-dir=} ;;
        --temp-dir) temp_dir=${args[i + 1]:-$temp_dir} ;;
        --stop) stop_only=1 ;;
    esac
done
pgid_file=$temp_dir/raybench-node.pgid

say() { echo "ray_node.sh: $*" >&2; }

raise_open_files_limit() {
    local want=65536 hard soft
    hard=$(ulimit -Hn)
    soft=$(ulimit -Sn)
    if [[ $hard != unlimited && $hard -lt $want ]]; then
        want=$hard
        say "open files: hard limit $hard < 65536; raising the soft limit to $hard only"
    fi
    if [[ $soft != unlimited && $soft -lt $want ]]; then
        ulimit -Sn "$want" || say "open files: could not raise the soft limit from $soft (continuing)"
    fi
}

group_is_ours() {  # a process of group $1 still runs out of $temp_dir
    local pid
    for pid in $(pgrep -g "$1"); do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$temp_dir/session_"; then
            return 0
        fi
    done
    return 1
}

ray_processes() {  # "pid starttime" of group $1 and of its descendants (Ray puts its worker
    # processes, children of the raylet, in process groups of their own)
    ps -eo pid=,ppid=,pgid= | awk -v g="$1" '
        { pid[NR] = $1; ppid[NR] = $2; if ($3 == g) ours[$1] = 1 }
        END {
            do { more = 0; for (i in pid) if (!(pid[i] in ours) && (ppid[i] in ours)) { ours[pid[i]] = 1; more = 1 } } while (more)
            for (p in ours) print p
        }' | while read -r pid; do echo "$pid $(start_time "$pid")"; done
}

start_time() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }  # field 22 of stat

signal_listed() {  # signal $1 to the listed processes that are still the same processes
    local sig=$1 pid started alive=0
    while read -r pid started; do
        [[ -n $started && $(start_time "$pid") == "$started" ]] || continue
        kill "-$sig" "$pid" 2>/dev/null && alive=1
    done <<<"$2"
    ((alive))
}

stop_recorded_ray() {
    [[ -f $pgid_file ]] || return 0
    local pgid listed
    pgid=$(<"$pgid_file")
    if [[ $pgid =~ ^[0-9]+$ ]] && group_is_ours "$pgid"; then
        listed=$(ray_processes "$pgid")
        say "stopping the Ray this script started: process group $pgid and its workers, $(wc -l <<<"$listed") processes"
        signal_listed TERM "$listed"
        for _ in $(seq 1 16); do  # Ray's own `ray stop` waits 16 s (--grace-period) before SIGKILL
            signal_listed 0 "$listed" || break
            sleep 1
        done
        if signal_listed KILL "$listed"; then
            say "killed what had not exited 16 s after SIGTERM"
            for _ in $(seq 1 50); do  # SIGKILL is not instant; `ray start` refuses while a GCS lives
                signal_listed 0 "$listed" || break
                sleep 0.2
            done
        fi
    fi
    rm -f "$pgid_file"
}

check_token_mode() {  # the token file must be readable by its owner alone
    [[ -z ${RAY_AUTH_TOKEN:-} ]] || return 0
    local file=${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token} mode
    [[ -e $file ]] || return 0
    mode=$(stat -L -c %a "$file") || return 0
    if (( 8#$mode & 8#077 )); then
        say "refusing to start Ray: the cluster token $file is readable by group or others (mode $mode); chmod 600 $file"
        exit 2
    fi
}

if ((!stop_only)); then  # refuse before stopping anything
    if [[ ${1:-} != ray || ${2:-} != start ]]; then
        say "usage: ray_node.sh ray start [options] | ray_node.sh --stop [--temp-dir=DIR]"
        exit 2
    fi
    check_token_mode
fi
stop_recorded_ray
if ((stop_only)); then
    exit 0
fi

raise_open_files_limit
mkdir -p "$temp_dir"
# setsid: `ray start` leads a new session and process group; the daemons it spawns stay in it after
# it returns. $$ of the shell that execs `ray start` is that group's id. -w: wait for its exit status.
exec setsid -w sh -c 'echo $$ > "$0" && exec "$@"' "$pgid_file" "$@"
