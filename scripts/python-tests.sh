#!/usr/bin/env bash
# The Python package's tests: pytest when it is installed, unittest otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
# The type hints first: every function annotated, every call consistent.
mypy_python=python3
python3 -m mypy --version >/dev/null 2>&1 || mypy_python=/usr/bin/python3
(cd bindings/python && "$mypy_python" -m mypy --disallow-untyped-defs --disallow-incomplete-defs meridian)
if python3 -c 'import pytest' >/dev/null 2>&1; then
  exec python3 -m pytest -q bindings/python/tests
else
  exec python3 -m unittest discover -s bindings/python/tests
fi
