#!/usr/bin/env bash
# The static C library as a host links it: cargo's libmeridian.a prelinked into one object
# whose only global symbols are the meridian_* functions (RocksDB's, Rust's and the C++
# runtime's weak symbols made local), so a host that links its own RocksDB, or its own Rust
# code, meets no clash. Usage: scripts/localize-static.sh IN.a OUT.a
set -euo pipefail
in=$1
out=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ld -r -o "$work/meridian.o" --whole-archive "$in"
# The embedded LLVM bitcode is not needed to link, and binutils' LTO plugin chokes on it.
objcopy --wildcard --keep-global-symbol='meridian_*' --remove-section=.llvmbc --remove-section=.llvmcmd \
  "$work/meridian.o" "$work/meridian-local.o"
rm -f "$out"
ar rcs "$out" "$work/meridian-local.o"
