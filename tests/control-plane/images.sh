#!/usr/bin/env bash
# Builds the images the test node runs, offline, as OCI archives for `ctr images import`:
#
#   pause        the sandbox image: the static pause program build.sh compiles from the
#                kubernetes tree's build/pause
#   nginx        Debian's nginx (nginx-light) and the libraries it links, running as uid 101
#   ingress-tap  the project's binary and the libraries it links, as the Dockerfile's
#                `host-binary` stage lays it out (user 65532, entrypoint /ingress-tap)
#
# Usage: images.sh KIND OUTDIR
#   Prints "REFERENCE ARCHIVE" on stdout.
#
# Environment:
#   INGRESS_TAP_BINARY   the ingress-tap binary to package (default target/release/ingress-tap)
#   KUBE_BIN_DIR         where build.sh put pause (default: asks build.sh)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly REPOSITORY="$SCRIPT_DIR/../.."

# shellcheck source=lib.sh
. "$SCRIPT_DIR/lib.sh"

[[ $# -eq 2 ]] || die "usage: images.sh pause|nginx|ingress-tap OUTDIR"
readonly KIND=$1 OUTDIR=$2
mkdir -p "$OUTDIR"
ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
rmdir "$ROOTFS"

case $KIND in
pause)
    bin_dir=${KUBE_BIN_DIR:-$("$SCRIPT_DIR/build.sh")}
    version=$(basename "$bin_dir")
    version=${version#kubernetes-}
    reference="localhost/ingress-tap-test/pause:${version//[^A-Za-z0-9._-]/_}"
    "$SCRIPT_DIR/rootfs.sh" "$ROOTFS" --binary "$bin_dir/pause=/pause"
    archive="$OUTDIR/pause.tar"
    "$SCRIPT_DIR/oci-archive.sh" "$ROOTFS" "$reference" "$archive" --user 65535:65535 --entrypoint /pause
    ;;
nginx)
    nginx=/usr/sbin/nginx
    [[ -x $nginx ]] || die "$nginx missing: install Debian's nginx-light (scripts/test.sh does)"
    version=$(dpkg-query -W -f='${Version}' nginx 2>/dev/null || "$nginx" -v 2>&1 | sed 's|.*/||')
    reference="localhost/ingress-tap-test/nginx:${version//[^A-Za-z0-9._-]/_}"
    # The configuration comes from a ConfigMap; temp paths, pid and logs are set there to
    # writable volumes, so the image needs no /var/lib/nginx.
    "$SCRIPT_DIR/rootfs.sh" "$ROOTFS" --binary "$nginx=/usr/sbin/nginx" \
        --dir /tmp=1777 --dir /etc/nginx=0755 --passwd nginx:101:101
    archive="$OUTDIR/nginx.tar"
    "$SCRIPT_DIR/oci-archive.sh" "$ROOTFS" "$reference" "$archive" --user 101:101 \
        --entrypoint /usr/sbin/nginx --entrypoint -g --entrypoint "daemon off;"
    ;;
ingress-tap)
    binary=${INGRESS_TAP_BINARY:-$REPOSITORY/target/release/ingress-tap}
    [[ -x $binary ]] || die "$binary missing: cargo build --release --locked first"
    version=$(awk -F'"' '/^version = / { print $2; exit }' "$REPOSITORY/Cargo.toml")
    reference="ghcr.io/ingress-tap/ingress-tap:$version"
    # A debug build carries some 200 MB of debug information the image does not need.
    if command -v objcopy >/dev/null; then
        stripped=$(mktemp)
        objcopy --strip-debug "$binary" "$stripped"
        binary=$stripped
        trap 'rm -rf "$ROOTFS" "$stripped"' EXIT
    fi
    "$SCRIPT_DIR/rootfs.sh" "$ROOTFS" --binary "$binary=/ingress-tap" --dir /tmp=1777 \
        --passwd nonroot:65532:65532
    archive="$OUTDIR/ingress-tap.tar"
    "$SCRIPT_DIR/oci-archive.sh" "$ROOTFS" "$reference" "$archive" --user 65532:65532 \
        --entrypoint /ingress-tap
    ;;
*) die "unknown image kind $KIND (pause, nginx or ingress-tap)" ;;
esac
printf '%s %s\n' "$reference" "$archive"
