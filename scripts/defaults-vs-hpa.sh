#!/usr/bin/env bash
# defaults-vs-hpa.sh: qscale's defaults against KEDA+HPA, in the simulator.
#
# Replays eight 30-minute traces (two each of a flash crowd, batch drops
# every 15 min, a ramp and a diurnal swing) through config/out-of-the-box.toml
# (what a new user writes: messages_per_replica, max_message_age, bounds) and
# through the simulator's KEDA+HPA baseline with the same
# messages_per_replica; workers take 2 s per message and 30 s to start.
# Prints one row per trace; the figures in docs/policy.md ("Why these
# defaults") come from this script. tests/simulate.rs holds the same claims
# as a test.
# Usage: bash scripts/defaults-vs-hpa.sh [path/to/qscale]
set -euo pipefail
cd "$(dirname "$0")/.."
Q="${1:-target/release/qscale}"
if [[ ! -x "$Q" ]]; then
  cargo build --release --quiet
fi
TRACES=(
  "flash-crowd|burst:base=2,size=1500,at=5m,noise=poisson,seed=1"
  "batch|burst:base=1,size=600,at=1m,every=15m,noise=poisson,seed=2"
  "ramp|sawtooth:min=0,max=40,period=30m,noise=poisson,seed=3"
  "diurnal|diurnal:min=1,max=30,period=30m,noise=poisson,seed=4"
  "flash-crowd-2|burst:base=3,size=2500,at=10m,noise=poisson,seed=11"
  "batch-2|burst:base=0,size=900,at=2m,every=15m,noise=poisson,seed=12"
  "step|step:from=2,to=25,at=5m,noise=poisson,seed=13"
  "diurnal-2|diurnal:min=0,max=50,period=30m,noise=poisson,seed=14"
)
printf '%-14s %-13s %-11s  %-22s  %s\n' trace "over 2m (s)" "p95 age (s)" "idle replica-s" actions
for row in "${TRACES[@]}"; do
  name="${row%%|*}"
  pattern="${row#*|}"
  total=$("$Q" simulate --generate-trace "$pattern" --duration 30m | awk -F, 'NR>1{s+=$2}END{print s}')
  json=$("$Q" simulate --config config/out-of-the-box.toml --trace "$pattern" --duration 30m \
    --compare hpa --seconds-per-message 2 --startup-delay 30s --output json)
  python3 - "$name" "$total" "$json" <<'PY'
import json, sys
name, total, d = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
q, h = d["qscale"], d["hpa"]
busy = 2 * total
iq, ih = q["replica_seconds"] - busy, h["replica_seconds"] - busy
over = f"{q['seconds_over_objective']:>5} / {h['seconds_over_objective']:<5}"
p95 = f"{q['age_p95_seconds']:>4.0f} / {h['age_p95_seconds']:<4.0f}"
acts = f"{q['scale_actions']:>3} / {h['scale_actions']:<3}"
print(f"{name:<14} {over} {p95}  {iq:>6} / {ih:<6} = {iq / ih:4.2f}  {acts}")
PY
done
echo "(each cell: qscale / KEDA+HPA; idle replica-s = replica-seconds - 2 s x messages)"
