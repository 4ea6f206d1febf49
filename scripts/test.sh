#!/usr/bin/env bash
# test.sh: the project's whole test suite, exactly as CI runs it.
#
# Starts the real peers the integration tests talk to (moto for SQS,
# CloudWatch and ECS; a real kube-apiserver + etcd; see scripts/peers.sh;
# RabbitMQ, Redis, NATS and PostgreSQL; see scripts/brokers.sh; a real
# Prometheus, which also brings promtool; see scripts/prometheus.sh),
# then checks formatting and lints, then runs every test (among them
# tests/layering.rs, which fails when a module imports a layer above it;
# see docs/architecture.md).
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

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets --no-fail-fast "$@"
