#!/usr/bin/env bash
# Starts a real Kubernetes 1.20 control plane on 127.0.0.1: etcd, kube-apiserver and
# kube-controller-manager, each on free loopback ports, with state, logs and credentials in DIR.
#
# Usage: up.sh DIR
#
# On success DIR holds:
#   kubeconfig   admin access (https://127.0.0.1:PORT, embedded CA, bearer token)
#   env          KUBECONFIG=, APISERVER_URL=, TOKEN=, CA_FILE=, ETCD_URL= (shell-sourceable)
#   pids         "name pid" per started process, consumed by down.sh
#   *.log        one log per process
# and the API server answers /readyz, the controller-manager answers /healthz, the default
# service account of namespace default has its token (so pods are admitted), and the
# namespaces that exist have the kubernetes.io/metadata.name label newer API servers set.
#
# Without a node there is no scheduler and no kubelet: pods are admitted and stored but never
# run. With INGRESS_TAP_CP_NODE=1, kube-scheduler and a node (node.sh: containerd, runc and a
# kubelet named localhost) start as well, and pods run; DIR/env then also holds NODE_NAME,
# KUBELET_PORT, NODE_DIR and FELIX_HOST_DIR.
#
# Environment:
#   INGRESS_TAP_CP_OWNER_PID   when set, a watchdog stops the control plane as soon as that
#                              process is gone, so a killed test run leaves nothing behind
#   INGRESS_TAP_CP_NODE        1: also start kube-scheduler and the node (node.sh)
#   INGRESS_TAP_CP_TIMEOUT     seconds allowed for each readiness wait (default 120)
#   INGRESS_TAP_CACHE          passed on to build.sh
#
# On failure everything already started is stopped again and the exit status is non-zero.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly TIMEOUT="${INGRESS_TAP_CP_TIMEOUT:-120}"
readonly WITH_NODE="${INGRESS_TAP_CP_NODE:-0}"

# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

