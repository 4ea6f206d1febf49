#!/usr/bin/env bash
# footprint.sh: run `qscale run` (release build) with N demo scalers for S
# seconds at a 1 s poll interval and print RSS at start and end, CPU% over
# the run, scale actions and errors. Only 127.0.0.1 is involved; it stops
# by itself.
#   scripts/footprint.sh [scalers=1000] [seconds=60] [port=19090]
# QSCALE_BIN=<binary> measures that binary instead of building one (to set
# two builds side by side).
# scripts/soak.sh runs it for 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
SECS="${2:-60}"
PORT="${3:-19090}"
BIN="$(bash scripts/release-bin.sh)"
DIR="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT
CFG="$DIR/footprint.toml"
bash scripts/demo-config.sh "$N" "$PORT" >"$CFG"
"$BIN" check "$CFG" | tail -1
RUST_LOG=warn "$BIN" run --config "$CFG" 2>"$DIR/log" &
PID=$!
tick=$(getconf CLK_TCK)
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz" 2>/dev/null && break; sleep 0.1; done
sleep 5 # let every scaler complete its first polls
rss0=$(rss); cpu0=$(cpu); t0=$(date +%s.%N)
sleep "$SECS"
rss1=$(rss); cpu1=$(cpu); t1=$(date +%s.%N)
metrics=$(curl -fsS "http://127.0.0.1:$PORT/metrics")
actions=$(printf '%s\n' "$metrics" | awk '/^qscale_scale_operations_total/ {s += $2} END {print s + 0}')
errors=$(printf '%s\n' "$metrics" | awk '/^qscale_(source|target)_errors_total/ {s += $2} END {print s + 0}')
ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")
awk -v n="$N" -v s="$SECS" -v r0="$rss0" -v r1="$rss1" -v c0="$cpu0" -v c1="$cpu1" -v t0="$t0" -v t1="$t1" -v tk="$tick" \
    -v a="$actions" -v e="$errors" -v rd="$ready" 'BEGIN {
  printf "scalers %d, poll 1 s, %d s measured: RSS start %.1f MiB, end %.1f MiB; CPU %.1f %% of one core; scale actions %d; errors %d; /readyz %s\n",
    n, s, r0 / 1024, r1 / 1024, 100 * (c1 - c0) / tk / (t1 - t0), a, e, rd }'
kill -TERM "$PID"; wait "$PID" || true
