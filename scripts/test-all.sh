#!/usr/bin/env bash
# Runs every test secretfs has, as root on Debian 12: lint, unit and property tests, the
# integration tests on real FUSE mounts, block mode (dm-crypt) in a QEMU guest, pjdfstest and fsx
# on a mounted filesystem.
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
step "cargo clippy" cargo clippy --all-targets --workspace --quiet -- -D warnings
step "cargo clippy (bench build with the passthrough control)" \
    cargo clippy --all-targets --quiet --features passthrough-control -- -D warnings
# moto serves KMS and S3 on loopback for tests/kms.rs; stopped whatever happens.
moto_pid=
stop_moto() { if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; fi; }
trap stop_moto EXIT
moto_port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
/opt/secretfs-moto/bin/moto_server -H 127.0.0.1 -p "$moto_port" >/tmp/secretfs-moto.log 2>&1 &
moto_pid=$!
for _ in $(seq 1 60); do
    curl -sf "http://127.0.0.1:$moto_port/moto-api/data.json" >/dev/null && break
    sleep 0.5
done
export SECRETFS_TEST_AWS_ENDPOINT="http://127.0.0.1:$moto_port"

step "cargo test (unit, property, integration on real mounts, KMS/S3 on moto)" \
    cargo test --workspace
# Right after cargo test: target/debug/secretfs is still the featureless test build (the bench
# steps below rebuild it with the passthrough control, which package.sh refuses).
step ".deb and .rpm: dpkg -i, fstab mount -a through the installed helper, man, completion, dpkg -r" \
    bash tests/package/run.sh
step "docs/EC2.md: cloud-init schema, secretfs commands and fstab lines through their parsers" \
    /usr/bin/python3 tests/package/check_ec2_doc.py
step "block mode on real dm-crypt in a QEMU guest (tests/vm)" bash tests/vm/run.sh
step "pjdfstest and fsx on a mounted secretfs" bash tests/suites/run.sh
step "pjdfstest and fsx with the kernel writeback cache (-o writeback)" \
    env SECRETFS_SUITE_OPTS=writeback bash tests/suites/run.sh
step "fuzz targets (config, block, names, mount options)" bash fuzz/run.sh
# cargo test runs each criterion bench once, in the debug build the tests already made.
step "criterion benches in test mode" cargo test --quiet --bench codec

# The comparison benchmark needs the bench-only passthrough control: its tests, then a --quick
# run on the host (plain, control, file mode, gocryptfs) and a one-round run in the VM (block
# mode on real dm-crypt). Smoke tests only: figures from a shared CI machine assert nothing.
step "passthrough control (feature build)" \
    cargo test --quiet --features passthrough-control --test file_mode passthrough_control
# The benchmark is its own binary (bench/, secretfs-bench); it drives the secretfs beside it.
bench_smoke() {
    local out target=${CARGO_TARGET_DIR:-target}
    out=$(mktemp -d /tmp/secretfs-bench-smoke.XXXXXX)
    cargo build --quiet -p secretfs -p secretfs-bench --features secretfs/passthrough-control &&
        cp "$target/debug/secretfs" "$target/debug/secretfs-bench" "$out/" &&
        "$out/secretfs-bench" --quick --out "$out/host" >/dev/null &&
        grep -q '| create small files (s) |' "$out/host/results.md" &&
        grep -q '| control |' "$out/host/results.md" &&
        grep -q '<svg' "$out/host/chart.svg" &&
        "$out/secretfs-bench" --scale --quick --scale-files 1000 --dir-entries 1000 \
            --out "$out/scale" >/dev/null &&
        grep -q '^| secretfs | 1000 |' "$out/scale/scale.md" &&
        SECRETFS_BIN=$out/secretfs bash benches/vm.sh --smoke --out "$out/vm" >/dev/null &&
        grep -q '"block"' "$out/vm/results.json"
    local rc=$?
    rm -rf "$out"
    return $rc
}
step "comparison benchmark smoke (--quick and --scale on the host, --smoke in the VM)" bench_smoke

echo "test-all: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
