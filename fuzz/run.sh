#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS, default 20) starting from the
# checked-in seed corpus; new inputs go to a scratch directory, so the repository is not changed.
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-20}
# cargo-fuzz passes nightly-only -Z flags; the stable toolchain accepts them this way.
export RUSTC_BOOTSTRAP=1
for target in config block names mountopts; do
    scratch=$(mktemp -d)
    echo "fuzz $target for ${secs}s"
    if ! cargo fuzz run "$target" "$scratch" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=2048 > "$scratch.log" 2>&1; then
        tail -n 40 "$scratch.log"
        rm -rf "$scratch" "$scratch.log"
        exit 1
    fi
    grep -E '^Done [0-9]+ runs' "$scratch.log" || tail -n 2 "$scratch.log"
    rm -rf "$scratch" "$scratch.log"
done
