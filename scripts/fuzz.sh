#!/usr/bin/env bash
# fuzz.sh: coverage-guided fuzzing (cargo-fuzz / libFuzzer) of config parsing
# and every peer-response parser, each target for a bounded time; fails when a
# target crashes (a panic in library code is a crash). Needs no peers.
#
# Works on the stable toolchain: `--sanitizer none` keeps cargo-fuzz from
# passing -Zsanitizer, the one flag that needs nightly (libFuzzer's coverage
# instrumentation itself is stable). `--dev` builds without optimisation:
# twice as quick to build from cold on this project's 2-core machines, at
# fewer executions per second (docs/testing.md has the figures).
#
# The build goes to $QSCALE_FUZZ_DIR (default ~/.cache/qscale-fuzz, outside
# the clone, like the apiserver in ~/.cache/qscale-kube): every dependency is
# rebuilt with libFuzzer's instrumentation, about 4 minutes from cold on 2
# cores, and CI's fresh clone on the same machine then only rebuilds qscale.
#
# Each run starts from the kept seed corpus, fuzz/corpus/<target>/, which it
# only reads; what libFuzzer finds goes to a scratch corpus in
# $QSCALE_FUZZ_DIR/corpus/<target>/, kept between local runs (delete it to
# start over; CI uses a fresh one each run) and never committed. A crash leaves its input in
# fuzz/artifacts/<target>/; to keep one as a regression seed, fix the
# library, add a unit test, and copy the input into the kept corpus.
#
# Usage: bash scripts/fuzz.sh [seconds per target]
#   default 20 s per target, 10 s when CI=true (the cold build dominates).
#   QSCALE_FUZZ_TARGETS="config" limits the targets.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${CI:-}" == "true" ]]; then
    default_secs=10
else
    default_secs=20
fi
secs="${1:-$default_secs}"
targets="${QSCALE_FUZZ_TARGETS:-config peer_answers}"

# The version this script was written against; --locked builds it with the
# dependency versions it was released with.
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# libfuzzer-sys compiles libFuzzer itself, which is C++.
if ! command -v c++ >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
fi

work="${QSCALE_FUZZ_DIR:-$HOME/.cache/qscale-fuzz}"
mkdir -p "$work"
flags=(--sanitizer none --dev --target-dir "$work/target")

echo "== cargo fuzz build (${targets})"
start=$(date +%s)
# shellcheck disable=SC2086 # one word per target
for t in $targets; do
    cargo fuzz build "${flags[@]}" "$t"
done
echo "   built in $(( $(date +%s) - start )) s"

for t in $targets; do
    # CI starts each run from the kept corpus alone: replaying everything
    # earlier runs found would eat its time budget (libFuzzer's time limit
    # starts after that replay), and CI must take the same time every run.
    if [[ "${CI:-}" == "true" ]]; then
        scratch="$work/ci-corpus/$t"
        rm -rf "$scratch"
    else
        scratch="$work/corpus/$t"
    fi
    log="$work/$t.log"
    mkdir -p "$scratch"
    echo "== cargo fuzz run $t (${secs} s)"
    # -timeout: an input that takes a second is a hang worth failing on.
    # -rss_limit_mb: the alias-bomb class of bug shows up as memory.
    if ! cargo fuzz run "${flags[@]}" "$t" "$scratch" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $t failed: the crashing input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|stat::peak_rss_mb)' \
        "$log" | sed 's/^/   /'
done
