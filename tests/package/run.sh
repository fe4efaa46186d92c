#!/usr/bin/env bash
# The packages as an administrator meets them, as root on Debian 12: builds the .deb and .rpm
# (scripts/package.sh), installs the .deb with dpkg -i, mounts an fstab line with mount -a
# through the installed /sbin/mount.secretfs and /usr/bin/secretfs, writes, unmounts and
# remounts, checks that man finds the pages and bash completes the commands, checks the .rpm's
# file list, scripts and dependencies (and runs its helper script), then removes the .deb with
# dpkg -r and checks that nothing of the package is left and the host's config is untouched.
#
# CI packages the binary `cargo test` already built (SECRETFS_PACKAGE_BINARY, stripped of its
# debug info by package.sh): this checks the packaging, not a release. Real packages come from
# `bash scripts/package.sh`, which makes a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
started=$(date +%s)

fail() {
    echo "package test: $*" >&2
    exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i, mount)"
if dpkg -s secretfs >/dev/null 2>&1; then
    fail "a secretfs package is already installed; this test installs and removes its own"
fi

work=$(mktemp -d /tmp/secretfs-package.XXXXXX)
fs_id=
# Helper links made by hand before (scripts/install.sh, tests/fstab.rs) are put back afterwards.
declare -A old_links=()
for helper in mount.secretfs umount.fuse.secretfs umount.secretfs; do
    if [ -L "/sbin/$helper" ]; then old_links[$helper]=$(readlink "/sbin/$helper"); fi
done
cleanup() {
    umount "$work/mnt" 2>/dev/null || true
    if dpkg -s secretfs >/dev/null 2>&1; then dpkg --purge secretfs >/dev/null 2>&1 || true; fi
    if [ -n "$fs_id" ]; then rm -f "/etc/secretfs/pins/$fs_id.json"; fi
    for helper in "${!old_links[@]}"; do ln -sfn "${old_links[$helper]}" "/sbin/$helper"; done
    rm -rf "$work"
}
trap cleanup EXIT

binary=${SECRETFS_PACKAGE_BINARY:-${CARGO_TARGET_DIR:-target}/debug/secretfs}
[ -x "$binary" ] || fail "$binary is missing: run cargo build (or cargo test) first"
out="$work/out"
bash scripts/package.sh --binary "$binary" --fast --out "$out" >/dev/null
deb=$(ls "$out"/secretfs_*_amd64.deb)
rpm=$(ls "$out"/secretfs-*.x86_64.rpm)
staged_version=$(target/package/bin/secretfs --version)

# What both packages hold besides the binary and the helpers: every page the binary generates.
man8=$(cd target/package/man/man8 && ls)
[ "$(echo "$man8" | wc -l)" -ge 15 ] || fail "only $(echo "$man8" | wc -l) section 8 pages"
for page in secretfs.8.gz mount.secretfs.8.gz secretfs-mount.8.gz secretfs-block-open.8.gz; do
    echo "$man8" | grep -qx "$page" || fail "no $page among the generated pages"
done

# --- the .deb: fields and file list
field() { dpkg-deb -f "$deb" "$1"; }
field Depends | grep -Eq '(^|, )fuse3(,|$)' || fail "Depends lacks fuse3: $(field Depends)"
field Depends | grep -Eq '(^|, )ca-certificates(,|$)' || fail "Depends lacks ca-certificates: $(field Depends)"
field Depends | grep -Eq 'libc6 \(>= 2\.3[0-9]\)' || fail "Depends lacks libc6 (>= 2.3x): $(field Depends)"
field Recommends | grep -q cryptsetup-bin || fail "Recommends lacks cryptsetup-bin"
# No maintainer script at all: installing starts nothing, removing touches no user data.
scripts=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t | grep -Ev '^\./(control|md5sums)?$' || true)
[ -z "$scripts" ] || fail "unexpected control files (maintainer scripts?): $scripts"

