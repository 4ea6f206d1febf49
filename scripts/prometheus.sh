#!/usr/bin/env bash
# prometheus.sh: a real Prometheus server (Debian's `prometheus` package,
# 2.42, which also brings `promtool`) for the Prometheus source's tests and
# the promtool checks of the alert rules.
#
#   Prometheus  127.0.0.1:$QSCALE_PROMETHEUS_PORT (default 19390), basic auth
#               from tests/fixtures/prometheus/web.yml (user qscale-test)
#   state       $QSCALE_PROMETHEUS_RUN (default /tmp/qscale-prometheus):
#               prometheus.yml, web.yml, data/, targets/, prometheus.log
#
# There is no systemd here, so the server is started in the background with
# its own config and data directory, never the package's /etc/prometheus.
# It scrapes every second whatever targets the tests announce: a test serves
# its own /metrics on a loopback port and writes targets/<name>.json
# (file_sd), so several test runs can share one server without meeting.
#
# Idempotent: the package is installed only when missing, and a server that
# already answers with this config is left alone. Sourced by scripts/test.sh
# (ensure_prometheus exports QSCALE_TEST_PROMETHEUS_URL,
# QSCALE_TEST_PROMETHEUS_TARGETS_DIR and QSCALE_TEST_PROMETHEUS_DATA_DIR, where
# tests/history.rs backfills blocks with promtool; the server loads new blocks
# from its data directory by itself, within about a minute), or run:
# scripts/prometheus.sh {start|stop}

PROMETHEUS_PORT="${QSCALE_PROMETHEUS_PORT:-19390}"
PROMETHEUS_RUN="${QSCALE_PROMETHEUS_RUN:-/tmp/qscale-prometheus}"
PROMETHEUS_WAIT_SECONDS="${QSCALE_PROMETHEUS_WAIT_SECONDS:-60}"
PROMETHEUS_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The fixture's user and password (its bcrypt hash is in web.yml).
PROMETHEUS_USER="qscale-test"
PROMETHEUS_PASSWORD="qscale-test-secret"

prometheus_say() { printf 'prometheus: %s\n' "$*" >&2; }

install_prometheus() {
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  prometheus_say "installing Debian's prometheus package (prometheus + promtool)"
  local apt=(apt-get -o DPkg::Lock::Timeout=300 -y -qq --no-install-recommends)
  # A fresh machine may have no package lists yet: update once, then retry.
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install prometheus >/dev/null 2>&1 || {
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 &&
      DEBIAN_FRONTEND=noninteractive "${apt[@]}" install prometheus >&2
  } || { prometheus_say "apt-get install prometheus failed"; return 1; }
}

prometheus_url() { printf 'http://127.0.0.1:%s' "$PROMETHEUS_PORT"; }

prometheus_ready() {
  curl -fsS -o /dev/null -m 2 -u "$PROMETHEUS_USER:$PROMETHEUS_PASSWORD" \
    "$(prometheus_url)/-/ready" 2>/dev/null
}

# The running server reads this run directory's targets (and not another
# checkout's or the package's): its loaded config names our targets dir.
prometheus_is_ours() {
  curl -fsS -m 2 -u "$PROMETHEUS_USER:$PROMETHEUS_PASSWORD" \
    "$(prometheus_url)/api/v1/status/config" 2>/dev/null |
    grep -qF "$PROMETHEUS_RUN/targets/"
}

write_prometheus_config() {
  mkdir -p "$PROMETHEUS_RUN/targets" "$PROMETHEUS_RUN/data"
  cp "$PROMETHEUS_HERE/../tests/fixtures/prometheus/web.yml" "$PROMETHEUS_RUN/web.yml"
  cat >"$PROMETHEUS_RUN/prometheus.yml" <<EOF
# Written by scripts/prometheus.sh; scrapes what tests announce in targets/.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: qscale-test
    file_sd_configs:
      - files: ['$PROMETHEUS_RUN/targets/*.json']
        refresh_interval: 2s
EOF
}

ensure_prometheus() {
  install_prometheus || return 1
  local url
  url="$(prometheus_url)"
  if prometheus_ready; then
    if ! prometheus_is_ours; then
      prometheus_say "something on $url answers but does not read $PROMETHEUS_RUN/targets;" \
        "stop it or set QSCALE_PROMETHEUS_PORT / QSCALE_PROMETHEUS_RUN"
      return 1
    fi
  else
    if (exec 3<>"/dev/tcp/127.0.0.1/$PROMETHEUS_PORT") 2>/dev/null; then
      prometheus_say "port $PROMETHEUS_PORT is taken by something that is not this test Prometheus;" \
        "set QSCALE_PROMETHEUS_PORT to a free port"
      return 1
    fi
    write_prometheus_config
    prometheus_say "starting Prometheus on $url (log: $PROMETHEUS_RUN/prometheus.log)"
    nohup prometheus \
      --config.file="$PROMETHEUS_RUN/prometheus.yml" \
      --web.config.file="$PROMETHEUS_RUN/web.yml" \
      --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
      --storage.tsdb.path="$PROMETHEUS_RUN/data" \
      --storage.tsdb.retention.time=2h \
      >"$PROMETHEUS_RUN/prometheus.log" 2>&1 &
    echo $! >"$PROMETHEUS_RUN/prometheus.pid"
    local tries=$((PROMETHEUS_WAIT_SECONDS * 2))
    for _ in $(seq 1 "$tries"); do
      prometheus_ready && break
      sleep 0.5
    done
    if ! prometheus_ready; then
      tail -20 "$PROMETHEUS_RUN/prometheus.log" >&2
      prometheus_say "Prometheus did not become ready on $url within ${PROMETHEUS_WAIT_SECONDS}s"
      return 1
    fi
  fi
  prometheus_say "Prometheus: $url answers (promtool $(promtool --version 2>&1 | awk 'NR==1{print $3}'))"
  export QSCALE_TEST_PROMETHEUS_URL="$url"
  export QSCALE_TEST_PROMETHEUS_TARGETS_DIR="$PROMETHEUS_RUN/targets"
  export QSCALE_TEST_PROMETHEUS_DATA_DIR="$PROMETHEUS_RUN/data"
}

stop_prometheus() {
  if [ -f "$PROMETHEUS_RUN/prometheus.pid" ]; then
    kill "$(cat "$PROMETHEUS_RUN/prometheus.pid")" 2>/dev/null || true
    rm -f "$PROMETHEUS_RUN/prometheus.pid"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-start}" in
    start) ensure_prometheus ;;
    stop) stop_prometheus ;;
    *) echo "usage: $0 {start|stop}" >&2; exit 2 ;;
  esac
fi
