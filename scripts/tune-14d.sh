#!/usr/bin/env bash
# tune-14d.sh: how long `qscale tune` takes on a 14-day history (the figure
# in docs/performance.md). Generates a 14-day daily-cycle trace at 1-minute
# resolution, as `qscale history` writes a fortnight of CloudWatch data, and
# times `qscale tune` on config/out-of-the-box.toml with the default
# 60 s budget. Uses target/release/qscale when it exists (build it with
# `cargo build --release`), else the debug binary, and says which.
#   scripts/tune-14d.sh [budget-seconds=60]
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET="${1:-60}"
BIN=target/release/qscale
KIND=release
if [ ! -x "$BIN" ]; then
  cargo build --quiet
  BIN=target/debug/qscale
  KIND=debug
fi
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
"$BIN" simulate --generate-trace "diurnal:min=1,max=30,period=24h,noise=poisson,seed=2" \
  --duration 14d --resolution 60s > "$DIR/14d.csv"
START=$(date +%s.%N)
"$BIN" tune --config config/out-of-the-box.toml --trace "$DIR/14d.csv" \
  --seconds-per-message 1 --budget-seconds "$BUDGET" > "$DIR/out.txt"
END=$(date +%s.%N)
head -2 "$DIR/out.txt"
grep -E "^(replica-seconds|seconds over|scale actions)" "$DIR/out.txt" || true
echo "$KIND build: qscale tune on 14 days took $(awk "BEGIN { printf \"%.1f\", $END - $START }") s wall (budget ${BUDGET} s)"
