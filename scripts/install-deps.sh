#!/usr/bin/env bash
# Installs the system packages the build needs on Debian: libclang (RocksDB's bindgen), a C++
# compiler (RocksDB itself), a C compiler with AddressSanitizer (the C ABI's test program) and
# Python 3 with venv and mypy (the Python package's tests and type hints, and its wheel
# installed by pip).
# As root it installs them; otherwise it prints the command to run.
set -euo pipefail

missing=()
# libclang.so or libclang-<version>.so, as bindgen looks for; not libclang-cpp, which some images
# ship without libclang itself.
if ! ldconfig -p 2>/dev/null | grep -qE '\blibclang(-[0-9.]+)?\.so'; then
  missing+=(libclang-dev)
fi
if ! command -v c++ >/dev/null 2>&1; then
  missing+=(g++)
fi
if ! command -v cc >/dev/null 2>&1 || ! echo 'int main(void){return 0;}' \
    | cc -fsanitize=address -x c - -o /dev/null >/dev/null 2>&1; then
  missing+=(gcc)
fi
if ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3 python3-pytest python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
# The system's RocksDB: the C ABI's test links a host's own RocksDB beside Meridian's static
# library.
if [ ! -f /usr/include/rocksdb/c.h ]; then
  missing+=(librocksdb-dev)
fi
# mypy checks the Python package's type hints (`make test`).
if ! python3 -m mypy --version >/dev/null 2>&1 && ! /usr/bin/python3 -m mypy --version >/dev/null 2>&1; then
  missing+=(python3-mypy)
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install the Rust toolchain first (https://rustup.rs)" >&2
  exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (needed to build RocksDB and test the C ABI)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "error: missing system packages: ${missing[*]}" >&2
  echo "run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
