#!/usr/bin/env bash
# Block mode against real kernel dm-crypt: boots Debian's cloud kernel under QEMU (TCG; this
# host kernel has no device-mapper) with a busybox initramfs holding secretfs, cryptsetup and
# e2fsprogs, runs tests/vm/guest-tests.sh there and reads the results from a second serial port.
#
# Usage: tests/vm/run.sh [SECRETFS_BINARY]   (default: $CARGO_TARGET_DIR or target, debug)
#        SECRETFS_VM_CASES=open_blank_formats,close tests/vm/run.sh   (a subset, comma-separated)
# Block mode with a KMS key (the kms_* cases) needs the moto emulator on this host:
#   SECRETFS_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT (scripts/test-all.sh starts moto and sets it).
#   The guest has no network: a key is made in moto before boot, and tests/vm/kms-relay.py carries
#   the guest's HTTP between a virtio-serial port (a unix socket here) and moto, logging each
#   request. Without the variable those cases are skipped, visibly; under CI=true a skip fails.
# The comparison benchmark (benches/vm.sh) reuses this VM with another guest script:
#   SECRETFS_VM_GUEST=script  SECRETFS_VM_GUEST_ENV=file (sourced by the guest as /guest.env)
#   SECRETFS_VM_MEM=MiB  SECRETFS_VM_DRIVES="img ..." (vdc, vdd, ... after the two test disks)
#   SECRETFS_VM_RESULTS=file (a copy of everything the guest wrote on its results port)
#   SECRETFS_VM_SHOW_CONSOLE=1 (stream the guest console to stderr while it runs)
#   SECRETFS_VM_APPEND="..." (more kernel parameters)
#   SECRETFS_VM_BINS="prog ..." (more programs, e.g. secretfs-bench, in the guest's /bin by name)
# Needs (scripts/install-deps.sh): qemu-system-x86 cpio busybox-static cryptsetup-bin e2fsprogs
# kmod dash util-linux dmsetup, and the cloud kernel .deb unpacked under $SECRETFS_VM_CACHE.
set -Eeuo pipefail
# Never die silently: name the command that failed. (Pipelines here read their input to the
# end: an `awk ...; exit` would let the writer die of SIGPIPE, which pipefail turns into a
# failure at random.)
trap 'echo "vm: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$root/target}/debug/secretfs}
cache=${SECRETFS_VM_CACHE:-/var/cache/secretfs-vm}
timeout_s=${SECRETFS_VM_TIMEOUT:-300}
guest=${SECRETFS_VM_GUEST:-$here/guest-tests.sh}

[ -x "$bin" ] || { echo "vm: no secretfs binary at $bin (cargo build first)" >&2; exit 2; }
for tool in qemu-system-x86_64 cpio busybox cryptsetup dmsetup mke2fs dash depmod modprobe; do
    command -v "$tool" >/dev/null || { echo "vm: $tool missing: run scripts/install-deps.sh" >&2; exit 2; }
done

# The kernel: unpacked from the .deb (never installed on the host), modules indexed once.
mkdir -p "$cache"
if ! ls "$cache"/kernel/boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1; then
    ver=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ && !v {v = $2} END {print v}')
    (cd "$cache" && apt-get download -q "$ver" 2>/dev/null)
    dpkg-deb -x "$(ls "$cache"/linux-image-*-cloud-amd64_*.deb | sort -V | tail -1)" "$cache/kernel"
fi
vmlinuz=$(ls "$cache"/kernel/boot/vmlinuz-*-cloud-amd64 | sort -V | tail -1)
kver=${vmlinuz##*/vmlinuz-}
[ -f "$cache/kernel/lib/modules/$kver/modules.dep" ] || depmod -b "$cache/kernel" "$kver"

work=$(mktemp -d /tmp/secretfs-vm.XXXXXX)
relay_pid=
cleanup() {
    if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,proc,sys,dev,tmp,mnt,etc,run,data,modules}

# Copies an ELF and every library ldd names (plus libgcc_s, which cryptsetup's argon2 threads
# dlopen without ldd seeing it).
copy_elf() {
    install -D -m 0755 "$1" "$rootfs$2"
    ldd "$1" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
        [ -e "$rootfs$lib" ] || install -D -m 0755 "$lib" "$rootfs$lib"
    done
}

# busybox for the basics, but dash as /bin/sh: busybox ash prefers its own applets over PATH,
# and its mke2fs would shadow e2fsprogs.
install -m 0755 "$(command -v busybox)" "$rootfs/bin/busybox"
for applet in $(busybox --list); do
    case $applet in sh|mke2fs|mkfs.ext2|mkfs.ext3|mkfs.ext4|mount|umount|blkid|losetup) continue ;; esac
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
copy_elf "$(command -v dash)" /bin/sh
copy_elf "$(command -v cryptsetup)" /sbin/cryptsetup
copy_elf "$(command -v dmsetup)" /sbin/dmsetup
# coreutils dd beside busybox's, which has no oflag=sync (the durability case writes O_SYNC).
copy_elf "$(command -v dd)" /usr/bin/dd
copy_elf "$(command -v mke2fs)" /sbin/mke2fs
for n in mkfs.ext4 mkfs.ext2; do ln -s mke2fs "$rootfs/sbin/$n"; done
copy_elf "$(command -v blkid)" /sbin/blkid
copy_elf "$(command -v losetup)" /sbin/losetup
# util-linux mount/umount: they keep utab, which routes `umount` of a block mount to
# umount.secretfs (uhelper=secretfs).
copy_elf /usr/bin/mount /bin/mount
copy_elf /usr/bin/umount /bin/umount
libgcc=$(ldconfig -p | awk '/libgcc_s.so.1 .*x86-64/ && !p {p = $NF} END {print p}')
install -D -m 0755 "$libgcc" "$rootfs$libgcc"
strip -o "$work/secretfs" "$bin"
copy_elf "$work/secretfs" /bin/secretfs
ln -s /bin/secretfs "$rootfs/sbin/mount.secretfs"
ln -s /bin/secretfs "$rootfs/sbin/umount.secretfs"
for prog in ${SECRETFS_VM_BINS:-}; do
    strip -o "$work/${prog##*/}" "$prog"
    copy_elf "$work/${prog##*/}" "/bin/${prog##*/}"
