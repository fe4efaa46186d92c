#!/usr/bin/env bash
# The main job on the embedded default, no AWS needed: a keyfile filesystem at /mnt/secretfs
# over /var/lib/secretfs, used like any directory, and a look at the ciphertext on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet
install -m 0755 target/release/secretfs /usr/local/bin/secretfs

BACKING=/var/lib/secretfs
MNT=/mnt/secretfs
KEY=/etc/secretfs/key
mkdir -p "$MNT" /etc/secretfs
if ! [ -f "$BACKING/secretfs.conf" ]; then
    secretfs init "$BACKING" --key "keyfile:$KEY"
fi
# The key is named explicitly: a store made before key pins existed is pinned by this mount.
grep -q " $MNT fuse.secretfs " /proc/self/mountinfo || secretfs mount "$BACKING" "$MNT" --key "keyfile:$KEY"

echo "== writing through $MNT"
mkdir -p "$MNT/reports"
echo "card 4111-1111-1111-1111 belongs to Alice" > "$MNT/reports/customers.txt"
cp /etc/os-release "$MNT/reports/os-release"
ls -l "$MNT/reports"
echo "== read back: $(cat "$MNT/reports/customers.txt")"
echo "== what lands on disk in $BACKING (names and contents are ciphertext):"
find "$BACKING" -mindepth 1 | sed "s|^|  |"
stored=$(find "$BACKING" -type f -size -200c ! -name 'secretfs.*' -print -quit)
xxd -l 64 "$stored"
if grep -rq "Alice" "$BACKING"; then echo "PLAINTEXT FOUND ON DISK" >&2; exit 1; fi
echo "== no plaintext on disk (grep -r Alice $BACKING finds nothing)"
secretfs status "$MNT"
echo "Unmount with: secretfs umount $MNT"
