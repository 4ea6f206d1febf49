#!/usr/bin/env bash
# test.sh: the project's whole test suite, exactly as CI runs it.
#
# Starts the real peers the integration tests talk to (moto for SQS,
# CloudWatch and ECS; a real kube-apiserver + etcd; see scripts/peers.sh;
# RabbitMQ, Redis, NATS and PostgreSQL; see scripts/brokers.sh; a real
# Prometheus, which also brings promtool; see scripts/prometheus.sh; a
# headless Chromium for the daemon's HTML page; see scripts/chromium.sh),
# then checks formatting and lints, fuzzes each parser for a bounded time
# (scripts/fuzz.sh), then runs every test (among them
# tests/layering.rs, which fails when a module imports a layer above it;
# see docs/architecture.md), then a short smoke of the control benchmark.
# Usage: bash scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/peers.sh
source scripts/peers.sh
start_peers
# shellcheck source=scripts/brokers.sh
source scripts/brokers.sh
ensure_brokers
# shellcheck source=scripts/prometheus.sh
source scripts/prometheus.sh
ensure_prometheus
# shellcheck source=scripts/chromium.sh
source scripts/chromium.sh
ensure_chromium

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
# Coverage-guided fuzzing needs no peers; bounded time per target (10 s
# each under CI=true, where the cold build of the targets dominates).
bash scripts/fuzz.sh
echo "== cargo test"
cargo test --all-targets --no-fail-fast "$@"
# A one-minute-per-controller slice of the end-to-end control benchmark,
# so it cannot rot: it fails on errors (a peer, the daemon, the harness),
# never on a figure (docs/performance.md, "Control benchmark").
echo "== control benchmark smoke"
QSCALE_BENCH_SMOKE=1 cargo test --test control_bench -- --ignored --nocapture
