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
# moto serves KMS and S3 on loopback for tests/kms.rs and the VM's block-mode KMS cases (which
# reach it through tests/vm/kms-relay.py, stopped by tests/vm/run.sh); stopped whatever happens.
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

# The FIPS build (docs/SECURITY.md §5b): the codec unit tests and the format vectors on aws-lc's
# FIPS module. Same target dir: only aws-lc-fips-sys, the crates above aws-lc-rs (rustls, the
# AWS SDK) and secretfs are compiled again, beside the main build's artifacts (≈ 8 CPU-minutes).
# It compiles in the background at the lowest priority through the next steps, which use no
# cargo on target/ (the VM and the suites boot a copy of the binary taken now: this build
# replaces target/debug/secretfs until the next cargo command puts the main one back; the
# fuzzers build in fuzz/target), and is collected after them with its output in one piece.
# Measured on the 2-core machine: ≈ 7 min alone; overlapped with the VM and both suites it was
# done when they were, which took 405 s instead of 235 s (the first suite slows while the
# compiler runs): ≈ 3 min added to the run instead of 7.
ci_bin_dir=$(mktemp -d /tmp/secretfs-ci-bin.XXXXXX)
# (No binary if the build above failed: the steps below then say so and fail on their own.)
cp "${CARGO_TARGET_DIR:-target}/debug/secretfs" "$ci_bin_dir/secretfs" || true
fips_log=$(mktemp /tmp/secretfs-fips.XXXXXX)
fips_started=$SECONDS
nice -n 19 bash -c 'cargo test --quiet --features fips --lib crypto:: &&
    cargo test --quiet --features fips --test format_vectors &&
    cargo clippy --quiet --features fips --all-targets -- -D warnings' >"$fips_log" 2>&1 &
fips_pid=$!
step "block mode on real dm-crypt in a QEMU guest (tests/vm)" \
    bash tests/vm/run.sh "$ci_bin_dir/secretfs"
step "pjdfstest and fsx on a mounted secretfs" \
    env SECRETFS_BIN="$ci_bin_dir/secretfs" bash tests/suites/run.sh
step "pjdfstest and fsx with the kernel writeback cache (-o writeback)" \
    env SECRETFS_BIN="$ci_bin_dir/secretfs" SECRETFS_SUITE_OPTS=writeback bash tests/suites/run.sh
step "fuzz targets (config, block, names, mount options)" bash fuzz/run.sh
fips_collect() {
    local rc=0 waited=$SECONDS
    wait "$fips_pid" || rc=$?
    cat "$fips_log"
    echo "fips: $((SECONDS - fips_started)) s from its start, $((SECONDS - waited)) s waited for after the fuzzers"
    return "$rc"
}
step "FIPS build (--features fips): codec unit tests and format vectors on the FIPS module, clippy" fips_collect
rm -rf "$ci_bin_dir" "$fips_log"
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
