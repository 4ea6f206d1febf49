#!/usr/bin/env bash
# brokers.sh: make sure the real brokers the source tests talk to run on
# 127.0.0.1, starting any that is down with the machine's own commands.
#
#   RabbitMQ  AMQP 5672, management API 15672 (guest/guest; the management
#             plugin is enabled here if it is off)
#   Redis     6379
#   NATS      4222 with JetStream
#   Postgres  5432 (trust auth, user postgres, database test)
#
# Idempotent: a broker that already answers is left alone. Every wait is
# bounded; on failure the script says which broker and where its log is,
# and exits non-zero. Sourced by scripts/test.sh (ensure_brokers), or run
# directly: scripts/brokers.sh

BROKERS_WAIT_SECONDS="${QSCALE_BROKERS_WAIT_SECONDS:-90}"

brokers_say() { printf 'brokers: %s\n' "$*" >&2; }

# port_open PORT: true when something accepts TCP connections on it.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for DESCRIPTION COMMAND...: retry COMMAND every half second until it
# succeeds or BROKERS_WAIT_SECONDS pass.
wait_for() {
  local what="$1"; shift
  local tries=$((BROKERS_WAIT_SECONDS * 2))
  for _ in $(seq 1 "$tries"); do
    if "$@"; then return 0; fi
    sleep 0.5
  done
  brokers_say "$what did not come up within ${BROKERS_WAIT_SECONDS}s"
  return 1
}

management_answers() {
  curl -fsS -o /dev/null -u guest:guest http://127.0.0.1:15672/api/overview 2>/dev/null
}

ensure_rabbitmq() {
  if ! port_open 5672; then
    brokers_say "starting RabbitMQ (rabbitmq-server -detached)"
    rabbitmq-server -detached
    wait_for "RabbitMQ AMQP on 127.0.0.1:5672 (log: /var/log/rabbitmq/)" port_open 5672 || return 1
  fi
  if ! management_answers; then
    if ! rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_management; then
      brokers_say "enabling the RabbitMQ management plugin"
      rabbitmq-plugins enable rabbitmq_management >/dev/null
    fi
    wait_for "RabbitMQ management API on 127.0.0.1:15672" management_answers || return 1
  fi
  brokers_say "RabbitMQ: AMQP 5672 and management API 15672 answer"
}

ensure_redis() {
  if ! port_open 6379; then
    brokers_say "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for "Redis on 127.0.0.1:6379 (log: /var/log/redis/ci.log)" port_open 6379 || return 1
  fi
  brokers_say "Redis: 6379 answers"
}

ensure_nats() {
  if ! port_open 4222; then
    brokers_say "starting NATS with JetStream"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_for "NATS on 127.0.0.1:4222 (log: /var/log/nats-server.log)" port_open 4222 || return 1
  fi
  brokers_say "NATS: 4222 answers"
}

postgres_answers() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || port_open 5432; }

ensure_postgres() {
  if ! port_open 5432; then
    brokers_say "starting PostgreSQL"
    # shellcheck disable=SC2046
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
    wait_for "PostgreSQL on 127.0.0.1:5432 (log: /var/log/postgresql/)" postgres_answers || return 1
  fi
  brokers_say "PostgreSQL: 5432 answers"
}

ensure_brokers() {
  ensure_rabbitmq && ensure_redis && ensure_nats && ensure_postgres
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ensure_brokers
fi
