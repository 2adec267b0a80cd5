#!/usr/bin/env bash
# Packs a root filesystem directory into a single-layer OCI image archive (an OCI image
# layout in a tar file), the format `ctr images import` reads. Offline: no registry, no
# container engine, only tar, sha256sum and python3 for the JSON.
#
# Usage: oci-archive.sh ROOTFS REFERENCE OUT.tar [--user UID:GID] [--entrypoint ARG]...
#   REFERENCE  the image name the archive carries, e.g. ghcr.io/ingress-tap/ingress-tap:0.1.0
#              (annotation io.containerd.image.name, and the tag as org.opencontainers.image.ref.name)
#   --user     numeric user and group the image runs as (default 0:0)
#   --entrypoint  one argument of the entrypoint, repeated in order
#
# The layer is reproducible: sorted names, root ownership, mtime 0, so the same ROOTFS gives
# the same image ID.
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -ge 3 ]] || die "usage: oci-archive.sh ROOTFS REFERENCE OUT.tar [--user UID:GID] [--entrypoint ARG]..."
readonly ROOTFS=$1 REFERENCE=$2 OUT=$3
shift 3
[[ -d $ROOTFS ]] || die "$ROOTFS is not a directory"
[[ $REFERENCE =~ ^[a-z0-9._/-]+(:[A-Za-z0-9._-]+)$ ]] || die "not a NAME:TAG reference: $REFERENCE"
USER_SPEC=0:0
ENTRYPOINT=()
while [[ $# -gt 0 ]]; do
    [[ $# -ge 2 ]] || die "$1 needs a value"
    case $1 in
    --user)
        [[ $2 =~ ^[0-9]+:[0-9]+$ ]] || die "--user wants UID:GID, got $2"
        USER_SPEC=$2
        ;;
    --entrypoint) ENTRYPOINT+=("$2") ;;
    *) die "unknown option $1" ;;
    esac
    shift 2
done
command -v python3 >/dev/null || die "python3 is needed to write the image's JSON"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/layout/blobs/sha256"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$ROOTFS" -cf "$WORK/layer.tar" .

# Stores a file as a blob; prints "digest size".
blob() {
    local file=$1 digest
    digest=$(sha256sum "$file" | cut -d' ' -f1)
    cp "$file" "$WORK/layout/blobs/sha256/$digest"
    printf 'sha256:%s %s\n' "$digest" "$(stat -c %s "$file")"
}

read -r LAYER_DIGEST LAYER_SIZE < <(blob "$WORK/layer.tar")

python3 - "$WORK" "$REFERENCE" "$USER_SPEC" "$LAYER_DIGEST" "$LAYER_SIZE" "${ENTRYPOINT[@]}" <<'PY'
import hashlib, json, os, sys
work, reference, user, layer_digest, layer_size, *entrypoint = sys.argv[1:]
blobs = os.path.join(work, "layout", "blobs", "sha256")

def store(obj):
    data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)

config = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "User": user,
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Entrypoint": entrypoint or None,
        "WorkingDir": "/",
    },
    "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    "history": [{"created_by": "tests/control-plane/oci-archive.sh"}],
}
config_digest, config_size = store(config)
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": config_digest, "size": config_size},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest, "size": int(layer_size)}],
}
manifest_digest, manifest_size = store(manifest)
index = {
    "schemaVersion": 2,
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": manifest_size,
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {
            "io.containerd.image.name": reference,
            "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[1],
        },
    }],
}
with open(os.path.join(work, "layout", "index.json"), "w") as f:
    json.dump(index, f)
with open(os.path.join(work, "layout", "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
PY

mkdir -p "$(dirname "$OUT")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$WORK/layout" \
    -cf "$OUT.partial" oci-layout index.json blobs
mv -f "$OUT.partial" "$OUT"
