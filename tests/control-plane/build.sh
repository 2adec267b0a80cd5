#!/usr/bin/env bash
# Provides the Kubernetes binaries for the loopback control plane and its node: kube-apiserver,
# kube-controller-manager, kube-scheduler and kubelet, plus the pause program of the
# same tree (the sandbox image's only binary).
#
# No cluster is reachable from the machines this project is developed and tested on, but
# Debian's archive carries the Kubernetes source (source package `kubernetes`, 1.20.x, with
# every Go dependency vendored). This script builds the binaries from that source
# exactly once per source version and caches them, so that later runs only pay for a lookup.
#
# Usage: build.sh
#   Prints the directory holding the binaries as the only line on stdout; progress goes to
#   stderr. Exits non-zero with an explanation when the binaries cannot be provided.
#
# Environment:
#   INGRESS_TAP_CACHE                 cache root (default /var/cache/ingress-tap)
#   INGRESS_TAP_KUBERNETES_VERSION    exact Debian source version to use; without it an
#                                     already cached version is reused, and only when nothing
#                                     is cached is the archive asked for its current version
#
# The machine's own apt configuration stays untouched: the deb-src entries are derived from
# the machine's Debian sources into a private apt state (lists, cache, source parts) that lives
# in a temporary work directory under the cache root and is removed afterwards.
set -euo pipefail

readonly CACHE_ROOT="${INGRESS_TAP_CACHE:-/var/cache/ingress-tap}"
readonly SOURCE_PACKAGE=kubernetes
# kubectl is not among them: the tests use the machine's own (scripts/test.sh requires it for
# kustomize v5), and compiling it would only lengthen a fresh machine's first run.
readonly BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
# Built with gcc from build/pause, statically, so the pause image needs no libraries.
readonly PAUSE=pause
# Needed at run time by up.sh, so they are ensured even when the binaries are cached.
readonly RUNTIME_PACKAGES=(etcd-server openssl curl)
# Needed only to fetch and compile the source.
readonly BUILD_PACKAGES=(golang-go rsync make dpkg-dev golang-github-modern-go-reflect2-dev gcc libc6-dev)
# Debian's reflect2 1.0.2 replaces the vendored 1.0.1, whose map iteration relies on runtime
# internals that changed in Go 1.18 and crashes kube-apiserver with SIGSEGV.
readonly REFLECT2_SOURCE=/usr/share/gocode/src/github.com/modern-go/reflect2
readonly REFLECT2_VENDORED=vendor/github.com/modern-go/reflect2

# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APT_LISTS_REFRESHED=0

