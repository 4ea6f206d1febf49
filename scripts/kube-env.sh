#!/usr/bin/env bash
# kube-env.sh: a real kube-apiserver + etcd on 127.0.0.1 for integration tests
# (envtest style: no kubelet, no controller-manager, no scheduler).
#
# Usage: scripts/kube-env.sh {build|start|stop|status|env}
#
#   build   install Debian packages if missing, fetch Debian's `kubernetes`
#           source package (1.20.2) and build kube-apiserver with Go 1.19 into
#           $QSCALE_KUBE_CACHE/bin (3-7 min on 2 cores; skipped when the cached
#           binary runs `--version` and was built by the current recipe).
#   start   build if needed, then start etcd + kube-apiserver in the background,
#           write kubeconfigs and an env file; no-op if already running+healthy.
#   stop    stop both processes and remove the run dir.
#   status  show whether it runs and is healthy (exit 0 if healthy, 1 if not).
#   env     print the env file of a running instance.
#
# Users (static token file): `admin` (group system:masters) and `limited`
# (no RBAC grants at all: expect 403 Forbidden). RBAC authorization is on.
# TLS: a fresh CA per start; the serving cert covers 127.0.0.1 and localhost.
#
# Environment (all optional):
#   QSCALE_KUBE_CACHE        build cache       (default: $HOME/.cache/qscale-kube)
#   QSCALE_KUBE_RUN          run dir           (default: /tmp/qscale-kube)
#   QSCALE_KUBE_PORT         apiserver port    (default: 16443)
#   QSCALE_KUBE_ETCD_PORT    etcd client port  (default: 23790)
#   QSCALE_KUBE_ETCD_PEER_PORT etcd peer port  (default: 23800)
#   QSCALE_KUBE_WAIT         readiness timeout in seconds (default: 120)
#
# After `start`, `source "$QSCALE_KUBE_RUN/env"` exports:
#   KUBECONFIG, QSCALE_KUBE_URL, QSCALE_KUBE_TOKEN, QSCALE_KUBE_LIMITED_TOKEN,
#   QSCALE_KUBE_CA, QSCALE_KUBE_LIMITED_KUBECONFIG
set -euo pipefail

CACHE="${QSCALE_KUBE_CACHE:-${HOME:-/root}/.cache/qscale-kube}"
RUN="${QSCALE_KUBE_RUN:-/tmp/qscale-kube}"
API_PORT="${QSCALE_KUBE_PORT:-16443}"
ETCD_PORT="${QSCALE_KUBE_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${QSCALE_KUBE_ETCD_PEER_PORT:-23800}"
WAIT_SECS="${QSCALE_KUBE_WAIT:-120}"

APISERVER="$CACHE/bin/kube-apiserver"
GOROOT_DEB=/usr/lib/go-1.19
ETCD_BIN=/usr/bin/etcd
API_URL="https://127.0.0.1:${API_PORT}"
RUN_PACKAGES=(etcd-server openssl curl ca-certificates)
BUILD_PACKAGES=(golang-1.19-go golang-github-modern-go-reflect2-dev rsync dpkg-dev make)
# Bump when the build recipe changes: a cached binary with another stamp is rebuilt.
BUILD_RECIPE=2

log() { printf 'kube-env: %s\n' "$*" >&2; }
warn() { printf 'kube-env: WARNING: %s\n' "$*" >&2; }
die() { printf 'kube-env: ERROR: %s\n' "$*" >&2; exit 1; }

# Refuse obviously dangerous run dirs since `stop` removes it recursively.
case "$RUN" in
  "" | / | /tmp | /tmp/ | "${HOME:-/root}" | "${HOME:-/root}/") die "refusing to use QSCALE_KUBE_RUN='$RUN'" ;;
esac

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# ---------------------------------------------------------------- build ---

apt_updated=0
apt_update() {
  [ "$apt_updated" -eq 1 ] && return 0
  log "apt-get update"
  # Third-party repositories may be unreachable; what matters is Debian's.
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>"$CACHE/apt-update.err"; then
    warn "apt-get update reported errors (continuing):"
    sed 's/^/    /' "$CACHE/apt-update.err" >&2 || true
  fi
  apt_updated=1
}

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