[[ $# -eq 1 ]] || die "usage: up.sh DIR"
[[ $WITH_NODE == 0 || $WITH_NODE == 1 ]] || die "INGRESS_TAP_CP_NODE must be 0 or 1"
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
readonly DIR
[[ ! -s $DIR/pids ]] || die "$DIR/pids exists: a control plane may still run there (down.sh $DIR first)"

STARTED_OK=0
cleanup_on_failure() {
    if [[ $STARTED_OK -eq 0 && -s $DIR/pids ]]; then
        log "stopping what was started"
        "$SCRIPT_DIR/down.sh" "$DIR" || true
    fi
}
trap cleanup_on_failure EXIT

BIN_DIR="$("$SCRIPT_DIR/build.sh")" || die "kube-apiserver/kube-controller-manager are not available (see build.sh output above)"
command -v etcd >/dev/null || die "etcd not found although build.sh ensures etcd-server"

start() {
    local name=$1
    shift
    "$@" </dev/null >"$DIR/$name.log" 2>&1 &
    local pid=$!
    printf '%s %s\n' "$name" "$pid" >>"$DIR/pids"
    printf '%s' "$pid"
}

# --- credentials --------------------------------------------------------------------------
log "generating CA, serving certificate, service account keys and tokens in $DIR"
PKI="$DIR/pki"
mkdir -p "$PKI"
openssl_quiet() { openssl "$@" 2>>"$DIR/openssl.log" || die "openssl $1 failed (see $DIR/openssl.log)"; }
openssl_quiet req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=ingress-tap-control-plane-ca" -keyout "$PKI/ca.key" -out "$PKI/ca.crt"
openssl_quiet req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=kube-apiserver" -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr"
cat >"$PKI/apiserver.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc
EOF
openssl_quiet x509 -req -days 30 -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt"
# Client certificate the API server presents to the kubelet (logs, exec), and the kubelet's
# serving certificate, which the API server verifies for the node's address, localhost.
issue() {
    local name=$1 subject=$2 extensions=$3
    openssl_quiet req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "$subject" -keyout "$PKI/$name.key" -out "$PKI/$name.csr"
    printf '%s\n' "$extensions" >"$PKI/$name.ext"
    openssl_quiet x509 -req -days 30 -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
        -CAcreateserial -extfile "$PKI/$name.ext" -out "$PKI/$name.crt"
}
issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" \
    "basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth"
issue kubelet "/CN=localhost" \
    "basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost"
openssl_quiet genrsa -out "$PKI/sa.key" 2048
openssl_quiet rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"

ADMIN_TOKEN="$(openssl rand -hex 24)"
CONTROLLER_MANAGER_TOKEN="$(openssl rand -hex 24)"
SCHEDULER_TOKEN="$(openssl rand -hex 24)"
NODE_TOKEN="$(openssl rand -hex 24)"
# token,user,uid,"groups" — the controller-manager and scheduler users are the ones RBAC's
# bootstrap policy binds; the node's user is what the Node authorizer expects of node localhost.
cat >"$PKI/tokens.csv" <<EOF
$ADMIN_TOKEN,admin,admin,"system:masters"
$CONTROLLER_MANAGER_TOKEN,system:kube-controller-manager,system:kube-controller-manager
$SCHEDULER_TOKEN,system:kube-scheduler,system:kube-scheduler
$NODE_TOKEN,system:node:localhost,system:node:localhost,"system:nodes"
EOF
chmod 600 "$PKI"/*.key "$PKI/tokens.csv"

ETCD_CLIENT_PORT="$(free_port)"
ETCD_PEER_PORT="$(free_port)"
APISERVER_PORT="$(free_port)"
CONTROLLER_MANAGER_PORT="$(free_port)"
SCHEDULER_PORT="$(free_port)"
readonly ETCD_URL="http://127.0.0.1:$ETCD_CLIENT_PORT"
readonly APISERVER_URL="https://127.0.0.1:$APISERVER_PORT"

write_kubeconfig() {
    local path=$1 user=$2 token=$3
    cat >"$path" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ingress-tap
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    token: $token
contexts:
- name: ingress-tap
  context:
    cluster: ingress-tap
    user: $user
current-context: ingress-tap
EOF
    chmod 600 "$path"
}
write_kubeconfig "$DIR/kubeconfig" admin "$ADMIN_TOKEN"
write_kubeconfig "$DIR/controller-manager.kubeconfig" system:kube-controller-manager "$CONTROLLER_MANAGER_TOKEN"
write_kubeconfig "$DIR/scheduler.kubeconfig" system:kube-scheduler "$SCHEDULER_TOKEN"
write_kubeconfig "$DIR/node.kubeconfig" system:node:localhost "$NODE_TOKEN"

# --- etcd ---------------------------------------------------------------------------------
log "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT"
ETCD_PID="$(start etcd etcd \
    --name control-plane \
    --data-dir "$DIR/etcd" \
    --listen-client-urls "$ETCD_URL" \
    --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "control-plane=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new)"
wait_until "etcd health" etcd "$ETCD_PID" \
    "curl -sf --max-time 2 '$ETCD_URL/health' | grep -q '\"health\":\"true\"'"

# --- kube-apiserver -----------------------------------------------------------------------
log "starting kube-apiserver on $APISERVER_URL"
APISERVER_PID="$(start kube-apiserver "$BIN_DIR/kube-apiserver" \
    --etcd-servers="$ETCD_URL" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --insecure-port=0 \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --token-auth-file="$PKI/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=Hostname \
    --enable-aggregator-routing=true \
    --enable-admission-plugins=NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --cert-dir="$DIR/apiserver-certs")"

api() {
    curl -sf --max-time 5 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" "$@"
}
wait_until "kube-apiserver /readyz" kube-apiserver "$APISERVER_PID" \
    "api '$APISERVER_URL/readyz' | grep -qx ok"

# --- kube-controller-manager --------------------------------------------------------------
CONTROLLERS=deployment,replicaset,daemonset,job,serviceaccount,serviceaccount-token,namespace
# With a node: its lifecycle (the not-ready taint the kubelet registers with is lifted once
# the node is Ready), Endpoints for Services (the API server reaches a webhook Service through
# them), garbage collection of what a deleted Deployment owned, and pod GC.
[[ $WITH_NODE == 0 ]] || CONTROLLERS+=,nodelifecycle,endpoint,garbagecollector,podgc
log "starting kube-controller-manager (secure port 127.0.0.1:$CONTROLLER_MANAGER_PORT)"
CONTROLLER_MANAGER_PID="$(start kube-controller-manager "$BIN_DIR/kube-controller-manager" \
    --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$CONTROLLER_MANAGER_PORT" \
    --port=0 \
    --cert-dir="$DIR/controller-manager-certs" \
    --controllers="$CONTROLLERS" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --leader-elect=false)"
wait_until "kube-controller-manager /healthz" kube-controller-manager "$CONTROLLER_MANAGER_PID" \
    "curl -skf --max-time 2 'https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz' | grep -qx ok"

# The ServiceAccount admission plugin rejects pods until the namespace's default service
# account has a token; waiting here spares every caller that race.
wait_until "a token for serviceaccount default/default" kube-controller-manager "$CONTROLLER_MANAGER_PID" \
    "api '$APISERVER_URL/api/v1/namespaces/default/serviceaccounts/default' | grep -q '\"secrets\"'"

# --- kube-scheduler and the node ----------------------------------------------------------
node_ready() {
    api "$APISERVER_URL/api/v1/nodes/localhost" | python3 -c '
import json, sys
node = json.load(sys.stdin)
ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
tainted = any(t["effect"] in ("NoSchedule", "NoExecute") for t in node["spec"].get("taints", []))
sys.exit(0 if ready and not tainted else 1)'
}
if [[ $WITH_NODE == 1 ]]; then
    log "starting kube-scheduler (secure port 127.0.0.1:$SCHEDULER_PORT)"
    SCHEDULER_PID="$(start kube-scheduler "$BIN_DIR/kube-scheduler" \
        --kubeconfig="$DIR/scheduler.kubeconfig" \
        --bind-address=127.0.0.1 \
        --secure-port="$SCHEDULER_PORT" \
        --port=0 \
        --cert-dir="$DIR/scheduler-certs" \
        --leader-elect=false)"
    wait_until "kube-scheduler /healthz" kube-scheduler "$SCHEDULER_PID" \
        "curl -skf --max-time 2 'https://127.0.0.1:$SCHEDULER_PORT/healthz' | grep -qx ok"
    # node.sh records its processes in DIR/node/pids; down.sh stops them before the rest.
    printf 'KUBE_BIN_DIR=%s\n' "$BIN_DIR" >"$DIR/env"
    "$SCRIPT_DIR/node.sh" up "$DIR" || die "the node did not start (see node.sh output above)"
    wait_until "node localhost Ready and without taints" kube-apiserver "$APISERVER_PID" node_ready
fi

# --- namespace labels ---------------------------------------------------------------------
# Kubernetes 1.21+ labels every namespace with kubernetes.io/metadata.name; webhook
# namespaceSelectors rely on it, so the 1.20 server gets it added by hand.
for namespace in default kube-system kube-public kube-node-lease; do
    wait_until "namespace $namespace" kube-apiserver "$APISERVER_PID" \
        "api '$APISERVER_URL/api/v1/namespaces/$namespace'"
    "$SCRIPT_DIR/namespace.sh" "$DIR" "$namespace" >/dev/null
done

# --- hand-over ----------------------------------------------------------------------------
cat >"$DIR/env" <<EOF
KUBECONFIG=$DIR/kubeconfig
APISERVER_URL=$APISERVER_URL
TOKEN=$ADMIN_TOKEN
CA_FILE=$PKI/ca.crt
ETCD_URL=$ETCD_URL
KUBE_BIN_DIR=$BIN_DIR
EOF
[[ $WITH_NODE == 0 ]] || cat "$DIR/node/env" >>"$DIR/env"

if [[ -n ${INGRESS_TAP_CP_OWNER_PID:-} ]]; then
    owner=$INGRESS_TAP_CP_OWNER_PID
    kill -0 "$owner" 2>/dev/null || die "INGRESS_TAP_CP_OWNER_PID $owner is not a running process"
    # Polling is the only portable way to notice that an unrelated process has gone.
    # shellcheck disable=SC2016 # the inner script expands its own positional parameters
    nohup bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 2; done; exec "$2" "$3"' \
        control-plane-watchdog "$owner" "$SCRIPT_DIR/down.sh" "$DIR" \
        </dev/null >"$DIR/watchdog.log" 2>&1 &
    printf 'watchdog %s\n' "$!" >>"$DIR/pids"
fi

STARTED_OK=1
log "control plane ready at $APISERVER_URL (KUBECONFIG=$DIR/kubeconfig)"