expected_files() { # $1: sbin dir, $2: zsh dir; the man pages listed above
    printf '%s\n' /usr/bin/secretfs "$1/mount.secretfs" "$1/umount.fuse.secretfs" \
        "$1/umount.secretfs" \
        /usr/share/bash-completion/completions/secretfs "$2/_secretfs" \
        /usr/share/fish/vendor_completions.d/secretfs.fish \
        /usr/share/man/man5/secretfs-fstab.5.gz \
        /usr/share/doc/secretfs/README.md /usr/share/doc/secretfs/SECURITY.md \
        /usr/share/doc/secretfs/FORMAT.md /usr/share/doc/secretfs/SEMANTICS.md \
        /usr/share/doc/secretfs/EC2.md \
        /usr/share/doc/secretfs/systemd.md \
        /usr/share/doc/secretfs/examples/example-app.service \
        /usr/share/doc/secretfs/examples/secretfs-scratch.service
    echo "$man8" | sed 's|^|/usr/share/man/man8/|'
}
deb_files=$(dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -v '/$' | sed 's|^\.||' | sort)
want=$( (expected_files /sbin /usr/share/zsh/vendor-completions
    echo /usr/share/doc/secretfs/copyright) | sort)
diff <(echo "$want") <(echo "$deb_files") || fail ".deb file list differs (- expected, + in the package)"

# --- install; the installed files are what runs from here on
dpkg -i "$deb" >/dev/null
for helper in mount.secretfs umount.fuse.secretfs umount.secretfs; do
    [ "$(readlink "/sbin/$helper")" = /usr/bin/secretfs ] ||
        fail "/sbin/$helper -> $(readlink "/sbin/$helper"), not /usr/bin/secretfs"
done
[ "$(/usr/bin/secretfs --version)" = "$staged_version" ] || fail "/usr/bin/secretfs is not the packaged binary"

# An fstab line, mount -a, use, umount (waits for the daemon), mount again, read back.
mkdir -p "$work/mnt"
cat >"$work/fstab" <<EOF
$work/backing  $work/mnt  secretfs  key=keyfile:$work/key,init=auto,nofail,_netdev,x-systemd.mount-timeout=120  0 0
EOF
mount -a -T "$work/fstab"
[ "$(findmnt -n -o FSTYPE "$work/mnt")" = fuse.secretfs ] || fail "mount -a did not mount $work/mnt"
fs_id=$(/usr/bin/secretfs status "$work/mnt" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["fs_id"])')
[ -f "/etc/secretfs/pins/$fs_id.json" ] || fail "init=auto left no pin for $fs_id"
printf 'written through the installed package\n' >"$work/mnt/note"
grep -rq 'written through the installed package' "$work/backing" && fail "plaintext in the backing store"
umount "$work/mnt"
findmnt "$work/mnt" >/dev/null && fail "umount left $work/mnt mounted"
mount -T "$work/fstab" "$work/mnt"
[ "$(cat "$work/mnt/note")" = 'written through the installed package' ] || fail "the file did not survive a remount"
umount "$work/mnt"

# man finds every page by name and section; each renders.
for page in secretfs mount.secretfs secretfs-mount secretfs-block-open; do
    [ "$(man -w 8 "$page")" = "/usr/share/man/man8/$page.8.gz" ] || fail "man -w 8 $page: $(man -w 8 "$page" 2>&1)"
done
[ "$(man -w 5 secretfs-fstab)" = /usr/share/man/man5/secretfs-fstab.5.gz ] || fail "man -w 5 secretfs-fstab"
MANWIDTH=80 man 8 secretfs 2>/dev/null | grep -q 'EXIT STATUS' || fail "man secretfs does not render"

# bash-completion loads the script on first use and completes subcommands and options.
complete_words() {
    bash -c 'source /usr/share/bash-completion/bash_completion
        _completion_loader secretfs
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
        func=$(complete -p secretfs | sed -E "s/.*-F ([^ ]+).*/\1/")
        "$func" secretfs "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf "%s\n" "${COMPREPLY[@]}"' _ "$@"
}
complete_words secretfs mo | grep -qx mount || fail "bash completion of 'secretfs mo' lacks mount"
complete_words secretfs init /x --kms | grep -qx -- --kms-key || fail "bash completion lacks --kms-key"