ensure_packages() { # package...
  local missing=() p
  for p in "$@"; do
    pkg_installed "$p" || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "apt packages present: $*"
    return 0
  fi
  local t0=$SECONDS
  apt_update
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >"$CACHE/apt-install.log" 2>&1 \
    || { tail -n 30 "$CACHE/apt-install.log" >&2; die "apt-get install failed"; }
  log "packages installed in $((SECONDS - t0))s"
}

# Add a deb-src entry for Debian (separate file; existing entries untouched).
ensure_deb_src() {
  if apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes'; then
    return 0
  fi
  local codename f=/etc/apt/sources.list.d/qscale-debian-src.sources
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  if [ ! -f "$f" ]; then
    log "adding deb-src entry $f ($codename)"
    as_root tee "$f" >/dev/null <<EOF
# Added by qscale scripts/kube-env.sh (source of Debian's kubernetes package).
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: ${codename} ${codename}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: ${codename}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  apt_updated=0
  apt_update
  apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes' \
    || die "source package 'kubernetes' not found even after adding $f"
}

apiserver_ok() {
  [ -x "$APISERVER" ] && "$APISERVER" --version >/dev/null 2>&1 \
    && [ "$(cat "$APISERVER.recipe" 2>/dev/null)" = "$BUILD_RECIPE" ]
}

