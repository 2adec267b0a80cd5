#!/usr/bin/env bash
# Creates namespace NAME in the control plane of DIR (if it does not exist yet) and gives it
# the kubernetes.io/metadata.name label that API servers from 1.21 on set by themselves.
# Tests that need a namespace should create it through this script (or set the label
# themselves) so that webhook namespaceSelectors behave as on a current cluster.
#
# Usage: namespace.sh DIR NAME
set -euo pipefail

log() { printf 'namespace.sh: %s\n' "$*" >&2; }
[[ $# -eq 2 ]] || {
    log "usage: namespace.sh DIR NAME"
    exit 2
}
readonly DIR=$1 NAME=$2
[[ $NAME =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ && ${#NAME} -le 63 ]] || {
    log "not a valid namespace name: $NAME"
    exit 2
}
[[ -f $DIR/kubeconfig && -f $DIR/pki/tokens.csv ]] || {
    log "$DIR holds no control plane started by up.sh"
    exit 1
}

# up.sh calls this before DIR/env exists, so the values are read from the kubeconfig's
# sources directly.
APISERVER_URL=$(awk '$1 == "server:" { print $2; exit }' "$DIR/kubeconfig")
TOKEN=$(awk -F, '$2 == "admin" { print $1; exit }' "$DIR/pki/tokens.csv")
CA_FILE=$DIR/pki/ca.crt

api() {
    curl -sS --fail-with-body --max-time 10 --cacert "$CA_FILE" \
        -H "Authorization: Bearer $TOKEN" "$@"
}

label="{\"metadata\":{\"labels\":{\"kubernetes.io/metadata.name\":\"$NAME\"}}}"
if ! api -o /dev/null "$APISERVER_URL/api/v1/namespaces/$NAME" 2>/dev/null; then
    # A concurrent creator may win the race; the patch below settles the label either way.
    api -o /dev/null -H 'Content-Type: application/json' -X POST \
        -d "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"$NAME\",\"labels\":{\"kubernetes.io/metadata.name\":\"$NAME\"}}}" \
        "$APISERVER_URL/api/v1/namespaces" 2>/dev/null || true
fi
api -H 'Content-Type: application/merge-patch+json' -X PATCH -d "$label" \
    "$APISERVER_URL/api/v1/namespaces/$NAME" >/dev/null
printf '%s\n' "$NAME"
