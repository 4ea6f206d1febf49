#!/usr/bin/env bash
# poll-cost.sh: the daemon's own instructions per demo poll, counted by
# valgrind's callgrind (instructions, not seconds: the same binary gives the
# same count whatever else the machine does). Runs `qscale run` (release
# build) under callgrind with N demo scalers at a 1 s poll (the footprint
# load, scripts/demo-config.sh), zeroes the counters after a warm-up, dumps
# them S seconds later and prints instructions per poll, the simulated demo
# queue's share, and the rest: the daemon's own cost. To turn it into time,
# multiply by the CPU seconds per poll that scripts/footprint.sh measures.
# Only 127.0.0.1 is involved; it stops by itself.
#   scripts/poll-cost.sh [scalers=300] [seconds=30] [port=19091]
# QSCALE_BIN=<binary> measures that binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-300}"
SECS="${2:-30}"
PORT="${3:-19091}"
WARMUP=25
for tool in valgrind callgrind_control callgrind_annotate; do
  command -v "$tool" >/dev/null || { echo "poll-cost: $tool not found (apt-get install valgrind)" >&2; exit 1; }
done
BIN="$(bash scripts/release-bin.sh)"
DIR="$(mktemp -d)"
PID=""
trap '[[ -n "$PID" ]] && kill -9 "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT
CFG="$DIR/demo.toml"
bash scripts/demo-config.sh "$N" "$PORT" >"$CFG"
"$BIN" check "$CFG" | tail -1
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" \
  "$BIN" run --config "$CFG" 2>"$DIR/log" &
PID=$!
sleep "$WARMUP"
callgrind_control --zero "$PID" >/dev/null 2>&1
sleep "$SECS"
callgrind_control --dump "$PID" >/dev/null 2>&1
# The dump is written as cg.out.1 while the program runs on.
for _ in $(seq 1 100); do [[ -s "$DIR/cg.out.1" ]] && break; sleep 0.1; done
kill -9 "$PID" 2>/dev/null || true
wait "$PID" 2>/dev/null || true
PID=""
DUMP="$DIR/cg.out.1"
[[ -s "$DUMP" ]] || { echo "poll-cost: callgrind wrote no dump (log: $(tail -3 "$DIR/log"))" >&2; exit 1; }
total=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
# Polls: the calls of the control loop's decision step, the largest count
# among its call sites.
polls=$(callgrind_annotate --threshold=100 --tree=caller "$DUMP" 2>/dev/null |
  grep -o 'Scaler::decide_on ([0-9,]*x)' | grep -o '[0-9,]*x' | tr -d ',x' | sort -n | tail -1)
# The simulated queue: what the demo world's two entry points cost, inclusive.
demo=$(callgrind_annotate --inclusive=yes --threshold=100 "$DUMP" 2>/dev/null |
  awk '/world::demo::DemoQueue::(snapshot_at|set_replicas_at) / {gsub(",", "", $1); s += $1} END {print s + 0}')
if [[ -z "$total" || -z "$polls" || "$polls" -eq 0 ]]; then
  echo "poll-cost: could not read the profile (total '$total', polls '$polls')" >&2
  exit 1
fi
awk -v n="$N" -v s="$SECS" -v t="$total" -v p="$polls" -v d="$demo" 'BEGIN {
  printf "scalers %d, %d s counted after a %d s warm-up: %.1f M instructions over %d polls: %d per poll, the demo queue %d (%.1f %%), the daemon'"'"'s own %d\n",
    n, s, '"$WARMUP"', t / 1e6, p, t / p, d / p, 100 * d / t, (t - d) / p }'
