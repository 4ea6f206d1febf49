#!/usr/bin/env bash
# soak.sh: 1,000 demo scalers for 10 minutes (see footprint.sh); RSS at start
# and end should differ by noise only.
exec bash "$(dirname "$0")/footprint.sh" "${1:-1000}" "${2:-600}"
