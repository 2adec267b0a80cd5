#!/usr/bin/env bash
# Fuzz smoke: builds the cargo-fuzz targets of fuzz/ once, then runs each for a bounded time
# with memory limits. Any panic, sanitizer report, single allocation over 64 MiB or resident
# size over 256 MiB fails the run; the crashing input is kept under fuzz/artifacts/TARGET/.
#
#   bash scripts/fuzz-smoke.sh            # every target, FUZZ_SECONDS (10) each
#   bash scripts/fuzz-smoke.sh parse_line # one target
#
# libFuzzer needs the compiler's sanitizer support, which stable Rust gates behind nightly
# flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. The first build compiles the
# crate and its dependencies with coverage instrumentation (several minutes on 2 cores); later
# builds reuse fuzz/target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_TARGET=${FUZZ_SECONDS:-10}
ALL_TARGETS=(parse_line original_ip admission_review inject_config inject_yaml)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz ||
    { echo "error: cargo-fuzz could not be installed; the fuzz smoke needs it" >&2; exit 1; }
fi

echo "== building the fuzz targets" >&2
(cd fuzz && cargo fuzz build -O) ||
  { echo "error: the fuzz targets do not build" >&2; exit 1; }
BIN_DIR=fuzz/target/$(rustc -vV | awk '/^host:/ { print $2 }')/release
for target in "${TARGETS[@]}"; do
  [ -x "$BIN_DIR/$target" ] || { echo "error: fuzz target $target did not build" >&2; exit 1; }
done

# A small quarantine keeps the sanitizer's own memory from counting against the RSS limit.
export ASAN_OPTIONS="detect_odr_violation=0:quarantine_size_mb=16"
failed=0
for target in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  log="fuzz/artifacts/$target/smoke.log"
  if "$BIN_DIR/$target" "fuzz/corpus/$target" "fuzz/corpus-seed/$target" \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=256 -malloc_limit_mb=64 \
      -max_len=8192 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1; then
    runs=$(awk '/^Done [0-9]+ runs/ { print $2 }' "$log")
    echo "fuzz $target: ok, ${runs:-?} runs in ${SECONDS_PER_TARGET} s"
  else
    failed=1
    echo "fuzz $target: FAILED (log: $log)"
    grep -E 'panicked|ERROR: |SUMMARY|Test unit written' "$log" | head -8
  fi
done
[ "$failed" = 0 ] || { echo "fuzz smoke: a target failed" >&2; exit 1; }
echo "fuzz smoke: ${#TARGETS[@]} targets, no crash"
