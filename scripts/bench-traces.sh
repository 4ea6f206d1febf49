#!/usr/bin/env bash
# bench-traces.sh: (re)generate the 30-minute traces of the control benchmark
# (scripts/bench.sh control) with the simulator's deterministic generator,
# so the files in traces/ are reproducible byte for byte.
#   traces/flash-crowd.csv  2 min quiet, 4 min at ~20 msg/s, then ~1 msg/s
#   traces/batch.csv        a drop of ~1500 messages at 1 min and every 15 min, nothing between
#   traces/ramp.csv         rising from 0 to ~25 msg/s over 30 min
#   traces/diurnal-30m.csv  a day's cycle squeezed into 30 min, 1 to 25 msg/s
set -euo pipefail
cd "$(dirname "$0")/.."
gen() { cargo run --quiet -- simulate --generate-trace "$1" --duration "$2"; }
# Concatenate generated segments, shifting each one's t_seconds by the
# length of the ones before it (a flash crowd is three constant segments).
{
  echo "t_seconds,arrivals"
  gen "constant:rate=0" 2m | tail -n +2
  gen "constant:rate=20,noise=poisson,seed=3" 4m | tail -n +2 | awk -F, '{print $1+120","$2}'
  gen "constant:rate=1,noise=poisson,seed=4" 24m | tail -n +2 | awk -F, '{print $1+360","$2}'
} > traces/flash-crowd.csv
gen "burst:base=0,size=1500,at=1m,every=15m,noise=poisson,seed=5" 30m > traces/batch.csv
gen "sawtooth:min=0,max=25,period=30m,noise=poisson,seed=6" 30m > traces/ramp.csv
gen "diurnal:min=1,max=25,period=30m,noise=poisson,seed=7" 30m > traces/diurnal-30m.csv
