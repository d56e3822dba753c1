#!/usr/bin/env bash
# The Python package's tests: pytest when it is installed, unittest otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if python3 -c 'import pytest' >/dev/null 2>&1; then
  exec python3 -m pytest -q bindings/python/tests
else
  exec python3 -m unittest discover -s bindings/python/tests
fi
