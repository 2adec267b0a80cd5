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

ensure_nginx
export PATH="$PATH:/usr/sbin"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

say "cargo test (unit, integration, end to end)"
cargo test --locked --all-targets
cargo test --locked --doc

say "all tests passed"
