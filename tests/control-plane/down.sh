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

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 1 ]] || {
    log "usage: down.sh DIR"
    exit 2
}
readonly PIDS_FILE="$1/pids"
[[ -f $PIDS_FILE || -f $1/node/pids ]] || exit 0

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
    stop_process "$name" "$pid" || status=1
done < <(tac "$PIDS_FILE" 2>/dev/null)

[[ $status -eq 0 ]] && rm -f "$PIDS_FILE"
exit "$status"