# The example unit is well-formed (udevadm may be absent on a CI host; nothing else may fail).
if command -v systemd-analyze >/dev/null; then
    verify=$(systemd-analyze verify /usr/share/doc/secretfs/examples/secretfs-scratch.service 2>&1 |
        grep -v 'udevadm is not executable' || true)
    [ -z "$verify" ] || fail "systemd-analyze verify secretfs-scratch.service: $verify"
fi

# --- the .rpm: same contents (helpers in /usr/sbin, which /sbin is on its targets), no
# scriptlets, the dependencies; its helper script really runs the helper.
rpm_files=$(rpm -qlp "$rpm" 2>/dev/null | sort)
want=$(expected_files /usr/sbin /usr/share/zsh/site-functions | sort)
diff <(echo "$want") <(echo "$rpm_files") || fail ".rpm file list differs (- expected, + in the package)"
rpm_scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
[ -z "$rpm_scripts" ] || fail "the .rpm has scriptlets: $rpm_scripts"
requires=$(rpm -qp --requires "$rpm" 2>/dev/null)
for need in fuse3 ca-certificates '/bin/bash' 'libc.so.6(GLIBC_2.34)(64bit)'; do
    echo "$requires" | grep -qxF "$need" || fail ".rpm does not require $need"
done
rpm -qp --recommends "$rpm" 2>/dev/null | grep -qx cryptsetup || fail ".rpm does not recommend cryptsetup"
# rpm2archive, not rpm2cpio: Debian 12's rpm2cpio exits 1 on this zstd payload though it
# writes it whole (the digests check with rpm -K).
rpm -K --nosignature "$rpm" >/dev/null || fail "the .rpm's digests do not check"
mkdir "$work/rpmroot"
rpm2archive -n - <"$rpm" | tar -x -C "$work/rpmroot"
cmp "$work/rpmroot/usr/bin/secretfs" /usr/bin/secretfs || fail "the .rpm and .deb binaries differ"
# Run as mount.secretfs (dry run, -f): it checks the options and the store, mounts nothing.
"$work/rpmroot/usr/sbin/mount.secretfs" "$work/backing" "$work/mnt" -f -o "key=keyfile:$work/key" ||
    fail "the .rpm's mount.secretfs did not act as the mount helper"
set +e
err=$("$work/rpmroot/usr/sbin/mount.secretfs" "$work/backing" "$work/mnt" -f -o colour=blue 2>&1)
code=$?
set -e
[ "$code" = 1 ] && echo "$err" | grep -q 'unknown mount option' ||
    fail "the .rpm's mount.secretfs accepted a bad option (exit $code: $err)"

# --- remove: nothing of the package is left; the host's pins and keys are untouched.
dpkg -r secretfs >/dev/null
dpkg -L secretfs >/dev/null 2>&1 && fail "dpkg -L still lists secretfs after dpkg -r"
# (A helper link pointing elsewhere is someone else's: tests/fstab.rs makes its own.)
while read -r f; do
    if [ -L "$f" ]; then
        if [ "$(readlink "$f")" = /usr/bin/secretfs ]; then fail "$f is left after dpkg -r"; fi
    elif [ -e "$f" ]; then
        fail "$f is left after dpkg -r"
    fi
done < <(echo "$deb_files")
[ -d /usr/share/doc/secretfs ] && fail "/usr/share/doc/secretfs is left after dpkg -r"
[ -f "/etc/secretfs/pins/$fs_id.json" ] && [ -f "$work/key" ] || fail "dpkg -r removed the admin's pin or key"
# The package has no conffiles, so dpkg -r already purged it: dpkg forgets it entirely.
status=$(dpkg-query -W -f='${db:Status-Status}' secretfs 2>/dev/null || true)
[ -z "$status" ] || [ "$status" = not-installed ] || fail "dpkg still knows secretfs as $status"

echo "package test: passed in $(($(date +%s) - started)) s ($(basename "$deb"), $(basename "$rpm"))"
