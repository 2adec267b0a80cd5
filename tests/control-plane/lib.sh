# Functions shared by the control-plane scripts; sourced, never run:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Messages are prefixed with the name of the script that sources this file.
# shellcheck shell=bash

LOG_PREFIX="${BASH_SOURCE[1]##*/}"
readonly LOG_PREFIX

log() { printf '%s: %s\n' "$LOG_PREFIX" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- processes ----------------------------------------------------------------------------

# True while PID runs and still is the recorded process NAME: its command line names it (the
# node's namespace holder, by the name it runs under or the command that started it). A
# zombie counts as gone: it has released its ports and files and only waits for a parent that
# may never reap it.
is_running() {
    local name=$1 pid=$2 state
    [[ -r /proc/$pid/cmdline ]] || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z ]] || return 1
    case $name in
    holder) tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qE -- "ingress-tap-node-holder|node.sh hold" ;;
    *) tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$name" ;;
    esac
}

# Stops process NAME with PID, if it still is that process: SIGTERM, then SIGKILL once
# GRACE_SECONDS have passed. Fails only when it survives SIGKILL.
stop_process() {
    local name=$1 pid=$2
    # The watchdog runs down.sh in its own process once its owner is gone.
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

# Polls CHECK (a shell command) until it succeeds, the process NAME with PID dies, or TIMEOUT
# seconds pass; on failure prints the tail of DIR/NAME.log and dies.
wait_until() {
    local what=$1 name=$2 pid=$3 check=$4
    local deadline=$((SECONDS + TIMEOUT))
    until eval "$check" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$DIR/$name.log" >&2 || true
            die "$name exited before $what"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$DIR/$name.log" >&2 || true
            die "timed out after ${TIMEOUT}s waiting for $what"
        fi
        sleep 0.5
    done
}

# --- ports --------------------------------------------------------------------------------

# Local ports of every TCP socket on the machine in any state, read from the kernel so that no
# connection has to be attempted. A port chosen here can still be taken by someone else before
# the process binds it; the process then fails to start and its log says so.
ports_in_use() {
    awk 'FNR > 1 { split($2, local_address, ":"); print strtonum("0x" local_address[2]) }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -un
}

# Prints a free port on 127.0.0.1, never one this script has chosen before.
CHOSEN_PORTS=" "
free_port() {
    local in_use port
    in_use=" $(ports_in_use | tr '\n' ' ') "
    for _ in $(seq 1 200); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        if [[ $in_use != *" $port "* && $CHOSEN_PORTS != *" $port "* ]]; then
            CHOSEN_PORTS+="$port "
            printf '%s' "$port"
            return 0
        fi
    done
    die "no free port found on 127.0.0.1"
}

# --- Debian packages ----------------------------------------------------------------------

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# Sets MISSING to those of PACKAGES that are not installed; dies when there are any and this
# is not root, who alone could install them.
find_missing_packages() {
    MISSING=()
    local package
    for package in "$@"; do
        is_installed "$package" || MISSING+=("$package")
    done
    [[ ${#MISSING[@]} -eq 0 || $(id -u) -eq 0 ]] ||
        die "missing Debian packages (${MISSING[*]}) and not root to install them"
}

# Installs PACKAGES with apt-get; on failure prints the tail of apt-get's output and dies.
# With --update-on-failure, a failed install is retried once after refreshing the package
# lists. A package's maintainer scripts may start a system daemon (etcd-server does through
# its init script, containerd too); the tests run their own, so a policy-rc.d that denies
# service starts is put in place for the install when the machine has none.
install_packages() {
    local update_on_failure=0
    if [[ $1 == --update-on-failure ]]; then
        update_on_failure=1
        shift
    fi
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    local status=0 install_log
    install_log=$(mktemp)
    apt_get_install "$install_log" "$@" || status=$?
    if [[ $status -ne 0 && $update_on_failure -eq 1 ]]; then
        status=0
        apt-get -o DPkg::Lock::Timeout=600 update -qq >>"$install_log" 2>&1 || true
        apt_get_install "$install_log" "$@" || status=$?
    fi
    [[ $created_policy -eq 1 ]] && rm -f "$policy"
    if [[ $status -ne 0 ]]; then
        tail -n 30 "$install_log" >&2
        rm -f "$install_log"
        die "apt-get install $* failed (exit $status)"
    fi
    rm -f "$install_log"
}

# apt-get install of PACKAGES, its output appended to INSTALL_LOG.
apt_get_install() {
    local install_log=$1
    shift
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "$@" >>"$install_log" 2>&1
}