# Installs whichever of the given packages are missing. The package lists are refreshed at
# most once, and only when a missing package has no install candidate yet (fresh machine).
ensure_packages() {
    find_missing_packages "$@"
    [[ ${#MISSING[@]} -eq 0 ]] && return 0
    local package policy_output
    for package in "${MISSING[@]}"; do
        # Captured first: grep -q closing the pipe early would fail apt-cache under pipefail.
        policy_output=$(apt-cache policy "$package" 2>/dev/null || true)
        if [[ $APT_LISTS_REFRESHED -eq 0 && $policy_output != *"Candidate: "[!\(]* ]]; then
            log "refreshing the machine's package lists (no candidate for $package yet)"
            apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || die "apt-get update failed"
            APT_LISTS_REFRESHED=1
        fi
    done
    log "installing ${MISSING[*]}"
    install_packages "${MISSING[@]}"
}

# A cache entry counts only when every binary is present; entries are renamed into place
# after a complete build, so a partial one never carries the final name.
cache_entry_complete() {
    local dir=$1 binary
    for binary in "${BINARIES[@]}"; do
        [[ -x "$dir/$binary" ]] || return 1
    done
    [[ -x "$dir/$PAUSE" ]]
}

newest_cached_version() {
    local dir version best=""
    shopt -s nullglob
    for dir in "$CACHE_ROOT/$SOURCE_PACKAGE"-*/; do
        dir=${dir%/}
        cache_entry_complete "$dir" || continue
        version=${dir##*/"$SOURCE_PACKAGE"-}
        if [[ -z $best ]] || dpkg --compare-versions "$version" gt "$best"; then
            best=$version
        fi
    done
    shopt -u nullglob
    printf '%s' "$best"
}

# Turns the machine's binary-package entries into deb-src entries for the same Debian release.
# Both apt formats are read: deb822 (*.sources) and one-line (sources.list, *.list). Only
# suites of this release (CODENAME, CODENAME-updates, CODENAME-security, ...) are kept, so
# third-party repositories that publish no sources cannot break the private update.
write_source_entries() {
    local parts_dir=$1 codename=$2 file
    shopt -s nullglob
    for file in /etc/apt/sources.list.d/*.sources; do
        awk -v codename="$codename" '
            function flush(   i) {
                if (nlines > 0 && has_deb && enabled && suites != "") {
                    print "Types: deb-src"
                    print "Suites:" suites
                    for (i = 1; i <= nlines; i++) print lines[i]
                    print ""
                }
                nlines = 0; has_deb = 0; enabled = 1; suites = ""
            }
            BEGIN { enabled = 1 }
            /^[[:space:]]*$/ { flush(); next }
            /^#/ { next }
            tolower($1) == "types:" {
                for (i = 2; i <= NF; i++) if ($i == "deb") has_deb = 1
                next
            }
            tolower($1) == "suites:" {
                for (i = 2; i <= NF; i++)
                    if ($i == codename || index($i, codename "-") == 1) suites = suites " " $i
                next
            }
            tolower($1) == "enabled:" { if (tolower($2) == "no") enabled = 0; next }
            { lines[++nlines] = $0 }
            END { flush() }
        ' "$file" >"$parts_dir/$(basename "$file")"
    done
    local one_line_files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    for file in "${one_line_files[@]}"; do
        [[ -f $file ]] || continue
        awk -v codename="$codename" '
            $1 != "deb" { next }
            {
                # Options in brackets may follow "deb"; the suite is the field after the URI.
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                suite = $(i + 1)
                if (suite == codename || index(suite, codename "-") == 1) {
                    sub(/^deb/, "deb-src"); print
                }
            }
        ' "$file" >"$parts_dir/$(basename "$file" .list)-src.list"
    done
    shopt -u nullglob
    # apt treats an empty .sources file as malformed.
    find "$parts_dir" -type f -empty -delete
    grep -qs . "$parts_dir"/* || die "no Debian $codename entries found in /etc/apt/sources.list(.d)"
}

# Sets PRIVATE_APT to the apt options that confine lists, cache and sources to work_dir.
prepare_private_apt() {
    local work_dir=$1 codename
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || die "cannot tell the Debian release: no VERSION_CODENAME in /etc/os-release"
    local apt_dir="$work_dir/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources.list.d"
    : >"$apt_dir/sources.list"
    write_source_entries "$apt_dir/sources.list.d" "$codename"
    PRIVATE_APT=(
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
        -o "Dir::Etc::SourceList=$apt_dir/sources.list"
        -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
        # The work directory belongs to root; the _apt sandbox user could not write there.
        -o "APT::Sandbox::User=root"
    )
    log "reading source indexes into the private apt state"
    apt-get "${PRIVATE_APT[@]}" update -qq >&2 || die "apt-get update of the deb-src entries failed"
}

archive_version() {
    local version best=""
    while read -r version; do
        if [[ -z $best ]] || dpkg --compare-versions "$version" gt "$best"; then
            best=$version
        fi
    done < <(apt-cache "${PRIVATE_APT[@]}" showsrc --only-source "$SOURCE_PACKAGE" 2>/dev/null |
        awk '$1 == "Version:" { print $2 }')
    [[ -n $best ]] || die "Debian's archive offers no source package '$SOURCE_PACKAGE' for this release"
    printf '%s' "$best"
}

# Builds the way Debian's packaging does (debian/rules): GOPATH mode through a .go symlink
# tree, CGO disabled, the upstream Makefile with WHAT naming the commands.
build_into() {
    local version=$1 work_dir=$2 entry=$3
    log "fetching source package $SOURCE_PACKAGE=$version"
    mkdir -p "$work_dir/src"
    (cd "$work_dir/src" && apt-get "${PRIVATE_APT[@]}" source -qq "$SOURCE_PACKAGE=$version" >&2) ||
        die "apt-get source $SOURCE_PACKAGE=$version failed"
    local tree
    tree=$(find "$work_dir/src" -mindepth 1 -maxdepth 1 -type d -name "$SOURCE_PACKAGE-*" | head -n 1)
    [[ -n $tree && -f $tree/Makefile ]] || die "unpacked source tree not found under $work_dir/src"

    [[ -d $REFLECT2_SOURCE ]] || die "$REFLECT2_SOURCE missing although golang-github-modern-go-reflect2-dev is installed"
    [[ -d $tree/$REFLECT2_VENDORED ]] || die "expected vendored $REFLECT2_VENDORED in the source tree"
    log "replacing vendored reflect2 with Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
    rsync -a --delete "$REFLECT2_SOURCE/" "$tree/$REFLECT2_VENDORED/"

    mkdir -p "$tree/.go/src/k8s.io" "$work_dir/home"
    ln -sfn ../../.. "$tree/.go/src/k8s.io/kubernetes"
    local what="" binary
    for binary in "${BINARIES[@]}"; do what+="cmd/$binary "; done
    log "compiling ${BINARIES[*]} with $(go version) (takes minutes on first use)"
    local started=$SECONDS
    # Run from `cargo test`, this script inherits cargo's OUT_DIR, which kubernetes' Makefile
    # also reads as its output directory; unset, the binaries land in the tree's _output.
    (cd "$tree" && env -u OUT_DIR GOPATH="$tree/.go" CGO_ENABLED=0 HOME="$work_dir/home" \
        nice -n 19 make WHAT="${what% }" >"$work_dir/make.log" 2>&1) || {
        tail -n 40 "$work_dir/make.log" >&2
        die "make WHAT=\"${what% }\" failed; full log kept at $work_dir/make.log"
    }
    log "compiled in $((SECONDS - started))s"

    local partial="$entry.partial.$$"
    rm -rf "$partial"
    mkdir -p "$partial"
    for binary in "${BINARIES[@]}"; do
        [[ -x $tree/_output/bin/$binary ]] || die "make did not produce _output/bin/$binary"
        cp "$tree/_output/bin/$binary" "$partial/"
        "$partial/$binary" --version >/dev/null 2>&1 || die "built $binary does not run"
    done
    gcc -Os -static -Wall -DVERSION="$version" -o "$partial/$PAUSE" "$tree/build/pause/linux/pause.c" ||
        die "compiling build/pause/linux/pause.c failed"
    printf 'source package %s %s, built with %s\n' "$SOURCE_PACKAGE" "$version" "$(go version)" \
        >"$partial/BUILD-INFO"
    rm -rf "$entry"
    mv -T "$partial" "$entry"
}

main() {
    mkdir -p "$CACHE_ROOT" || die "cannot create cache root $CACHE_ROOT"
    # Concurrent callers (parallel tests, a second terminal) wait for one build instead of
    # racing two builds over the same cache entry.
    exec 9>"$CACHE_ROOT/.build.lock"
    flock 9

    ensure_packages "${RUNTIME_PACKAGES[@]}"

    local version=${INGRESS_TAP_KUBERNETES_VERSION:-}
    [[ -n $version ]] || version=$(newest_cached_version)
    if [[ -n $version ]] && cache_entry_complete "$CACHE_ROOT/$SOURCE_PACKAGE-$version"; then
        printf '%s\n' "$CACHE_ROOT/$SOURCE_PACKAGE-$version"
        return 0
    fi

    ensure_packages "${BUILD_PACKAGES[@]}"
    # Work directories of earlier failed builds are only kept until the next attempt.
    rm -rf "$CACHE_ROOT"/work.*
    local work_dir
    work_dir=$(mktemp -d "$CACHE_ROOT/work.XXXXXX")
    chmod 755 "$work_dir"
    prepare_private_apt "$work_dir"
    [[ -n $version ]] || version=$(archive_version)
    local entry="$CACHE_ROOT/$SOURCE_PACKAGE-$version"
    build_into "$version" "$work_dir" "$entry"
    # Only a successful build removes the source tree; a failed one keeps it for inspection.
    rm -rf "$work_dir"
    log "cached ${BINARIES[*]} in $entry"
    printf '%s\n' "$entry"
}

main "$@"
