#!/bin/sh
# Runs `secretfs-bench` (which drives the /bin/secretfs beside it) inside the project VM, where
# the kernel has dm-crypt: plain, the control, file mode and block mode side by side on the
# guest's tmpfs and on ext4 on a virtio disk (vdc).
# The tree to untar is the raw tar on vdd. Results go to the results port ($1) as JSON.
# (The writeback variant of file mode is left to the host run: this run is about block mode.)
R=${1:-/dev/stdout}
export PATH=/sbin:/bin:/usr/sbin:/usr/bin RUST_BACKTRACE=0
BENCH_ARGS=
. /guest.env
fail() {
    echo "FAIL bench" >"$R"
    sed 's/^/    /' "$1" | tail -n 40 >"$R"
    echo DONE >"$R"
    exit 0
}
{ mke2fs -q -t ext4 -F /dev/vdc && mkdir -p /disk && mount /dev/vdc /disk; } >/tmp/setup.log 2>&1 || fail /tmp/setup.log
# Progress goes to the console (benches/vm.sh shows it live), the report to the results port.
: >/tmp/bench.err
tail -f /tmp/bench.err >/dev/console &
follow=$!
# shellcheck disable=SC2086 # BENCH_ARGS is a list of words
if secretfs-bench $BENCH_ARGS --systems plain,control,secretfs,block --tree /dev/vdd --disk-dir /disk --out /tmp/bench \
    >/tmp/bench.md 2>>/tmp/bench.err; then
    sleep 1
    kill "$follow"
    {
        echo BENCH-JSON-BEGIN
        cat /tmp/bench/results.json
        echo
        echo BENCH-JSON-END
        echo "PASS bench"
    } >"$R"
else
    sleep 1
    kill "$follow"
    fail /tmp/bench.err
fi
echo DONE >"$R"
