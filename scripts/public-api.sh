#!/usr/bin/env bash
# The meridian crate's public API (rustdoc's JSON, listed by public-api.py) against the listing
# checked in as engine/public-api.txt. Fails on any difference: a change to the public API is
# made on purpose, by regenerating the listing (`scripts/public-api.sh --bless`) in the same
# commit, where review sees it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
RUSTDOC="$root/scripts/rustdoc-json" cargo rustdoc --quiet --release -p meridian --lib -- \
  -Z unstable-options --output-format json
listing="$(mktemp)"
trap 'rm -f "$listing"' EXIT
python3 "$root/scripts/public-api.py" "$target/doc/meridian.json" > "$listing"
if [[ "${1:-}" == "--bless" ]]; then
  cp "$listing" "$root/engine/public-api.txt"
  echo "engine/public-api.txt: $(wc -l < "$listing") items"
  exit 0
fi
if ! diff -u "$root/engine/public-api.txt" "$listing"; then
  echo "meridian's public API changed (- checked in, + now): if on purpose, run scripts/public-api.sh --bless" >&2
  exit 1
fi
echo "meridian's public API: $(wc -l < "$listing") items, as checked in"
