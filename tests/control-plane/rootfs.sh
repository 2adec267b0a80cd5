#!/usr/bin/env bash
# Assembles a container root filesystem from programs installed on this machine: each program
# with exactly the shared libraries it links against (as the dynamic loader resolves them here,
# read with ldd), plus named files and empty directories. No registry, no base image.
#
# Usage: rootfs.sh OUTDIR [--binary SRC=DEST]... [--file SRC=DEST]... [--dir DEST=MODE]...
#                         [--passwd NAME:UID:GID]...
#   --binary   copies SRC to DEST (mode 0755) and every library ldd lists for it, each to the
#              path ldd names, plus the program interpreter (ld-linux)
#   --file     copies SRC to DEST (mode 0644)
#   --dir      creates the directory DEST with octal MODE (e.g. /tmp=1777)
#   --passwd   adds a user and its group to /etc/passwd and /etc/group (root is always there)
#
# OUTDIR must not exist yet or be empty. Files are owned by root; a program that must write
# somewhere gets a --dir for it (or a volume).
set -euo pipefail

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -ge 1 ]] || die "usage: rootfs.sh OUTDIR [--binary SRC=DEST]... [--file SRC=DEST]... [--dir DEST=MODE]... [--passwd NAME:UID:GID]..."
readonly OUT=$1
shift
mkdir -p "$OUT"
[[ -z $(ls -A "$OUT") ]] || die "$OUT is not empty"

# DEST must be absolute and normalised: no "..", so nothing lands outside OUTDIR.
check_dest() {
    local dest=$1
    [[ $dest == /* && $dest != *"/../"* && $dest != *"/.." && $dest != *"//"* ]] ||
        die "not an absolute, normalised path inside the image: $dest"
}

put() {
    local src=$1 dest=$2 mode=$3
    check_dest "$dest"
    [[ -f $src ]] || die "$src is not a file"
    install -D -m "$mode" "$src" "$OUT$dest"
}

libraries_of() {
    local binary=$1 output
    # A static program has no libraries; ldd says so and exits non-zero.
    output=$(ldd "$binary" 2>&1) || {
        [[ $output == *"not a dynamic executable"* || $output == *"statically linked"* ]] && return 0
        die "ldd $binary failed: $output"
    }
    [[ $output != *"not found"* ]] || die "$binary links against a library missing here: $output"
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$output"
}

PASSWD="root:x:0:0:root:/root:/sbin/nologin"$'\n'
GROUP="root:x:0:"$'\n'
while [[ $# -gt 0 ]]; do
    option=$1
    [[ $# -ge 2 ]] || die "$option needs a value"
    value=$2
    shift 2
    case $option in
    --binary)
        src=${value%%=*} dest=${value#*=}
        [[ $value == *=* ]] || die "--binary wants SRC=DEST, got $value"
        put "$src" "$dest" 0755
        while read -r library; do
            [[ -n $library ]] || continue
            # cp -L: the image gets the file itself, not the machine's symlink to it.
            check_dest "$library"
            mkdir -p "$OUT$(dirname "$library")"
            cp -L "$library" "$OUT$library"
            chmod 0755 "$OUT$library"
        done < <(libraries_of "$src")
        ;;
    --file)
        [[ $value == *=* ]] || die "--file wants SRC=DEST, got $value"
        put "${value%%=*}" "${value#*=}" 0644
        ;;
    --dir)
        [[ $value == *=* && ${value#*=} =~ ^[0-7]{3,4}$ ]] || die "--dir wants DEST=MODE, got $value"
        check_dest "${value%%=*}"
        mkdir -p "$OUT${value%%=*}"
        chmod "${value#*=}" "$OUT${value%%=*}"
        ;;
    --passwd)
        [[ $value =~ ^([a-z_][a-z0-9_-]*):([0-9]+):([0-9]+)$ ]] || die "--passwd wants NAME:UID:GID, got $value"
        PASSWD+="${BASH_REMATCH[1]}:x:${BASH_REMATCH[2]}:${BASH_REMATCH[3]}:${BASH_REMATCH[1]}:/nonexistent:/sbin/nologin"$'\n'
        GROUP+="${BASH_REMATCH[1]}:x:${BASH_REMATCH[3]}:"$'\n'
        ;;
    *) die "unknown option $option" ;;
    esac
done
mkdir -p "$OUT/etc"
printf '%s' "$PASSWD" >"$OUT/etc/passwd"
printf '%s' "$GROUP" >"$OUT/etc/group"
chmod 0644 "$OUT/etc/passwd" "$OUT/etc/group"
