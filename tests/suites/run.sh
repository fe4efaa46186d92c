#!/usr/bin/env bash
# Mounts a fresh keyfile secretfs and runs pjdfstest (must report 0 failed) and fsx
# (100,000 operations of the full mix) on it. Needs root and the suites installed.
# SECRETFS_SUITE_OPTS adds mount options (e.g. `writeback`) so each mode gets the same suites.
set -Eeuo pipefail
trap 'echo "suites: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/../.."
# SECRETFS_BIN: a binary built before (test-all.sh passes one while the FIPS build holds cargo).
bin=${SECRETFS_BIN:-}
if [ -z "$bin" ]; then
    cargo build --quiet
    bin=$PWD/target/debug/secretfs
fi
conf=$PWD/tests/suites
work=$(mktemp -d /tmp/secretfs-suites.XXXXXX)
cleanup() {
    "$bin" umount --lazy "$work/mnt" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
chmod 0755 "$work"  # pjdfstest switches to unprivileged users, who must reach the mount
mkdir -p "$work/mnt"
"$bin" init "$work/backing" --key "keyfile:$work/key" >/dev/null
"$bin" mount "$work/backing" "$work/mnt" \
    -o "allow_other,log=$work/daemon.log${SECRETFS_SUITE_OPTS:+,$SECRETFS_SUITE_OPTS}"
chmod 0755 "$work/mnt"

mkdir "$work/mnt/pjd"
chmod 0777 "$work/mnt/pjd"
pjd_rc=0
(cd "$work/mnt/pjd" && pjdfstest -c "$conf/pjdfstest.toml" -p "$work/mnt/pjd" -s /dev/shm) > "$work/pjd.out" 2>&1 || pjd_rc=$?
grep -E "FAILED" -A3 "$work/pjd.out" || true
summary=$(grep '^Summary:' "$work/pjd.out" || echo "Summary: no result")
echo "pjdfstest${SECRETFS_SUITE_OPTS:+ (-o $SECRETFS_SUITE_OPTS)} $summary (exit $pjd_rc)"
# Every test must have run and passed: a run that stops early or skips more than it did
# is a failure too. 384 is what secretfs passes with this config (plain ext4: 385).
expected_passed=${PJDFSTEST_EXPECTED_PASSED:-384}
passed=$(echo "$summary" | sed -n 's/.* \([0-9]*\) passed.*/\1/p')
case "$summary" in
    "Summary: 0 failed,"*) ;;
    *) tail -n 30 "$work/pjd.out"; exit 1 ;;
esac
if [ "$pjd_rc" -ne 0 ] || [ "${passed:-0}" -lt "$expected_passed" ]; then
    echo "pjdfstest: exit $pjd_rc, $passed passed; expected exit 0 and at least $expected_passed passed" >&2
    tail -n 30 "$work/pjd.out"
    exit 1
fi

mkdir "$work/mnt/fsx"
ops=${FSX_OPS:-100000}
# Seed 42 replays the same operations everywhere; a fresh seed each run (a third as many
# operations) finds new sequences. FSX_SEED=N replays a fresh run's failure.
fresh_seed=${FSX_SEED:-$(( $(date +%s%N) % 2147483647 ))}
for run in "42 $ops" "$fresh_seed $(( ops / 3 ))"; do
    set -- $run
    if fsx -f "$conf/fsx.toml" -N "$2" -S "$1" -P "$work" "$work/mnt/fsx/fsx-$1.file" > "$work/fsx.out" 2>&1; then
        echo "fsx: seed $1, $2 operations, $(tail -n 1 "$work/fsx.out")"
    else
        echo "fsx failed with seed $1 (FSX_SEED=$1 replays it):" >&2
        tail -n 40 "$work/fsx.out"
        exit 1
    fi
done
if grep -q 'integrity_failure' "$work/daemon.log"; then
    echo "the daemon logged integrity failures during the suites:" >&2
    grep -m 10 'integrity_failure' "$work/daemon.log" >&2
    exit 1
fi
