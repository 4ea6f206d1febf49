#!/usr/bin/env bash
# bench.sh: the benchmarks that print figures (docs/performance.md lists
# the figures measured with each).
#   scripts/bench.sh policy     criterion: one policy decision
#   scripts/bench.sh simulate   criterion: the simulator
#   scripts/bench.sh reaction   first message -> scale write on a real apiserver
#   scripts/bench.sh footprint  RSS and CPU of `qscale run` with 1,000 demo scalers
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  policy) cargo bench --bench policy ;;
  simulate) cargo bench --bench simulate ;;
  reaction)
    source scripts/peers.sh
    start_peers
    cargo test --release --test reaction_bench -- --ignored --nocapture
    ;;
  footprint) bash scripts/footprint.sh "${2:-1000}" "${3:-60}" ;;
  *) echo "usage: $0 {policy|simulate|reaction|footprint [scalers] [seconds]}" >&2; exit 2 ;;
esac