done
install -m 0755 "$guest" "$rootfs/guest-tests.sh"
if [ -n "${SECRETFS_VM_GUEST_ENV:-}" ]; then install -m 0644 "$SECRETFS_VM_GUEST_ENV" "$rootfs/guest.env"; fi

# Kernel modules in dependency order.
: >"$rootfs/modules/order"
for m in virtio_pci virtio_blk virtio_console dm-mod dm-crypt dm-flakey xts ecb cryptd crypto_simd aesni-intel af_alg algif_skcipher loop fuse; do
    modprobe -d "$cache/kernel" -S "$kver" --show-depends "$m"
done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' | while read -r ko; do
    cp "$ko" "$rootfs/modules/"
    echo "${ko##*/}" >>"$rootfs/modules/order"
done

cat >"$rootfs/init" <<'EOF'
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
while read -r ko; do insmod "/modules/$ko" 2>/dev/null; done </modules/order
# Wait for what the tests need, not a fixed time: both virtio disks and device-mapper.
i=0
while [ "$i" -lt 200 ]; do
    [ -b /dev/vda ] && [ -b /dev/vdb ] && grep -q device-mapper /proc/misc && break
    sleep 0.05
    i=$((i + 1))
done
/guest-tests.sh /dev/ttyS1
echo o >/proc/sysrq-trigger
poweroff -f
EOF
chmod 0755 "$rootfs/init"