# Kubernetes 1.20 vendors github.com/modern-go/reflect2 v1.0.1, which compiles
# with Go >= 1.18 but panics at run time (nil pointer in reflect2.Type2 while
# json-iterator builds a map decoder, i.e. on the first JSON request body).
# Swap in Debian's reflect2 1.0.2 (same API, Go 1.18+ support).
patch_vendor() { # src
  local v="$1/vendor/github.com/modern-go/reflect2"
  local deb=/usr/share/gocode/src/github.com/modern-go/reflect2
  [ -f "$v/.qscale-debian-reflect2" ] && return 0
  [ -f "$deb/go_above_118.go" ] || die "$deb lacks go_above_118.go (need golang-github-modern-go-reflect2-dev >= 1.0.2)"
  log "replacing vendored reflect2 v1.0.1 with Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev) (Go 1.18+ fix)"
  rm -f "$v"/*.go "$v"/*.s
  cp "$deb"/*.go "$deb"/*.s "$v"/
  touch "$v/.qscale-debian-reflect2"
}

do_build() {
  mkdir -p "$CACHE"
  if apiserver_ok; then
    log "kube-apiserver cached: $APISERVER ($("$APISERVER" --version 2>&1))"
    return 0
  fi
  # Serialize concurrent builds (e.g. two test runs calling start at once).
  exec 8>"$CACHE/build.lock"
  log "waiting for build lock $CACHE/build.lock"
  flock 8
  if apiserver_ok; then
    log "kube-apiserver was built by a concurrent run: $APISERVER"
    return 0
  fi

  local t_all=$SECONDS t0
  ensure_packages "${BUILD_PACKAGES[@]}" "${RUN_PACKAGES[@]}"
  [ -x "$GOROOT_DEB/bin/go" ] || die "$GOROOT_DEB/bin/go missing after install"

  local gopath="$CACHE/gopath"
  local src="$gopath/src/k8s.io/kubernetes"
  if [ ! -f "$src/.qscale-unpacked" ]; then
    t0=$SECONDS
    ensure_deb_src
    local dl="$CACHE/download"
    rm -rf "$dl" "$src"
    mkdir -p "$dl" "$(dirname "$src")"
    log "apt-get source --download-only kubernetes -> $dl"
    (cd "$dl" && apt-get source -q --download-only kubernetes >"$CACHE/apt-source.log" 2>&1) \
      || { tail -n 30 "$CACHE/apt-source.log" >&2; die "apt-get source failed"; }
    local dsc
    dsc="$(ls "$dl"/kubernetes_*.dsc | head -n1)"
    log "unpacking $(basename "$dsc") -> $src"
    dpkg-source -x --no-check "$dsc" "$src" >"$CACHE/dpkg-source.log" 2>&1 \
      || { tail -n 30 "$CACHE/dpkg-source.log" >&2; die "dpkg-source -x failed"; }
    touch "$src/.qscale-unpacked"
    rm -rf "$dl"
    log "source ready in $((SECONDS - t0))s"
  else
    log "source cached: $src"
  fi

  patch_vendor "$src"

  # Version: Debian's "1.20.5+really1.20.2-1.1+deb12u1" -> v1.20.2
  local debver ver
  debver="$(cd "$src" && dpkg-parsechangelog -S Version)"
  ver="${debver##*really}"; ver="${ver%%-*}"; ver="${ver%%+*}"
  local major="${ver%%.*}" minor
  minor="${ver#*.}"; minor="${minor%%.*}"
  log "building kube-apiserver v$ver (Debian $debver)"

  export GOROOT="$GOROOT_DEB"
  export PATH="$GOROOT_DEB/bin:$PATH"
  export GOPATH="$gopath"
  export GOCACHE="$CACHE/gocache"
  export GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOFLAGS= GOTOOLCHAIN=local

  t0=$SECONDS
  log "make gen_openapi (log: $CACHE/gen_openapi.log)"
  (cd "$src" && make gen_openapi >"$CACHE/gen_openapi.log" 2>&1) \
    || { tail -n 40 "$CACHE/gen_openapi.log" >&2; die "make gen_openapi failed"; }
  log "gen_openapi done in $((SECONDS - t0))s"

  t0=$SECONDS
  local pkg=k8s.io/kubernetes/vendor/k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=v$ver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  mkdir -p "$CACHE/bin"
  log "go build ./cmd/kube-apiserver (log: $CACHE/go-build.log)"
  (cd "$src" && go build -o "$APISERVER.tmp" -ldflags "$ldflags" ./cmd/kube-apiserver \
      >"$CACHE/go-build.log" 2>&1) \
    || { tail -n 40 "$CACHE/go-build.log" >&2; die "go build failed"; }
  mv -f "$APISERVER.tmp" "$APISERVER"
  echo "$BUILD_RECIPE" >"$APISERVER.recipe"
  log "go build done in $((SECONDS - t0))s"
  apiserver_ok || die "built binary does not run --version"
  log "built $APISERVER ($("$APISERVER" --version 2>&1)) in $((SECONDS - t_all))s total"
}

# ---------------------------------------------------------------- start ---

pid_alive() { # pidfile expected-name
  local f="$1" name="$2" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name"
}

admin_token() { sed -n 's/^\([^,]*\),admin,.*/\1/p' "$RUN/tokens.csv" 2>/dev/null | head -n1; }

http_code() { # path [token]
  local token="${2:-$(admin_token)}"
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$RUN/pki/ca.crt" \
    -H "Authorization: Bearer $token" "$API_URL$1" 2>/dev/null || true
}

healthy() {
  pid_alive "$RUN/etcd.pid" etcd && pid_alive "$RUN/kube-apiserver.pid" kube-apiserver \
    && [ -f "$RUN/env" ] && [ "$(http_code /readyz)" = 200 ]
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

gen_pki() {
  local d="$RUN/pki"
  mkdir -p "$d"
  chmod 700 "$d"
  log "generating CA, serving cert and service-account key in $d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
    -keyout "$d/ca.key" -out "$d/ca.crt" -subj "/CN=qscale-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$d/apiserver.key" \
    -out "$d/apiserver.csr" -subj "/CN=kube-apiserver" >/dev/null 2>&1
  cat >"$d/apiserver.ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
EOF
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$d/apiserver.ext" \
    -out "$d/apiserver.crt" >/dev/null 2>&1
  openssl genrsa -out "$d/sa.key" 2048 >/dev/null 2>&1
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" >/dev/null 2>&1
}

write_kubeconfig() { # file user token
  local cadata
  cadata="$(base64 -w0 <"$RUN/pki/ca.crt")"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: qscale-test
  cluster:
    server: $API_URL
    certificate-authority-data: $cadata
users:
- name: $2
  user:
    token: $3
contexts:
- name: qscale-test
  context:
    cluster: qscale-test
    user: $2
    namespace: default
current-context: qscale-test
EOF
  chmod 600 "$1"
}

start_bg() { # name logfile cmd...
  local name="$1" logf="$2"
  shift 2
  # setsid: own session, so the daemon survives the caller's process group.
  # 8>&- 9>&-: the daemons must not inherit (and so hold) our lock files.
  setsid "$@" >"$logf" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$RUN/$name.pid"
}

# Our own freshly started child still exists (not exited/zombie). Unlike
# pid_alive this does not look at the command line, which right after the
# fork may not yet show the exec'd program.
child_alive() { # name
  local pid
  pid="$(cat "$RUN/$1.pid" 2>/dev/null)" || return 1
  pid_running "$pid"
}

pid_running() { # pid: exists and is not a zombie
  local state
  state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

fail_start() {
  warn "$1"
  local f
  for f in "$RUN/etcd.log" "$RUN/kube-apiserver.log"; do
    [ -f "$f" ] || continue
    printf 'kube-env: ---- last lines of %s ----\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
  do_stop >/dev/null 2>&1 || true
  die "start failed"
}

# start/stop of one run dir are serialized (e.g. parallel test processes).
lock_run() {
  mkdir -p "$(dirname "$RUN")"
  exec 9>"$RUN.lock"
  flock -w 300 9 || die "could not lock $RUN.lock within 300s"
}

do_start() {
  if healthy; then
    log "already running and healthy at $API_URL"
    cat "$RUN/env"
    return 0
  fi
  if [ -e "$RUN" ]; then
    log "stale or unhealthy instance in $RUN: stopping it first"
    do_stop
  fi
  do_build
  mkdir -p "$CACHE"
  ensure_packages "${RUN_PACKAGES[@]}"
  [ -x "$ETCD_BIN" ] || die "$ETCD_BIN missing (package etcd-server)"

  local p
  for p in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"; do
    port_free "$p" || die "port 127.0.0.1:$p is already in use (override with QSCALE_KUBE_PORT / QSCALE_KUBE_ETCD_PORT / QSCALE_KUBE_ETCD_PEER_PORT)"
  done

  local t0=$SECONDS
  mkdir -p "$RUN"
  chmod 700 "$RUN"
  gen_pki

  local admin_tok limited_tok
  admin_tok="$(openssl rand -hex 24)"
  limited_tok="$(openssl rand -hex 24)"
  umask 077
  {
    printf '%s,admin,admin,"system:masters"\n' "$admin_tok"
    printf '%s,limited,limited\n' "$limited_tok"
  } >"$RUN/tokens.csv"
  umask 022

  log "starting etcd on 127.0.0.1:$ETCD_PORT (peer $ETCD_PEER_PORT), data $RUN/etcd-data"
  start_bg etcd "$RUN/etcd.log" "$ETCD_BIN" \
    --name qscale-test \
    --data-dir "$RUN/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "qscale-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new \
    --listen-metrics-urls "" \
    --quota-backend-bytes 1073741824
  local i
  for ((i = 0; i < 60; i++)); do
    child_alive etcd || fail_start "etcd exited"
    if curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'; then
      break
    fi
    sleep 0.5
  done
  [ "$i" -lt 60 ] || fail_start "etcd not healthy after 30s"
  log "etcd healthy after $((SECONDS - t0))s"

  # Notes on the flags (kube-apiserver 1.20):
  # --insecure-port 0: 1.20 still opens an unauthenticated port 8080 by default.
  # --endpoint-reconciler-type none: the default reconciler tries to publish the
  #   advertise address (127.0.0.1) as endpoints of service `kubernetes`, which
  #   validation rejects (loopback) and logs an error every 10 s.
  # --disable-admission-plugins ServiceAccount: no controller-manager creates the
  #   `default` service account, so Pods could not be created otherwise.
  log "starting kube-apiserver on $API_URL"
  start_bg kube-apiserver "$RUN/kube-apiserver.log" "$APISERVER" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 \
    --advertise-address 127.0.0.1 \
    --secure-port "$API_PORT" \
    --insecure-port 0 \
    --cert-dir "$RUN/pki" \
    --tls-cert-file "$RUN/pki/apiserver.crt" \
    --tls-private-key-file "$RUN/pki/apiserver.key" \
    --client-ca-file "$RUN/pki/ca.crt" \
    --token-auth-file "$RUN/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer "https://kubernetes.default.svc" \
    --service-account-key-file "$RUN/pki/sa.pub" \
    --service-account-signing-key-file "$RUN/pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type none \
    --disable-admission-plugins ServiceAccount \
    --allow-privileged=true \
    --profiling=false \
    --v=1

  local deadline=$((SECONDS + WAIT_SECS)) code=""
  while :; do
    child_alive kube-apiserver || fail_start "kube-apiserver exited"
    code="$(http_code /readyz "$admin_tok")"
    [ "$code" = 200 ] && break
    [ "$SECONDS" -ge "$deadline" ] && fail_start "kube-apiserver /readyz not OK after ${WAIT_SECS}s (last HTTP code: ${code:-none})"
    sleep 1
  done
  log "kube-apiserver ready after $((SECONDS - t0))s"

  # The apiserver creates the `default` namespace itself shortly after start.
  while [ "$(http_code /api/v1/namespaces/default "$admin_tok")" != 200 ]; do
    [ "$SECONDS" -ge "$deadline" ] && fail_start "namespace 'default' did not appear within ${WAIT_SECS}s"
    sleep 1
  done
  log "namespace 'default' exists"

  write_kubeconfig "$RUN/kubeconfig" admin "$admin_tok"
  write_kubeconfig "$RUN/kubeconfig-limited" limited "$limited_tok"
  cat >"$RUN/env" <<EOF
export KUBECONFIG=$RUN/kubeconfig
export QSCALE_KUBE_URL=$API_URL
export QSCALE_KUBE_TOKEN=$admin_tok
export QSCALE_KUBE_LIMITED_TOKEN=$limited_tok
export QSCALE_KUBE_CA=$RUN/pki/ca.crt
export QSCALE_KUBE_LIMITED_KUBECONFIG=$RUN/kubeconfig-limited
EOF
  chmod 600 "$RUN/env"
  log "started in $((SECONDS - t0))s; env file: $RUN/env (source it)"
  cat "$RUN/env"
}

# ----------------------------------------------------------------- stop ---

stop_one() { # name expected-cmd
  local f="$RUN/$1.pid" pid i
  pid_alive "$f" "$2" || return 0
  pid="$(cat "$f")"
  log "stopping $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do
    pid_running "$pid" || return 0
    sleep 0.25
  done
  warn "$1 (pid $pid) did not exit after 10s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 20; i++)); do
    pid_running "$pid" || return 0
    sleep 0.25
  done
}

do_stop() {
  if [ ! -e "$RUN" ]; then
    log "not running (no $RUN)"
    return 0
  fi
  stop_one kube-apiserver kube-apiserver
  stop_one etcd etcd
  rm -rf -- "$RUN"
  log "stopped; removed $RUN"
}

# --------------------------------------------------------------- status ---

do_status() {
  local a=stopped e=stopped
  pid_alive "$RUN/etcd.pid" etcd && e="running (pid $(cat "$RUN/etcd.pid"))"
  pid_alive "$RUN/kube-apiserver.pid" kube-apiserver && a="running (pid $(cat "$RUN/kube-apiserver.pid"))"
  log "run dir:        $RUN"
  log "cache:          $CACHE ($(apiserver_ok && "$APISERVER" --version 2>&1 || echo 'kube-apiserver not built'))"
  log "etcd:           $e, http://127.0.0.1:$ETCD_PORT"
  log "kube-apiserver: $a, $API_URL"
  if healthy; then
    log "health:         /readyz OK"
    cat "$RUN/env"
    return 0
  fi
  log "health:         not healthy"
  return 1
}

do_env() {
  healthy || die "not running/healthy; run: $0 start"
  cat "$RUN/env"
}

case "${1:-}" in
  build) do_build ;;
  start) lock_run; do_start ;;
  stop) lock_run; do_stop ;;
  status) do_status ;;
  env) do_env ;;
  *)
    echo "usage: $0 {build|start|stop|status|env}" >&2
    exit 2
    ;;
esac
