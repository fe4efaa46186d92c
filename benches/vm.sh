#!/usr/bin/env bash
# Block mode against file mode and plain, in one VM with real kernel dm-crypt (this host kernel
# has no device-mapper): boots the project's test VM (tests/vm/run.sh) with benches/vm-guest.sh,
# then renders the guest's results.json into results.md and chart.svg on the host.
#
# Usage: benches/vm.sh [--quick|--smoke] [--out DIR] [-- MORE_BENCH_ARGS...]
#   --smoke: one tiny round, only to prove the whole path works (CI runs it)
#   SECRETFS_BIN=path   use this secretfs instead of building a release one with the control
#   SECRETFS_BENCH_BIN=path   the benchmark to run (default: the secretfs-bench beside it)
# The guest CPU is emulated (QEMU TCG, no KVM here): compare systems within the run, never the
# absolute figures with a host run.
set -Eeuo pipefail
trap 'echo "vm bench: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
root=$(cd "$(dirname "$0")/.." && pwd)
quick=0
out=$root/bench-results/vm
extra=()
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --smoke) quick=2 ;;
        --out) out=$2; shift ;;
        --) shift; extra=("$@"); break ;;
        *) echo "usage: benches/vm.sh [--quick|--smoke] [--out DIR] [-- MORE_BENCH_ARGS...]" >&2; exit 2 ;;
    esac
    shift
done

bin=${SECRETFS_BIN:-}
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release --quiet -p secretfs -p secretfs-bench --features secretfs/passthrough-control)
    bin=${CARGO_TARGET_DIR:-$root/target}/release/secretfs
fi
bench=${SECRETFS_BENCH_BIN:-$(dirname "$bin")/secretfs-bench}
[ -x "$bench" ] || { echo "vm bench: no secretfs-bench at $bench (cargo build -p secretfs-bench)" >&2; exit 2; }

work=$(mktemp -d /tmp/secretfs-vm-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The guest's disk store, and the tree as a raw tar on its own disk (tar pads to 10 KiB).
truncate -s 4G "$work/disk.img"
if [ "$quick" = 2 ]; then
    tar -cf "$work/tree.tar" -C /usr/include/linux netfilter
else
    tar -cf "$work/tree.tar" -C /usr/include linux
fi
if [ "$quick" = 2 ]; then
    args="--quick --rounds 1 --size 8M --rand-ops 100 --files 50 --rss-rounds 1 --stores tmpfs"
    timeout_s=600
elif [ "$quick" = 1 ]; then
    # Emulated CPUs run ~100x slower: sizes are small even for the full run.
    args="--quick --size 16M --rand-ops 300 --files 200 --rss-rounds 2 --stores tmpfs"
    timeout_s=900
else
    args="--size 32M --rand-ops 500 --files 300 --rss-rounds 3 --stores tmpfs,disk"
    timeout_s=5400
fi
printf 'BENCH_ARGS="%s"\n' "$args ${extra[*]:-}" >"$work/guest.env"

SECRETFS_VM_GUEST=$root/benches/vm-guest.sh SECRETFS_VM_GUEST_ENV=$work/guest.env SECRETFS_VM_BINS=$bench \
    SECRETFS_VM_MEM=2048 SECRETFS_VM_DRIVES="$work/disk.img $work/tree.tar" \
    SECRETFS_VM_RESULTS=$work/results SECRETFS_VM_TIMEOUT=$timeout_s SECRETFS_VM_SHOW_CONSOLE=1 SECRETFS_VM_APPEND=loglevel=1 \
    bash "$root/tests/vm/run.sh" "$bin"

mkdir -p "$out"
sed -n '/^BENCH-JSON-BEGIN$/,/^BENCH-JSON-END$/p' "$work/results" | sed '1d;$d' >"$out/results.json"
"$bench" --render "$out/results.json" --out "$out"
echo "vm bench: $out/results.json, $out/results.md, $out/chart.svg" >&2
