#!/usr/bin/env bash
# The node of the loopback control plane: containerd + runc and a kubelet 1.20 named
# `localhost`, registered with the API server that up.sh started in DIR.
#
# Usage:
#   node.sh up DIR              start the node (up.sh calls this with INGRESS_TAP_CP_NODE=1)
#   node.sh down DIR            stop it and remove every trace (down.sh calls this)
#   node.sh import DIR ARCHIVE  import an OCI image archive into the node's containerd
#   node.sh ctr DIR ARGS...     run ctr (namespace k8s.io) against the node's containerd
#   node.sh hold DIR            (internal) the namespace holder that `up` starts
#
# Isolation. containerd and the kubelet run in a private mount namespace held by one
# `sleep` process (the holder). In it, the paths they hard-code are bind mounts of
# directories under DIR/node/root, so nothing they write lands in the machine's /var or /run:
#   /var/lib/kubelet /var/lib/containerd /run/containerd /var/lib/cni /etc/cni/net.d
#   /var/log/pods /var/log/containers /run/nodeagent
# Every mount containerd, runc and the kubelet make (overlay roots, volumes, network
# namespaces) is made in that namespace and disappears with it. /run/nodeagent is where
# pods' hostPath volumes under /var/run/nodeagent (Felix's Policy Sync sockets) come from:
# DIR/node/root/nodeagent on the machine.
#
# Pod network: the CNI bridge plugin on a bridge `itap0` with host-local addresses from
# 10.217.0.0/24 (gateway 10.217.0.1 on the bridge), no masquerading, no iptables rules. The
# machine reaches pod addresses through the bridge; pods reach nothing but each other and the
# machine's bridge address.
#
# What changes on the machine while the node runs, and is undone by `down`: the bridge; the
# sysctls the kubelet sets (vm.overcommit_memory, vm.panic_on_oom, kernel.panic,
# kernel.panic_on_oops, kernel.keys.root_maxkeys, kernel.keys.root_maxbytes) and the one the
# bridge plugin sets (net.ipv4.ip_forward), recorded before start and restored; the
# `kubepods` cgroups the kubelet creates in every cgroup hierarchy; the empty mount points
# created for the bind mounts (removed again when they did not exist before).
#
# One node per machine at a time (the bridge, the subnet and the kubepods cgroups are
# machine-wide): `up` waits for /run/lock/ingress-tap-node.lock, which the holder keeps.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly TIMEOUT="${INGRESS_TAP_CP_TIMEOUT:-120}"
readonly GRACE_SECONDS="${INGRESS_TAP_CP_STOP_GRACE:-15}"
readonly LOCK_FILE=/run/lock/ingress-tap-node.lock
readonly BRIDGE=itap0
readonly SUBNET=10.217.0.0/24
readonly GATEWAY=10.217.0.1
readonly NODE_NAME=localhost
readonly CONTAINERD_SOCKET=/run/containerd/containerd.sock
# Private paths: where each lives under DIR/node/root.
readonly BIND_TARGETS=(
    /var/lib/kubelet /var/lib/containerd /run/containerd /var/lib/cni /etc/cni/net.d
    /var/log/pods /var/log/containers /run/nodeagent
)
readonly SYSCTLS=(
    vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
)
readonly RUNTIME_PACKAGES=(containerd runc containernetworking-plugins iproute2 util-linux)

# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

