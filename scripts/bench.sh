#!/usr/bin/env bash
# bench.sh: the benchmarks that print figures (docs/performance.md lists
# the figures measured with each).
#   scripts/bench.sh policy     criterion: one policy decision
#   scripts/bench.sh simulate   criterion: the simulator
#   scripts/bench.sh reaction   first message -> scale write on a real apiserver
#   scripts/bench.sh footprint  RSS and CPU of `qscale run` with 1,000 demo scalers
#   scripts/bench.sh poll-cost  the daemon's own instructions per demo poll (callgrind)
#   scripts/bench.sh control [trace] [--smoke]
#                               qscale run vs a KEDA+HPA model on a real queue (a Redis
#                               list; QSCALE_BENCH_QUEUE=sqs for moto) and a real
#                               apiserver, a 30-min trace at x10 (QSCALE_BENCH_SCALE);
#                               trace: a file or a name in traces/ (default flash-crowd);
#                               --smoke: a 5-min slice, ~1 min per controller; fails on
#                               errors and on a run that moved nothing, never on a figure
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
  control)
    shift
    trace="" smoke=0
    for a in "$@"; do
      case "$a" in
        --smoke) smoke=1 ;;
        *) trace="$a" ;;
      esac
    done
    source scripts/peers.sh
    start_peers
    source scripts/brokers.sh
    ensure_brokers
    QSCALE_BENCH_TRACE="$trace" QSCALE_BENCH_SMOKE="$smoke" \
      cargo test --test control_bench -- --ignored --nocapture
    ;;
  footprint) bash scripts/footprint.sh "${2:-1000}" "${3:-60}" ;;
  poll-cost) bash scripts/poll-cost.sh "${2:-300}" "${3:-30}" ;;
  *) echo "usage: $0 {policy|simulate|reaction|control [trace] [--smoke]|footprint [scalers] [seconds]|poll-cost [scalers] [seconds]}" >&2; exit 2 ;;
esac
