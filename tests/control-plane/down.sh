#!/usr/bin/env bash
# Stops a control plane started by up.sh: every process listed in DIR/pids, newest first,
# by PID only. Each gets SIGTERM, then SIGKILL if it has not exited within the grace period.
#
# Usage: down.sh DIR
#
# Safe to run twice and on a partly started control plane. A PID whose command line no
# longer names the recorded process (it exited and the PID was reused) is left alone.
set -uo pipefail

readonly GRACE_SECONDS="${INGRESS_TAP_CP_STOP_GRACE:-15}"

log() { printf 'down.sh: %s\n' "$*" >&2; }

[[ $# -eq 1 ]] || {
    log "usage: down.sh DIR"
    exit 2
}
readonly PIDS_FILE="$1/pids"
[[ -f $PIDS_FILE || -f $1/node/pids ]] || exit 0

# True while PID runs and still is the recorded process. A zombie counts as gone: it has
# released its ports and files and only waits for a parent that may never reap it.
is_running() {
    local name=$1 pid=$2 state
    [[ -r /proc/$pid/cmdline ]] || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$name"
}

stop() {
    local name=$1 pid=$2
    # The watchdog runs this script in its own process once its owner is gone.
    [[ $pid != "$$" ]] || return 0
    is_running "$name" "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + GRACE_SECONDS))
    while is_running "$name" "$pid"; do
        if ((SECONDS >= deadline)); then
            log "$name ($pid) ignored SIGTERM for ${GRACE_SECONDS}s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            while is_running "$name" "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
            is_running "$name" "$pid" && {
                log "$name ($pid) survived SIGKILL"
                return 1
            }
            return 0
        fi
        sleep 0.2
    done
}

status=0
# The node first (kubelet, pods, containerd, its namespace, bridge, sysctls, cgroups): it
# undoes more than stopping processes, and its kubelet would only complain about a vanished
# API server.
if [[ -f $1/node/pids ]]; then
    "$(dirname "${BASH_SOURCE[0]}")/node.sh" down "$1" || status=1
fi
# Newest first: the watchdog, then the controller-manager, the API server, and etcd last.
while read -r name pid; do
    [[ -n ${name:-} && ${pid:-} =~ ^[0-9]+$ ]] || continue
    stop "$name" "$pid" || status=1
done < <(tac "$PIDS_FILE" 2>/dev/null)

[[ $status -eq 0 ]] && rm -f "$PIDS_FILE"
exit "$status"
