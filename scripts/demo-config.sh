#!/usr/bin/env bash
# demo-config.sh: print a config of N demo scalers at a 1 s poll, serving
# HTTP on 127.0.0.1:PORT: the load that scripts/footprint.sh and
# scripts/poll-cost.sh measure. Each scaler's queue takes a burst of 200
# messages every 2 minutes, the bursts spread over the minute.
#   scripts/demo-config.sh N PORT > file.toml
set -euo pipefail
N="$1"
PORT="$2"
printf '[server]\nlisten = "127.0.0.1:%s"\n[defaults]\npoll_interval = "1s"\n' "$PORT"
for i in $(seq 1 "$N"); do
  cat <<TOML
[[scaler]]
name = "demo-$i"
[scaler.source]
kind = "demo"
queue = "q$i"
pattern = "burst:base=1,size=200,at=$((i % 60))s,every=2m"
[scaler.target]
kind = "demo"
queue = "q$i"
seconds_per_message = 0.5
startup_delay = "5s"
[scaler.policy]
min_replicas = 1
max_replicas = 20
messages_per_replica = 20
max_message_age = "30s"
[scaler.policy.scale_down]
stabilization = "20s"
TOML
done
