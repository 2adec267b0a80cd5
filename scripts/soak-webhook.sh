#!/usr/bin/env bash
# Webhook soak: the release binary with certificate and config files, 2,000 AdmissionReviews/s
# over TLS on loopback for 60 s, with a certificate rotation and a config reload halfway (both
# files replaced atomically). Every answer must be the handler's answer under the old or the new
# config; prints one verdict line with p50/p99/max and exits non-zero on FAIL.
#
#   bash scripts/soak-webhook.sh [--seconds 60] [--rate 2000] [--connections 32] [--reconnect-every 100]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== building the webhook and the soak client (release)" >&2
cargo build --release --locked --quiet --bin ingress-tap --example soak_webhook
exec target/release/examples/soak_webhook "$@"
