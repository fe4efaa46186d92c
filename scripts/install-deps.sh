#!/usr/bin/env bash
# Installs what building and testing secretfs needs on Debian 12, as root: system packages,
# a Rust toolchain if none is present; with --with-suites also the test-only tools (VM, emulator,
# third-party suites from crates.io).
set -Eeuo pipefail
trap 'echo "install-deps: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# groff-base: tests/packaging.rs renders the generated man pages and wants no groff warning.
apt-get install -y -qq --no-install-recommends \
    ca-certificates curl build-essential pkg-config libacl1-dev \
    fuse3 git sqlite3 tar xxd util-linux e2fsprogs python3 python3-venv attr libcap2-bin acl \
    groff-base >/dev/null
# The `fips` build compiles AWS-LC's FIPS module (aws-lc-fips-sys): CMake drives it and Go runs
# its delocator and integrity-check tools. Its Rust bindings ship pre-generated for x86_64 and
# aarch64 Linux, so no libclang is needed.
apt-get install -y -qq --no-install-recommends golang-go cmake >/dev/null

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        :
    else
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
    fi
fi
export PATH="$HOME/.cargo/bin:$PATH"

# Everything below only the test suite needs (`--with-suites`, as test-all.sh passes); the demo
# and a plain build stop here.
[ "${1:-}" = "--with-suites" ] || exit 0

# Block mode is tested in a QEMU guest (this host kernel has no device-mapper): the emulator,
# what goes into the guest's initramfs, and Debian's cloud kernel unpacked from its .deb into a
# cache (never installed on the host). dmsetup builds the power-cut device (dm-flakey) of the
# durability case; on this host it only adds a /dev/mapper/control that block mode ignores
# (device-mapper is detected by /proc/misc).
apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 cpio busybox-static cryptsetup-bin kmod dash binutils dmsetup >/dev/null
# The peer the comparison benchmark measures file mode against.
apt-get install -y -qq --no-install-recommends gocryptfs >/dev/null
VM_CACHE=${SECRETFS_VM_CACHE:-/var/cache/secretfs-vm}
if ! ls "$VM_CACHE"/kernel/boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1; then
    mkdir -p "$VM_CACHE"
    kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ && !v {v = $2} END {print v}')
    (cd "$VM_CACHE" && apt-get download -q "$kernel_pkg" 2>/dev/null)
    dpkg-deb -x "$(ls "$VM_CACHE"/linux-image-*-cloud-amd64_*.deb | sort -V | tail -1)" "$VM_CACHE/kernel"
fi

# The AWS KMS + S3 emulator the key-source tests run against (on loopback only).
MOTO_VENV=/opt/secretfs-moto
if ! "$MOTO_VENV/bin/moto_server" --help >/dev/null 2>&1; then
    /usr/bin/python3 -m venv "$MOTO_VENV"
    "$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==5.2.5"
fi

# pjdfstest switches to these users; `tests` must exist with a group of the same name.
id tests >/dev/null 2>&1 || useradd -M -U -s /usr/sbin/nologin tests

# The package test (tests/package/run.sh): rpm to read the .rpm (rpm -qlp, rpm2archive),
# man-db for man -w, bash-completion to load the completion as a user's shell does.
apt-get install -y -qq --no-install-recommends rpm man-db bash-completion >/dev/null
# docs/EC2.md's cloud-configs are validated by Debian's cloud-init (`cloud-init schema` works
# offline): unpacked from its .deb into a cache, never installed (its units would run at the next
# boot); its Python libraries are installed.
apt-get install -y -qq --no-install-recommends python3-yaml python3-jsonschema python3-jinja2 \
    python3-configobj python3-jsonpatch python3-netifaces python3-oauthlib python3-requests \
    python3-serial >/dev/null
CLOUD_INIT=/var/cache/secretfs-cloud-init
if [ ! -x "$CLOUD_INIT/root/usr/bin/cloud-init" ]; then
    mkdir -p "$CLOUD_INIT"
    (cd "$CLOUD_INIT" && apt-get download -q cloud-init 2>/dev/null)
    dpkg-deb -x "$(ls "$CLOUD_INIT"/cloud-init_*.deb | sort -V | tail -1)" "$CLOUD_INIT/root"
fi

have() { cargo install --list | grep -c "^$1 v$2:" >/dev/null; }
# Packagers (scripts/package.sh checks these exact versions).
have cargo-deb 3.8.0 || cargo install --locked --quiet cargo-deb@3.8.0
have cargo-generate-rpm 0.21.1 || cargo install --locked --quiet cargo-generate-rpm@0.21.1
have pjdfstest 0.2.2 || cargo install --locked --quiet pjdfstest@0.2.2
have fsx 0.3.2 || cargo install --locked --quiet fsx@0.3.2
have cargo-fuzz 0.13.2 || cargo install --locked --quiet cargo-fuzz@0.13.2
