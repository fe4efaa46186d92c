#!/usr/bin/env bash
# Installs secretfs system-wide, as root: the `secretfs` command and the mount(8)/umount(8)
# helpers, so `mount -t secretfs`, fstab lines and `umount` work.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# --fips: the FIPS build (README, "FIPS build"; needs Go and CMake, scripts/install-deps.sh).
features=()
[ "${1:-}" = "--fips" ] && features=(--features fips)
cargo build --release --quiet -p secretfs "${features[@]}"
install -m 0755 target/release/secretfs /usr/local/bin/secretfs
# One binary: run as mount.secretfs / umount.* it is the helper (docs/ARCHITECTURE.md says why).
ln -sf /usr/local/bin/secretfs /sbin/mount.secretfs
# umount(8) looks for umount.<type>; file mode mounts are type fuse.secretfs.
ln -sf /sbin/mount.secretfs /sbin/umount.fuse.secretfs
# Block mode mounts are ext4 with helper=secretfs in utab: umount(8) runs umount.secretfs.
ln -sf /sbin/mount.secretfs /sbin/umount.secretfs
echo "installed /usr/local/bin/secretfs, /sbin/mount.secretfs, /sbin/umount.fuse.secretfs, /sbin/umount.secretfs"