# KMS: a key in moto for the kms_* cases, named to the guest in /kms.env with the loopback port
# its listener hands to the virtio-serial port; the relay joins that port to moto. Loopback only.
kms_endpoint=${SECRETFS_TEST_AWS_ENDPOINT:-}
kms_qemu=()
if [ -n "$kms_endpoint" ]; then
    [[ $kms_endpoint =~ ^http://127\.0\.0\.1:([0-9]+)/?$ ]] ||
        { echo "vm: SECRETFS_TEST_AWS_ENDPOINT must be http://127.0.0.1:PORT, not $kms_endpoint" >&2; exit 2; }
    kms_upstream=127.0.0.1:${BASH_REMATCH[1]}
    kms_arn=$(curl -sf -X POST -H 'Content-Type: application/x-amz-json-1.1' \
        -H 'X-Amz-Target: TrentService.CreateKey' \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0' \
        -d '{"Description":"secretfs tests/vm"}' "$kms_endpoint/" |
        /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["KeyMetadata"]["Arn"])') ||
        { echo "vm: cannot create a KMS key in moto at $kms_endpoint" >&2; exit 2; }
    printf 'KMS_KEY_ARN=%s\nKMS_PORT=8080\n' "$kms_arn" >"$rootfs/kms.env"
    # The SDK's client loads the CA roots even for a plain-HTTP endpoint, and a debug build
    # asserts there are some: the guest gets the host's.
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    /usr/bin/python3 "$here/kms-relay.py" --listen "$work/kms.sock" --upstream "$kms_upstream" \
        --log "$work/kms-relay.log" --ready "$work/kms.ready" 2>"$work/kms-relay.err" &
    relay_pid=$!
    for _ in $(seq 1 100); do [ -e "$work/kms.ready" ] && break; sleep 0.05; done
    [ -e "$work/kms.ready" ] || { echo "vm: the KMS relay did not start:" >&2; cat "$work/kms-relay.err" >&2; exit 2; }
    kms_qemu=(-device virtio-serial-pci -chardev "socket,id=kms,path=$work/kms.sock"
        -device virtserialport,chardev=kms,name=secretfs.kms)
else
    echo "KMS_SKIP='SECRETFS_TEST_AWS_ENDPOINT is not set on the host (scripts/test-all.sh starts moto)'" >"$rootfs/kms.env"
fi
(cd "$rootfs" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

# Disks: vda blank (a fresh instance store), vdb a foreign ext4 that must survive untouched.
truncate -s 256M "$work/blank.img"
truncate -s 64M "$work/foreign.img"
mke2fs -q -t ext4 -F "$work/foreign.img"
foreign_sum=$(sha256sum <"$work/foreign.img")

extra_drives=()
for img in ${SECRETFS_VM_DRIVES:-}; do extra_drives+=(-drive "file=$img,format=raw,if=virtio"); done

# -nic none: without it QEMU adds an e1000 on user-mode networking (slirp, 10.0.2.0/24); the
# guest has no driver for it, but the tests need no network at all.
start=$(date +%s)
qemu_rc=0
: >"$work/console.log"
timeout "$timeout_s" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m "${SECRETFS_VM_MEM:-1024}" \
    -display none -monitor none -no-reboot -nic none "${kms_qemu[@]}" \
    -kernel "$vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 panic=-1 quiet${SECRETFS_VM_CASES:+ cases=$SECRETFS_VM_CASES}${SECRETFS_VM_APPEND:+ $SECRETFS_VM_APPEND}" \
    -drive "file=$work/blank.img,format=raw,if=virtio" \
    -drive "file=$work/foreign.img,format=raw,if=virtio" "${extra_drives[@]}" \
    -serial "file:$work/console.log" -serial "file:$work/results" &
qemu_pid=$!
tail_pid=
if [ -n "${SECRETFS_VM_SHOW_CONSOLE:-}" ]; then
    # --pid: tail reads the console to its end once the guest has gone, then stops by itself.
    tail -n +1 -F --pid="$qemu_pid" "$work/console.log" >&2 2>/dev/null &
    tail_pid=$!
fi
wait "$qemu_pid" || qemu_rc=$?
if [ -n "$tail_pid" ]; then wait "$tail_pid" || true; fi
echo "vm: guest ran $(( $(date +%s) - start )) s (qemu exit $qemu_rc)"
if [ -n "${SECRETFS_VM_RESULTS:-}" ]; then tr -d '\r' <"$work/results" >"$SECRETFS_VM_RESULTS"; fi

[ "$(sha256sum <"$work/foreign.img")" = "$foreign_sum" ] && echo "PASS foreign_disk_untouched_host_check" >>"$work/results" \
    || echo "FAIL foreign_disk_untouched_host_check" >>"$work/results"
# Each KMS call the guest's audit log reported (KMSCALL OP REQUEST_ID ok|failed) must be in the
# relay's log, with that target and request id: the call really went to moto through the port.
kms_relay_check() {
    local op rid outcome want calls=0
    while read -r _ op rid outcome; do
        calls=$((calls + 1))
        if [ "$outcome" = ok ]; then want='^2'; else want='^4'; fi
        awk -v t="TrentService.$op" -v r="$rid" -v w="$want" '$3 == t && $4 ~ w && $5 == r {f = 1} END {exit !f}' \
            "$work/kms-relay.log" || { echo "    the guest's KMS $op ($outcome, request id $rid) is not in the relay's log"; return 1; }
    done < <(tr -d '\r' <"$work/results" | grep '^KMSCALL ')
    [ "$calls" -gt 0 ] || { echo "    the kms cases ran, but the guest reported no KMS call"; return 1; }
}
if tr -d '\r' <"$work/results" | grep -qE '^(PASS|FAIL) kms_'; then
    if [ -z "$kms_endpoint" ]; then
        echo "FAIL kms_calls_reached_moto_host_check" >>"$work/results"
        echo "    the kms cases ran without an emulator" >>"$work/results"
    elif kms_out=$(kms_relay_check); then
        echo "PASS kms_calls_reached_moto_host_check" >>"$work/results"
    else
        { echo "FAIL kms_calls_reached_moto_host_check"; echo "$kms_out"; echo "    relay log:"
            sed 's/^/      /' "$work/kms-relay.log" "$work/kms-relay.err"; } >>"$work/results"
    fi
fi
tr -d '\r' <"$work/results" | grep -E '^(PASS|FAIL|SKIP|DONE)' || true
passed=$(tr -d '\r' <"$work/results" | grep -c '^PASS' || true)
failed=$(tr -d '\r' <"$work/results" | grep -c '^FAIL' || true)
skipped=$(tr -d '\r' <"$work/results" | grep -c '^SKIP' || true)
if [ "$skipped" -ne 0 ] && [ "${CI:-}" = true ]; then
    echo "vm: $skipped case(s) skipped, and CI allows no skip (scripts/test-all.sh starts moto)" >&2
    failed=$((failed + skipped))
fi
if ! tr -d '\r' <"$work/results" | grep -q '^DONE'; then
    echo "vm: the guest did not finish (timeout ${timeout_s}s or crash); console:" >&2
    tail -n 60 "$work/console.log" >&2
    exit 1
fi
if [ "$failed" -ne 0 ]; then
    echo "vm: $failed failed; guest output of the failures:" >&2
    tr -d '\r' <"$work/results" | grep -v -E '^(PASS|DONE|KMSCALL)' >&2
    exit 1
fi
if [ "$skipped" -ne 0 ]; then echo "vm: $passed passed, 0 failed, $skipped skipped"; else echo "vm: $passed passed, 0 failed"; fi
