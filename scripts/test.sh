#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit, integration and end-to-end tests.
# Installs the system packages the end-to-end tests need when they are missing (Debian's
# nginx for the collector tests), and fails with a message when it cannot: no test is ever
# skipped because something is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n== %s\n' "$*"; }

need_root_for_install() {
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "error: $1 is missing and cannot be installed without root; install it and rerun" >&2
    exit 1
  fi
}

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  if [ -z "${APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_nginx() {
  if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then return; fi
  say "installing Debian's nginx (collector end-to-end tests)"
  need_root_for_install nginx
  apt_install nginx-light || apt_install nginx
  if ! [ -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null 2>&1; then
    echo "error: nginx could not be installed; the collector end-to-end tests need it" >&2
    exit 1
  fi
}

ensure_nft() {
  if command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ]; then return; fi
  say "installing Debian's nftables (block --target nftables syntax checks)"
  need_root_for_install nft
  apt_install nftables
  if ! [ -x /usr/sbin/nft ] && ! command -v nft >/dev/null 2>&1; then
    echo "error: nftables could not be installed; the block tests need nft" >&2
    exit 1
  fi
}

# tests/e2e_node.rs runs pods on a real node: containerd with runc, and the CNI plugins
# (bridge, host-local, loopback). The kubelet itself is built by tests/control-plane/build.sh.
ensure_node_runtime() {
  local missing=() package
  for package in containerd runc containernetworking-plugins; do
    [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" = "install ok installed" ] || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return
  say "installing Debian's ${missing[*]} (the end-to-end node)"
  need_root_for_install "${missing[*]}"
  # The package would start the machine's own containerd; the tests run a private one.
  local policy=/usr/sbin/policy-rc.d created_policy=""
  if [ ! -e "$policy" ] && [ "$(id -u)" = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
  fi
  local status=0
  apt_install "${missing[@]}" || status=$?
  [ -n "$created_policy" ] && rm -f "$policy"
  if [ "$status" != 0 ] || ! [ -x /usr/bin/containerd ] || ! [ -x /usr/sbin/runc ] || ! [ -x /usr/lib/cni/bridge ]; then
    echo "error: containerd, runc and containernetworking-plugins could not be installed; tests/e2e_node.rs needs them" >&2
    exit 1
  fi
}

ensure_nginx
ensure_nft
ensure_node_runtime
export PATH="$PATH:/usr/sbin"

# ---- deployment (manifests/, Dockerfile): begin ---------------------------------------------
# tests/manifests.rs renders manifests/ with `kubectl kustomize` (kustomize v5) and validates
# every object with kubernetes-validate in strict mode, from a virtualenv under target/.
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VALIDATE_VENV="$PWD/target/kubernetes-validate-venv"

ensure_kubectl() {
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "error: kubectl (with kustomize v5) is missing; tests/manifests.rs renders manifests/ with it. Install it and rerun" >&2
    exit 1
  fi
}

ensure_kubernetes_validate() {
  local python="$KUBERNETES_VALIDATE_VENV/bin/python"
  if [ -x "$python" ] && "$python" -c "import sys, kubernetes_validate; sys.exit(kubernetes_validate.__version__ != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
    export INGRESS_TAP_VALIDATE_PYTHON="$python"
    return
  fi
  say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (manifest schema validation)"
  mkdir -p "$(dirname "$KUBERNETES_VALIDATE_VENV")"
  if ! python3 -m venv --clear "$KUBERNETES_VALIDATE_VENV" ||
     ! "$KUBERNETES_VALIDATE_VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"; then
    echo "error: kubernetes-validate $KUBERNETES_VALIDATE_VERSION could not be installed; tests/manifests.rs needs it (python3 with venv and pip, and PyPI)" >&2
    exit 1
  fi
  export INGRESS_TAP_VALIDATE_PYTHON="$python"
}

ensure_kubectl
ensure_kubernetes_validate

# The Dockerfile builds the image's binary with exactly this command (tests/manifests.rs checks
# that they match), so the image build is exercised here even where no container engine runs.
say "cargo build --release --locked (the Dockerfile's build command)"
cargo build --release --locked
target/release/ingress-tap --version
# ---- deployment (manifests/, Dockerfile): end -----------------------------------------------

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --workspace --all-targets -- -D warnings

# ---- dependencies (deny.toml): begin ----------------------------------------------------------
# Licenses, duplicate versions and sources of every crate in the build, as deny.toml sets them.
# Advisories need the RustSec database, which is fetched from GitHub: said, not skipped silently.
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version >/dev/null 2>&1; then
  say "installing cargo-deny $CARGO_DENY_VERSION (dependency licenses, duplicates and sources)"
  cargo install --locked --version "$CARGO_DENY_VERSION" cargo-deny ||
    { echo "error: cargo-deny could not be installed; the dependency checks need it" >&2; exit 1; }
fi
say "cargo deny (licenses, duplicate versions, sources)"
cargo deny --locked check licenses bans sources
echo "cargo deny: advisories not checked: the RustSec advisory database (github.com) is not reachable from the build machine; run \`cargo deny check advisories\` where it is"
# ---- dependencies: end ------------------------------------------------------------------------

say "cargo test (unit, integration, end to end)"
cargo test --locked --workspace --all-targets
cargo test --locked --workspace --doc

# ---- fuzz smoke (fuzz/, scripts/fuzz-smoke.sh): begin ---------------------------------------
# Each cargo-fuzz target for FUZZ_SECONDS (10) with memory limits; installs cargo-fuzz when
# missing and fails when it cannot. Longer runs: docs/reliability.md.
say "fuzz smoke (five targets, ${FUZZ_SECONDS:-10} s each)"
bash scripts/fuzz-smoke.sh
# ---- fuzz smoke: end ------------------------------------------------------------------------

say "all tests passed"
