#!/usr/bin/env bash
# release-bin.sh: print the qscale binary a measurement script should run:
# $QSCALE_BIN when set (to set two builds side by side), else a release
# build of this checkout, built first (cargo's output goes to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${QSCALE_BIN:-}" ]]; then
  echo "$QSCALE_BIN"
else
  cargo build --release --quiet >&2
  echo target/release/qscale
fi
