#!/usr/bin/env bash
# Block mode against real kernel dm-crypt: boots Debian's cloud kernel under QEMU (TCG; this
# host kernel has no device-mapper) with a busybox initramfs holding secretfs, cryptsetup and
# e2fsprogs, runs tests/vm/guest-tests.sh there and reads the results from a second serial port.
#
# Usage: tests/vm/run.sh [SECRETFS_BINARY]   (default: $CARGO_TARGET_DIR or target, debug)
#        SECRETFS_VM_CASES=open_blank_formats,close tests/vm/run.sh   (a subset, comma-separated)
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
trap 'rm -rf "$work"' EXIT
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
for m in virtio_pci virtio_blk dm-mod dm-crypt dm-flakey xts ecb cryptd crypto_simd aesni-intel af_alg algif_skcipher loop fuse; do
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
    -display none -monitor none -no-reboot -nic none \
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
tr -d '\r' <"$work/results" | grep -E '^(PASS|FAIL|DONE)' || true
passed=$(tr -d '\r' <"$work/results" | grep -c '^PASS' || true)
failed=$(tr -d '\r' <"$work/results" | grep -c '^FAIL' || true)
if ! tr -d '\r' <"$work/results" | grep -q '^DONE'; then
    echo "vm: the guest did not finish (timeout ${timeout_s}s or crash); console:" >&2
    tail -n 60 "$work/console.log" >&2
    exit 1
fi
if [ "$failed" -ne 0 ]; then
    echo "vm: $failed failed; guest output of the failures:" >&2
    tr -d '\r' <"$work/results" | grep -v -E '^(PASS|DONE)' >&2
    exit 1
fi
echo "vm: $passed passed, 0 failed"
