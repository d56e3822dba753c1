#!/usr/bin/env bash
# Fuzzes every target in fuzz/ for FUZZ_SECONDS each (default 60) with libFuzzer, growing the
# corpus in fuzz/corpus/. Needs the nightly toolchain (cargo-fuzz is installed if missing).
# Any allocation over 64 MiB, a process over 1 GiB, a panic or a crash stops with the input.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-frame entries record log_entry iblt client_request token}"
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "error: cargo-fuzz needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/meridian/fuzz-target}"
for t in $targets; do
  echo "== fuzzing $t for ${seconds}s"
  cargo +nightly fuzz run --target-dir "$CARGO_TARGET_DIR" "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -malloc_limit_mb=64 -rss_limit_mb=1024 -max_len=1048576 \
    -print_final_stats=1
done