[[ $# -ge 2 ]] || die "usage: node.sh up|down|import|ctr DIR ..."
readonly COMMAND=$1
[[ -d $2 ]] || die "$2 is not a directory"
DIR="$(cd "$2" && pwd)"
readonly DIR NODE="$(cd "$2" && pwd)/node"
shift 2

bind_source() {
    local target=$1
    printf '%s/root%s' "$NODE" "$target"
}

holder_pid() {
    local pid
    pid=$(awk '$1 == "holder" { print $2 }' "$NODE/pids" 2>/dev/null | tail -n 1)
    [[ -n $pid ]] && is_running holder "$pid" && printf '%s' "$pid"
}

in_namespace() {
    local holder
    holder=$(holder_pid) || die "the node of $DIR is not running (no holder process)"
    nsenter --target "$holder" --mount -- "$@"
}

ctr_k8s() {
    in_namespace ctr --address "$CONTAINERD_SOCKET" --namespace k8s.io "$@"
}

# --- up -----------------------------------------------------------------------------------

ensure_packages() {
    find_missing_packages "$@"
    [[ ${#MISSING[@]} -eq 0 ]] && return 0
    log "installing ${MISSING[*]}"
    install_packages --update-on-failure "${MISSING[@]}"
}

# Starts a process inside the node's mount namespace, output to DIR/NAME.log.
start_inside() {
    local name=$1 holder
    shift
    holder=$(holder_pid) || die "the node's namespace holder is gone"
    nsenter --target "$holder" --mount -- "$@" </dev/null >"$DIR/$name.log" 2>&1 &
    local pid=$!
    printf '%s %s\n' "$name" "$pid" >>"$NODE/pids"
    printf '%s' "$pid"
}

write_containerd_config() {
    local sandbox_image=$1
    cat >"$NODE/containerd.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
# The pods' OOM scores stay as they are: this machine drops CAP_SYS_RESOURCE, so runc cannot
# lower any process's oom_score_adj, which it would try for the sandbox otherwise.
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$CONTAINERD_SOCKET"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox_image"
  restrict_oom_score_adj = true
  disable_apparmor = true
  # Network namespaces under /run/containerd: mounted in the private namespace only.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
EOF
}

write_cni_config() {
    cat >"$(bind_source /etc/cni/net.d)/10-ingress-tap.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "ingress-tap-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$SUBNET", "gateway": "$GATEWAY"}]],
        "dataDir": "/var/lib/cni/networks"
      }
    }
  ]
}
EOF
}

write_kubelet_config() {
    local port=$1 healthz_port=$2
    local pki="$DIR/pki"
    cat >"$NODE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
# Only the API server (its client certificate, signed by the control plane's CA) talks to
# the kubelet, and it is an administrator.
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: $pki/ca.crt
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
failSwapOn: false
# No iptables rules on this machine: nothing here needs the kubelet's KUBE-* chains.
makeIPTablesUtilChains: false
volumePluginDir: $NODE/volume-plugins
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
# A test machine's disk is often fuller than a cluster's eviction defaults allow.
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
nodeStatusUpdateFrequency: 10s
# The default sync loop period; probes and restarts are driven by PLEG events anyway.
syncFrequency: 10s
fileCheckFrequency: 20s
EOF
}

record_sysctls() {
    local name value
    : >"$NODE/sysctls.saved"
    for name in "${SYSCTLS[@]}"; do
        value=$(sysctl -n "$name" 2>/dev/null) || continue
        printf '%s=%s\n' "$name" "$value" >>"$NODE/sysctls.saved"
    done
}

node_up() {
    [[ -f $DIR/pki/ca.crt && -f $DIR/pki/kubelet.crt && -f $DIR/node.kubeconfig ]] ||
        die "$DIR has no node credentials: start the node through up.sh with INGRESS_TAP_CP_NODE=1"
    [[ ! -s $NODE/pids ]] || die "$NODE/pids exists: a node may still run there (node.sh down $DIR first)"
    [[ $(id -u) -eq 0 ]] || die "the node needs root (mount namespace, cgroups, bridge)"
    ensure_packages "${RUNTIME_PACKAGES[@]}"
    local tool
    for tool in containerd containerd-shim-runc-v2 runc ctr unshare nsenter ip sysctl; do
        command -v "$tool" >/dev/null || die "$tool not found"
    done
    [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
        die "CNI plugins missing in /usr/lib/cni (containernetworking-plugins)"
    local bin_dir
    bin_dir=$(awk -F= '$1 == "KUBE_BIN_DIR" { print $2 }' "$DIR/env" 2>/dev/null)
    [[ -n $bin_dir ]] || bin_dir=$("$SCRIPT_DIR/build.sh")
    [[ -x $bin_dir/kubelet && -x $bin_dir/pause ]] || die "kubelet or pause missing in $bin_dir"

    mkdir -p "$NODE" "$NODE/volume-plugins"
    : >"$NODE/pids"
    : >"$NODE/created-mountpoints"
    : >"$NODE/created-cgroups"

    # The holder: in a new private mount namespace, takes the machine-wide node lock, makes
    # the bind mounts, says so through a file, and then only keeps the namespace (and the
    # lock) alive until down ends it.
    log "waiting for the node lock $LOCK_FILE and entering a private mount namespace"
    nohup unshare --mount --propagation private -- "$SCRIPT_DIR/node.sh" hold "$DIR" \
        </dev/null >"$DIR/node-holder.log" 2>&1 &
    local holder=$!
    printf 'holder %s\n' "$holder" >>"$NODE/pids"
    local deadline=$((SECONDS + TIMEOUT + 10))
    until [[ -e $NODE/namespace-ready ]]; do
        kill -0 "$holder" 2>/dev/null || {
            cat "$DIR/node-holder.log" >&2
            die "the namespace holder exited"
        }
        ((SECONDS < deadline)) || die "the namespace holder was not ready within ${TIMEOUT}s"
        sleep 0.2
    done
    # The namespace is identified by its inode: down.sh finds stray processes by it.
    readlink "/proc/$holder/ns/mnt" >"$NODE/namespace"
    # down deletes the bridge and every process in the kubepods cgroups: with the lock held,
    # existing ones belong to something else (or to a node nobody cleaned up), and are left
    # alone: the holder goes, and down will find nothing of this node to stop.
    local foreign=""
    ip link show "$BRIDGE" >/dev/null 2>&1 && foreign="a network interface $BRIDGE"
    [[ -n $(kubepods_cgroups) ]] && foreign="kubepods cgroups ($(kubepods_cgroups | tr '\n' ' '))"
    if [[ -n $foreign ]]; then
        stop_process holder "$holder" || true
        local target
        while IFS= read -r target; do
            [[ -n $target && -d $target ]] && rmdir "$target"
        done < <(tac "$NODE/created-mountpoints")
        rm -f "$NODE/pids"
        die "$foreign exist(s) already: another kubelet or node on this machine, or one not cleaned up"
    fi

    record_sysctls
    write_cni_config

    # --- containerd ---
    local pause_line sandbox_image pause_archive
    pause_line=$(KUBE_BIN_DIR=$bin_dir "$SCRIPT_DIR/images.sh" pause "$NODE/images")
    sandbox_image=${pause_line%% *}
    pause_archive=${pause_line#* }
    write_containerd_config "$sandbox_image"
    log "starting containerd"
    local containerd_pid
    containerd_pid=$(start_inside containerd containerd --config "$NODE/containerd.toml")
    wait_until "containerd's socket" containerd "$containerd_pid" \
        "nsenter --target $holder --mount -- ctr --address $CONTAINERD_SOCKET version"
    ctr_k8s images import "$pause_archive" >/dev/null ||
        die "importing the pause image into containerd failed"

    # --- kubelet ---
    local kubelet_port healthz_port kubelet_pid
    kubelet_port=$(free_port)
    healthz_port=$(free_port)
    write_kubelet_config "$kubelet_port" "$healthz_port"
    log "starting the kubelet (node $NODE_NAME, port 127.0.0.1:$kubelet_port)"
    # No --node-ip: the kubelet refuses a loopback one. The API server reaches the kubelet
    # through the node's Hostname address, localhost.
    kubelet_pid=$(start_inside kubelet "$bin_dir/kubelet" \
        --config="$NODE/kubelet.yaml" \
        --kubeconfig="$DIR/node.kubeconfig" \
        --hostname-override="$NODE_NAME" \
        --container-runtime=remote \
        --container-runtime-endpoint="unix://$CONTAINERD_SOCKET" \
        --runtime-request-timeout=5m \
        --cert-dir="$NODE/kubelet-pki" \
        --v=1)
    wait_until "the kubelet's /healthz" kubelet "$kubelet_pid" \
        "curl -sf --max-time 2 http://127.0.0.1:$healthz_port/healthz | grep -qx ok"
    printf 'KUBELET_PORT=%s\nNODE_NAME=%s\nNODE_DIR=%s\nFELIX_HOST_DIR=%s\n' \
        "$kubelet_port" "$NODE_NAME" "$NODE" "$(bind_source /run/nodeagent)" >"$NODE/env"
}

# Runs as the holder, inside the new mount namespace.
node_hold() {
    exec 8>"$LOCK_FILE"
    flock -w "$TIMEOUT" 8 || die "node lock $LOCK_FILE not acquired within ${TIMEOUT}s"
    # Only with the lock held: another node's down removes the mount points it created.
    local target path missing
    for target in "${BIND_TARGETS[@]}"; do
        mkdir -p "$(bind_source "$target")"
        # Every directory created on the machine is recorded, parents first, and removed
        # again (children first) by down.
        missing=()
        path=$target
        while [[ ! -e $path ]]; do
            missing=("$path" "${missing[@]}")
            path=$(dirname "$path")
        done
        for path in "${missing[@]}"; do
            mkdir "$path"
            printf '%s\n' "$path" >>"$NODE/created-mountpoints"
        done
        mount --bind "$(bind_source "$target")" "$target"
    done
    chmod 755 "$NODE" "$NODE/root" "$(bind_source /run/nodeagent)"
    # containerd puts containers it runs outside the kubelet (ctr run) under /k8s.io.
    local hierarchy
    for hierarchy in /sys/fs/cgroup/*/; do
        [[ -d ${hierarchy}k8s.io ]] || printf '%s\n' "${hierarchy}k8s.io" >>"$NODE/created-cgroups"
    done
    touch "$NODE/namespace-ready"
    exec -a ingress-tap-node-holder sleep infinity
}

# --- down ---------------------------------------------------------------------------------

recorded_pid() {
    awk -v name="$1" '$1 == name { print $2 }' "$NODE/pids" 2>/dev/null | tail -n 1
}

kubepods_cgroups() {
    local hierarchy cgroup
    for hierarchy in /sys/fs/cgroup/*/; do
        [[ -d ${hierarchy}kubepods ]] && printf '%s\n' "${hierarchy}kubepods"
    done
    [[ -f /sys/fs/cgroup/cgroup.controllers && -d /sys/fs/cgroup/kubepods ]] &&
        printf '%s\n' /sys/fs/cgroup/kubepods
    if [[ -f $NODE/created-cgroups ]]; then
        while IFS= read -r cgroup; do
            [[ -d $cgroup ]] && printf '%s\n' "$cgroup"
        done <"$NODE/created-cgroups"
    fi
    return 0
}

# Every process in the kubelet's cgroups: the pods' containers.
pod_processes() {
    local root
    while read -r root; do
        find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null
    done < <(kubepods_cgroups) | sort -un
}

# Processes in the node's mount namespace other than the holder (containerd, the kubelet,
# the shims): identified by the namespace inode recorded at start.
namespace_processes() {
    local namespace holder pid
    namespace=$(cat "$NODE/namespace" 2>/dev/null) || return 0
    [[ -n $namespace ]] || return 0
    holder=$(recorded_pid holder)
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        [[ $pid != "$holder" && $pid != "$$" ]] || continue
        [[ $(readlink "/proc/$pid/ns/mnt" 2>/dev/null) == "$namespace" ]] && printf '%s\n' "$pid"
    done
    return 0
}

kill_all() {
    local what=$1 lister=$2 deadline pids
    deadline=$((SECONDS + GRACE_SECONDS))
    while pids=$($lister) && [[ -n $pids ]]; do
        if ((SECONDS >= deadline)); then
            log "could not stop every $what: $(tr '\n' ' ' <<<"$pids")"
            return 1
        fi
        # shellcheck disable=SC2086 # one PID per word
        kill -KILL $pids 2>/dev/null || true
        sleep 0.2
    done
}

remove_cgroups() {
    local root deadline=$((SECONDS + GRACE_SECONDS)) left
    while true; do
        left=0
        while read -r root; do
            # Deepest first: a cgroup directory can only go once its children have.
            find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || left=1
            [[ -d $root ]] && left=1
        done < <(kubepods_cgroups)
        [[ $left -eq 0 ]] && return 0
        ((SECONDS < deadline)) || {
            log "could not remove the kubepods cgroups: $(kubepods_cgroups | tr '\n' ' ')"
            return 1
        }
        sleep 0.2
    done
}

node_down() {
    [[ -f $NODE/pids ]] || return 0
    local status=0 pid
    # The kubelet first, so that it restarts nothing; then the pods' processes; then
    # containerd and the shims, which only wait for their containers.
    pid=$(recorded_pid kubelet)
    [[ -z $pid ]] || stop_process kubelet "$pid" || status=1
    kill_all "pod process" pod_processes || status=1
    pid=$(recorded_pid containerd)
    [[ -z $pid ]] || stop_process containerd "$pid" || status=1
    kill_all "process of the node's namespace" namespace_processes || status=1
    remove_cgroups || status=1
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link delete "$BRIDGE" || status=1
    fi
    if [[ -f $NODE/sysctls.saved ]]; then
        local line
        while IFS= read -r line; do
            [[ $(sysctl -n "${line%%=*}" 2>/dev/null) == "${line#*=}" ]] && continue
            sysctl -q -w "$line" >/dev/null || {
                log "could not restore $line"
                status=1
            }
        done <"$NODE/sysctls.saved"
    fi
    # Ending the holder ends the namespace: every mount made in it goes with it.
    pid=$(recorded_pid holder)
    [[ -z $pid ]] || stop_process holder "$pid" || status=1
    if [[ -f $NODE/created-mountpoints ]]; then
        local target
        while IFS= read -r target; do
            [[ -z $target || ! -d $target ]] && continue
            rmdir "$target" || status=1
        done < <(tac "$NODE/created-mountpoints")
    fi
    if [[ $status -eq 0 ]]; then
        rm -rf "$NODE/root" "$NODE/images"
        rm -f "$NODE/pids"
    fi
    return "$status"
}

case $COMMAND in
up) node_up ;;
hold) node_hold ;;
down) node_down ;;
import)
    [[ $# -eq 1 && -f $1 ]] || die "usage: node.sh import DIR ARCHIVE"
    # The path is the machine's; the namespace shares everything but the bind mounts.
    # Absolute: nsenter does not keep the working directory.
    ctr_k8s images import "$(realpath "$1")" >&2
    ;;
ctr) ctr_k8s "$@" ;;
*) die "unknown command $COMMAND (up, down, import, ctr)" ;;
esac
