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
# Each run starts from the kept seed corpus, fuzz/corpus/<target>/, which it
# only reads; what libFuzzer finds goes to a scratch corpus under
# fuzz/target/, kept between local runs and never committed. A crash leaves
# its input in fuzz/artifacts/<target>/; to keep one as a regression seed,
# fix the library, add a unit test, and copy the input into the kept corpus.
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

flags=(--sanitizer none --dev)

echo "== cargo fuzz build (${targets})"
start=$(date +%s)
# shellcheck disable=SC2086 # one word per target
for t in $targets; do
    cargo fuzz build "${flags[@]}" "$t"
done
echo "   built in $(( $(date +%s) - start )) s"

for t in $targets; do
    scratch="fuzz/target/corpus/$t"
    mkdir -p "$scratch"
    echo "== cargo fuzz run $t (${secs} s)"
    # -timeout: an input that takes a second is a hang worth failing on.
    # -rss_limit_mb: the alias-bomb class of bug shows up as memory.
    if ! cargo fuzz run "${flags[@]}" "$t" "$scratch" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 \
        -print_final_stats=1 >"fuzz/target/$t.log" 2>&1; then
        tail -n 60 "fuzz/target/$t.log"
        echo "fuzz target $t failed: the crashing input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|stat::peak_rss_mb)' \
        "fuzz/target/$t.log" | sed 's/^/   /'
done
