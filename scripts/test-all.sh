#!/usr/bin/env bash
# Runs every test secretfs has, as root on Debian 12: lint, unit and property tests, the
# integration tests on real FUSE mounts, pjdfstest and fsx on a mounted filesystem.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --with-suites
export PATH="$HOME/.cargo/bin:$PATH"
export RUST_BACKTRACE=0

passed=0
failed=0
step() {
    local name=$1
    shift
    echo "=== $name"
    if "$@"; then
        passed=$((passed + 1))
    else
        echo "=== FAILED: $name"
        failed=$((failed + 1))
    fi
}

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --all-targets --quiet -- -D warnings
step "cargo test (unit, property, integration on real mounts)" cargo test --workspace
step "pjdfstest and fsx on a mounted secretfs" bash tests/suites/run.sh
step "fuzz targets (config, block, names, mount options)" bash fuzz/run.sh
step "criterion benches in test mode" cargo bench --quiet --bench codec -- --test

echo "test-all: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
