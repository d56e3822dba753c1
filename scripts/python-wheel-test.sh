#!/usr/bin/env bash
# The wheel installs with pip into a fresh virtual environment and works there with no
# environment variable: `import meridian` loads the library inside the package.
# Usage: scripts/python-wheel-test.sh LIB
set -euo pipefail
lib=$1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
wheel=$(python3 "$(dirname "$0")/python-wheel.py" "$lib" "$scratch/dist")
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install --quiet --no-index --disable-pip-version-check "$wheel"
cd "$scratch"
out=$(env -u MERIDIAN_LIB -u CARGO_TARGET_DIR "$scratch/venv/bin/python" -c \
  'import meridian; print(meridian.version()); print(meridian.LIBRARY)')
echo "$out"
version=$(echo "$out" | sed -n 1p)
loaded=$(echo "$out" | sed -n 2p)
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "no version: $out" >&2; exit 1; }
[[ $loaded == "$scratch/venv/"* ]] || { echo "loaded $loaded, not the installed library" >&2; exit 1; }
echo "pip install of the wheel: ok"
