#!/usr/bin/env bash
# tune-vs-e2e.sh: does a policy `qscale tune` proposes do end to end what
# the simulator promised? (issue 16: "figures agree with the end-to-end
# control benchmark within the simulator's calibration").
#
# 1. `qscale tune` on config/out-of-the-box.toml and a bundled trace, with
#    the benchmark's model (2 s per message, 30 s start-up);
# 2. `qscale simulate` of the current config and of the proposal merged in,
#    the figures the user sees when tuning;
# 3. the end-to-end control benchmark (Redis list, real kube-apiserver, x10)
#    with the proposal merged into its scaler (QSCALE_BENCH_SNIPPET).
# Prints the simulated and the measured figures one after the other.
# Needs the peers of scripts/bench.sh control; takes ~4 min per trace.
#   scripts/tune-vs-e2e.sh [trace=batch] [budget-seconds=60]
set -euo pipefail
cd "$(dirname "$0")/.."
TRACE="${1:-batch}"
BUDGET="${2:-60}"
BIN=target/release/qscale
if [ ! -x "$BIN" ]; then
  cargo build --quiet
  BIN=target/debug/qscale
fi
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
MODEL=(--seconds-per-message 2 --startup-delay 30s)
"$BIN" tune --config config/out-of-the-box.toml --trace "traces/$TRACE.csv" "${MODEL[@]}" \
  --budget-seconds "$BUDGET" --output json > "$DIR/tune.json"
python3 - "$DIR" <<'PY'
import json, sys, tomllib
d = sys.argv[1]
t = json.load(open(f"{d}/tune.json"))
open(f"{d}/snippet.toml", "w").write(t["snippet"])
print("== tune's proposal")
print(t["snippet"].strip())
PY
# The proposal merged into the config file, as the report tells a user to.
python3 - config/out-of-the-box.toml "$DIR/snippet.toml" "$DIR/tuned.toml" <<'PY'
import sys, tomllib
def deep(into, frm):
    for k, v in frm.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            deep(into[k], v)
        else:
            into[k] = v
def dump(t, prefix=""):
    out, tables = [], []
    for k, v in t.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                out.append(f"[[{prefix}{k}]]")
                out.append(dump(item, f"{prefix}{k}."))
        else:
            out.append(f"{k} = {json_value(v)}")
    for k, v in tables:
        out.append(f"[{prefix}{k}]")
        out.append(dump(v, f"{prefix}{k}."))
    return "\n".join(out)
def json_value(v):
    import json
    return "true" if v is True else "false" if v is False else json.dumps(v)
cfg = tomllib.load(open(sys.argv[1], "rb"))
snip = tomllib.load(open(sys.argv[2], "rb"))["scaler"][0]
deep(cfg["scaler"][0], snip)
open(sys.argv[3], "w").write(dump(cfg) + "\n")
PY
echo "== simulated (qscale simulate, the tuner's model)"
for c in config/out-of-the-box.toml "$DIR/tuned.toml"; do
  "$BIN" simulate --config "$c" --trace "traces/$TRACE.csv" "${MODEL[@]}" --output json |
    python3 -c "
import json, sys
q = json.load(sys.stdin)['qscale']
print('$( [ "$c" = config/out-of-the-box.toml ] && echo current || echo proposal )', 'replica-seconds', q['replica_seconds'],
      'p95 age', q['age_p95_seconds'], 's over', q['seconds_over_objective'], 'actions', q['scale_actions'])"
done
echo "== end to end (control benchmark, the proposal merged in)"
QSCALE_BENCH_SNIPPET="$DIR/snippet.toml" QSCALE_BENCH_CONTROLLERS=qscale \
  bash scripts/bench.sh control "$TRACE"
