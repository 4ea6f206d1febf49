#!/usr/bin/env bash
# peers.sh: make sure every real peer the tests talk to runs on 127.0.0.1.
#
#   moto     AWS SQS, CloudWatch and ECS (moto[server] from PyPI, pinned),
#            on $QSCALE_MOTO_PORT (default 5000)
#   kube     a real kube-apiserver + etcd (scripts/kube-env.sh; built once and
#            cached outside the clone)
#
# Sourced by scripts/test.sh; it exports the QSCALE_TEST_* variables the tests
# read. Each step is idempotent: a peer that already answers is left alone.
# Usage as a command: scripts/peers.sh {start|stop}

MOTO_VERSION="5.2.5"
MOTO_PORT="${QSCALE_MOTO_PORT:-5000}"
PEERS_RUN="${QSCALE_PEERS_RUN:-/tmp/qscale-peers}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf 'peers: %s\n' "$*" >&2; }

ensure_moto() {
  mkdir -p "$PEERS_RUN"
  if ! python3 -c "import moto, sys; sys.exit(0 if moto.__version__ == '$MOTO_VERSION' else 1)" 2>/dev/null \
     || ! command -v moto_server >/dev/null 2>&1; then
    say "installing moto[server]==$MOTO_VERSION from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
  fi
  local url="http://127.0.0.1:$MOTO_PORT"
  if ! curl -fsS -o /dev/null "$url/moto-api/" 2>/dev/null; then
    say "starting moto_server on $url"
    nohup moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$PEERS_RUN/moto.log" 2>&1 &
    echo $! >"$PEERS_RUN/moto.pid"
    for _ in $(seq 1 60); do
      curl -fsS -o /dev/null "$url/moto-api/" 2>/dev/null && break
      sleep 0.5
    done
    curl -fsS -o /dev/null "$url/moto-api/" || { tail -20 "$PEERS_RUN/moto.log" >&2; say "moto did not start"; return 1; }
  fi
  export QSCALE_TEST_MOTO_URL="$url"
  # The AWS SDK reads these; moto accepts any credentials.
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true
}

ensure_kube() {
  bash "$HERE/kube-env.sh" start >/dev/null
  # shellcheck disable=SC1091
  source "${QSCALE_KUBE_RUN:-/tmp/qscale-kube}/env"
  export QSCALE_TEST_KUBECONFIG="$KUBECONFIG"
  export QSCALE_TEST_KUBECONFIG_LIMITED="$QSCALE_KUBE_LIMITED_KUBECONFIG"
}

start_peers() {
  ensure_moto
  ensure_kube
}

stop_peers() {
  if [ -f "$PEERS_RUN/moto.pid" ]; then kill "$(cat "$PEERS_RUN/moto.pid")" 2>/dev/null || true; rm -f "$PEERS_RUN/moto.pid"; fi
  bash "$HERE/kube-env.sh" stop || true
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-start}" in
    start) start_peers; env | grep -E '^(QSCALE_TEST_|KUBECONFIG=|AWS_)' | sort ;;
    stop) stop_peers ;;
    *) echo "usage: $0 {start|stop}" >&2; exit 2 ;;
  esac
fi
