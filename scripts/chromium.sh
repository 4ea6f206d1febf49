#!/usr/bin/env bash
# chromium.sh: a real headless Chromium (Debian's `chromium` package) for
# tests/timeline_page.rs, which loads the daemon's HTML index page and its
# SVG charts the way a browser does (--dump-dom, --screenshot) rather than
# trusting string checks on the markup.
#
# Idempotent: the package is installed only when /usr/bin/chromium (or
# $QSCALE_CHROMIUM) is missing. Sourced by scripts/test.sh (ensure_chromium
# exports QSCALE_TEST_CHROMIUM), or run: scripts/chromium.sh

chromium_say() { printf 'chromium: %s\n' "$*" >&2; }

install_chromium() {
  if command -v chromium >/dev/null 2>&1; then
    return 0
  fi
  chromium_say "installing Debian's chromium package"
  local apt=(apt-get -o DPkg::Lock::Timeout=300 -y -qq --no-install-recommends)
  # A fresh machine may have no package lists yet: update once, then retry.
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install chromium >/dev/null 2>&1 || {
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 &&
      DEBIAN_FRONTEND=noninteractive "${apt[@]}" install chromium >&2
  } || { chromium_say "apt-get install chromium failed"; return 1; }
}

ensure_chromium() {
  local bin="${QSCALE_CHROMIUM:-}"
  if [ -z "$bin" ]; then
    install_chromium || return 1
    bin="$(command -v chromium)"
  fi
  if ! "$bin" --version >/dev/null 2>&1; then
    chromium_say "$bin does not run ($bin --version failed)"
    return 1
  fi
  chromium_say "Chromium: $("$bin" --version 2>/dev/null)"
  export QSCALE_TEST_CHROMIUM="$bin"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  ensure_chromium
fi
