#!/bin/sh
# Block-mode tests run inside the VM (real dm-crypt, loop and ext4): one PASS/FAIL line per case
# on the results port ($1), the output of failed cases indented below, then DONE.
R=${1:-/dev/stdout}
export PATH=/sbin:/bin:/usr/sbin:/usr/bin RUST_BACKTRACE=0
S=secretfs
mkdir -p /mnt/a /mnt/b /mnt/c /data

# case NAME: runs the shell function t_NAME; its output is reported only on failure. Exit 77
# is a skip, its last line the reason (the host decides whether a skip may pass: not under CI).
case_() {
    "t_$1" >/tmp/out 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "PASS $1" >"$R"
    elif [ "$rc" -eq 77 ]; then
        echo "SKIP $1: $(tail -n 1 /tmp/out)" >"$R"
    else
        echo "FAIL $1" >"$R"
        sed 's/^/    /' /tmp/out >"$R"
    fi
}
# expect CODE TEXT CMD…: CMD must exit with CODE and print TEXT.
expect() {
    code=$1 text=$2
    shift 2
    "$@" >/tmp/exp 2>&1
    rc=$?
    cat /tmp/exp
    [ "$rc" -eq "$code" ] || { echo "expected exit $code, got $rc"; return 1; }
    grep -q "$text" /tmp/exp || { echo "expected output to contain: $text"; return 1; }
}
# stock_mapping_reads_back NAME SUMS: the mapping cryptsetup itself opened as NAME holds the
# files SUMS lists, read-only; it is closed whatever the outcome.
stock_mapping_reads_back() {
    mount -o ro "/dev/mapper/$1" /mnt/c && (cd /mnt/c && sha256sum -c "$2")
    rc=$?
    umount /mnt/c
    cryptsetup close "$1"
    return $rc
}
no_mapping() {
    if ls /dev/mapper | grep -q secretfs; then echo "mapping left behind:"; ls /dev/mapper; return 1; fi
}
no_loop() {
    for f in /sys/block/loop*/loop/backing_file; do
        [ -e "$f" ] && { echo "loop device still attached: $f -> $(cat "$f")"; return 1; }
    done
    return 0
}

t_open_blank_formats() {
    expect 0 "formatted and opened" $S block open /dev/vda /mnt/a --key keyfile:/key || return 1
    grep -q " /mnt/a ext4 " /proc/mounts || return 1
    dd if=/dev/urandom of=/mnt/a/f1 bs=1M count=4 2>/dev/null && mkdir /mnt/a/d && echo hello >/mnt/a/d/f2
    (cd /mnt/a && sha256sum f1 d/f2) >/tmp/sums
}
t_luks2_parameters() {
    cryptsetup luksDump /dev/vda >/tmp/dump || return 1
    cat /tmp/dump
    grep -q "Version:.*2" /tmp/dump && grep -q "aes-xts-plain64" /tmp/dump &&
        grep -q "sector: 4096" /tmp/dump && grep -q "512 bits" /tmp/dump &&
        grep -q "PBKDF:.*pbkdf2" /tmp/dump && grep -q "secretfs" /tmp/dump
}
t_status_shows_block_volume() {
    expect 0 "key source:  keyfile (/key)" $S status /mnt/a && expect 0 "block mode" $S block status /mnt/a
}
t_close() {
    grep -q "TARGET=/mnt/a .*helper=secretfs" /run/mount/utab || { echo "no utab record"; return 1; }
    expect 0 "closed secretfs-" $S block close /mnt/a && no_mapping && ! grep -q " /mnt/a " /proc/mounts || return 1
    ! grep -q "TARGET=/mnt/a " /run/mount/utab || { echo "stale utab record:"; cat /run/mount/utab; return 1; }
}
t_reopen_keeps_data_formats_once() {
    expect 0 "^opened secretfs-" $S block open /dev/vda /mnt/a --key keyfile:/key || return 1
    (cd /mnt/a && sha256sum -c /tmp/sums) || return 1
    $S block close /mnt/a
}
t_default_key_from_token() {
    expect 0 "^opened" $S block open /dev/vda /mnt/a && $S block close secretfs-"$(cryptsetup luksUUID /dev/vda)"
}
t_wrong_key_refused() {
    head -c 32 /dev/urandom >/key2 && chmod 0400 /key2
    expect 3 "does not open" $S block open /dev/vda /mnt/a --key keyfile:/key2 && no_mapping &&
        ! grep -q " /mnt/a " /proc/mounts
}
# Whoever can write the disk can rewrite its LUKS2 token: one naming the attacker's key file is
# refused (the host pinned the volume's key source), the volume untouched and still opening.
t_token_substitution_refused() {
    cryptsetup token export --token-id 0 /dev/vda >/tmp/token.json || return 1
    sed 's#"/key"#"/key2"#' /tmp/token.json >/tmp/evil.json
    grep -q '"/key2"' /tmp/evil.json || { echo "token has no key path:"; cat /tmp/token.json; return 1; }
    cryptsetup token remove --token-id 0 /dev/vda && cryptsetup token import --token-id 0 --json-file /tmp/evil.json /dev/vda || return 1
    expect 3 "this host pinned" $S block open /dev/vda /mnt/a
    rc=$?
    cryptsetup token remove --token-id 0 /dev/vda && cryptsetup token import --token-id 0 --json-file /tmp/token.json /dev/vda || return 1
    [ "$rc" -eq 0 ] && no_mapping && ! grep -q " /mnt/a " /proc/mounts || return 1
    expect 0 "^opened" $S block open /dev/vda /mnt/a && $S block close /mnt/a
}
t_foreign_ext4_refused() {
    before=$(head -c 1048576 /dev/vdb | sha256sum)
    expect 4 "already holds an existing ext4 filesystem" $S block open /dev/vdb /mnt/b --key keyfile:/key || return 1
    expect 4 "refusing" $S block open /dev/vdb /mnt/b --key keyfile:/key --format never || return 1
    no_mapping && [ "$(head -c 1048576 /dev/vdb | sha256sum)" = "$before" ]
}
t_foreign_luks_refused() {
    truncate -s 64M /data/other.img
    printf 'other' | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - /data/other.img || return 1
    expect 4 "another LUKS volume" $S block open /data/other.img /mnt/b --key keyfile:/key && no_mapping && no_loop
}
t_busy_refused() {
    $S block open /dev/vda /mnt/a --key keyfile:/key >/dev/null || return 1
    expect 5 "busy" $S block open /dev/vda /mnt/b --key keyfile:/key
    rc=$?
    $S block close /mnt/a
    return $rc
}
t_close_busy_refused() {
    grep -q " /mnt/a " /proc/mounts || $S block open /dev/vda /mnt/a --key keyfile:/key >/dev/null ||
        return 1
    echo held >/mnt/a/held && touch /tmp/hold
    (exec 3</mnt/a/held; while [ -e /tmp/hold ]; do sleep 0.05; done) &
    holder=$!
    i=0
    while [ ! -e "/proc/$holder/fd/3" ] && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    expect 5 "files are open under it" $S block close /mnt/a
    rc=$?
    # Refused, and nothing undone: still mounted, still mapped, still readable.
    grep -q " /mnt/a ext4 " /proc/mounts && ls /dev/mapper | grep -q secretfs &&
        [ "$(cat /mnt/a/held)" = held ] || rc=1
    rm -f /tmp/hold && wait "$holder"
    expect 0 "closed secretfs-" $S block close /mnt/a && no_mapping || rc=1
    return $rc
}
t_cryptsetup_missing() {
    mv /sbin/cryptsetup /sbin/cryptsetup.hidden
    expect 5 "cryptsetup is not installed" $S block open /dev/vda /mnt/a --key keyfile:/key
    rc=$?
    mv /sbin/cryptsetup.hidden /sbin/cryptsetup
    return $rc
}
t_file_target_via_loop() {
    expect 0 "formatted and opened .*/dev/loop" $S block open /data/vol.img /mnt/b --size 64M --key keyfile:/key --perf-no-workqueue || return 1
    [ "$(stat -c %a /data/vol.img)" = 600 ] || { echo "mode $(stat -c %a /data/vol.img)"; return 1; }
    expect 0 "backing:     /data/vol.img" $S status /mnt/b || return 1
    echo loop-data >/mnt/b/x && (cd /mnt/b && sha256sum x) >/tmp/lsums
    $S block close /mnt/b && no_mapping && no_loop || return 1
    expect 0 "^opened" $S block open /data/vol.img /mnt/b --key keyfile:/key && (cd /mnt/b && sha256sum -c /tmp/lsums) || return 1
    $S block close /mnt/b && no_loop
}
t_failure_undoes_everything() {
    # No mkfs.xfs in the VM: the failure comes after create, loop attach, luksFormat and open.
    expect 5 "mkfs.xfs" $S block open /data/undo.img /mnt/b --size 64M --fs xfs --key keyfile:/key || return 1
    no_mapping && no_loop && [ ! -e /data/undo.img ] && ! grep -q " /mnt/b " /proc/mounts || return 1
    # An existing target stays, but blank again: the half-made LUKS header is erased.
    truncate -s 64M /data/undo2.img
    expect 5 "mkfs.xfs" $S block open /data/undo2.img /mnt/b --fs xfs --key keyfile:/key || return 1
    no_mapping && no_loop && [ "$(head -c 16777216 /data/undo2.img | tr -d '\000' | wc -c)" -eq 0 ] || return 1
    expect 0 "formatted and opened" $S block open /data/undo2.img /mnt/b --key keyfile:/key && $S block close /mnt/b
}
t_ephemeral_starts_empty() {
    expect 0 "formatted and opened" $S block open /data/eph.img /mnt/b --size 64M --key ephemeral --wipe || return 1
    echo scratch >/mnt/b/s && $S block close /mnt/b || return 1
    expect 0 "formatted and opened" $S block open /data/eph.img /mnt/b --key ephemeral || return 1
    [ ! -e /mnt/b/s ] || { echo "ephemeral data survived"; return 1; }
    $S block close /mnt/b && no_loop
}
# RFC 5869 HKDF-SHA256 written out in shell (busybox sha256sum + od), independent of the Rust
# code: proves the documented derivation alone, with stock cryptsetup, opens a volume.
hex() { od -An -v -tx1 | tr -d ' \n'; }
unhex() {
    h=$1
    while [ -n "$h" ]; do
        b=${h%"${h#??}"}
        h=${h#??}
        printf "\\$(printf %o "0x$b")"
    done
}
pad() {
    k=$1 out= i=0
    while [ $i -lt 64 ]; do
        b=${k%"${k#??}"}
        k=${k#??}
        [ -n "$b" ] || b=00
        out=$out$(printf %02x $((0x$b ^ $2)))
        i=$((i + 1))
    done
    echo "$out"
}
hmac() {
    inner=$({ unhex "$(pad "$1" 0x36)"; unhex "$2"; } | sha256sum | cut -c1-64)
    { unhex "$(pad "$1" 0x5c)"; unhex "$inner"; } | sha256sum | cut -c1-64
}
t_plain_cryptsetup_opens() {
    # The test itself checks its HMAC against a known RFC 4231 vector (test case 2).
    [ "$(hmac "$(printf Jefe | hex)" "$(printf 'what do ya want for nothing?' | hex)")" = \
        5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843 ] || { echo "shell HMAC is wrong"; return 1; }
    salt=$(cryptsetup luksUUID /dev/vda | tr -d '-')
    prk=$(hmac "$salt" "$(hex </key)")
    okm=$(hmac "$prk" "$(printf 'secretfs/v1/luks' | hex)01")
    printf %s "$okm" | cryptsetup open --key-file - /dev/vda plain || return 1
    stock_mapping_reads_back plain /tmp/sums
}
t_fstab_mount_umount() {
    echo "/dev/vda /mnt/c secretfs mode=block,key=keyfile:/key 0 0" >/etc/fstab
    mount /mnt/c || return 1
    [ ! -f /tmp/sums ] || (cd /mnt/c && sha256sum -c /tmp/sums) || return 1
    grep -q "helper=secretfs" /run/mount/utab || { echo "no helper=secretfs in utab"; return 1; }
    umount /mnt/c || return 1
    no_mapping && ! grep -q " /mnt/c " /proc/mounts
}
# File mode in the same VM, so the benchmark can compare the two on one kernel: a FUSE mount
# whose backing store holds only ciphertext, unmounted and mounted again.
t_file_mode_in_the_same_vm() {
    $S init /data/fm-backing --key keyfile:/data/fm-key || return 1
    mkdir -p /mnt/f
    $S mount /data/fm-backing /mnt/f -o log=/tmp/fm.log || { cat /tmp/fm.log; return 1; }
    grep -q " /mnt/f fuse.secretfs " /proc/mounts || { echo "not a fuse.secretfs mount"; return 1; }
    head -c 300000 /dev/urandom >/tmp/fm-src
    printf 'FILEMODEMARKER' >>/tmp/fm-src
    cp /tmp/fm-src /mnt/f/data || return 1
    cmp /tmp/fm-src /mnt/f/data || return 1
    if grep -rq FILEMODEMARKER /data/fm-backing; then echo "plaintext in the backing store"; return 1; fi
    $S umount /mnt/f || return 1
    $S mount /data/fm-backing /mnt/f || return 1
    cmp /tmp/fm-src /mnt/f/data || return 1
    $S umount /mnt/f
}

# Power loss in file mode: the backing store sits on ext4 over dm-flakey. Files are made durable
# each way an application can (fsync, fdatasync, O_SYNC, fsync of the directory for new names,
# rename + directory fsync), one is left unsynced, then the device drops every write from that
# instant on (xfstests' power cut: nothing after it reaches the disk), the daemon is killed and
# everything torn down. ext4 recovers its journal from what reached the disk. Every synced file
# must read back whole and fsck must be clean; unsynced data may be missing or short, never EIO.
# Periodic writeback and journal commits are held off, so only what was synced is on the disk: a
# daemon that skipped a sync loses that file here.
pc_table() { echo "0 $(blockdev --getsz "$1") flakey $1 0 $2"; }
# No udev here: libdevmapper makes the /dev/mapper nodes itself only when told so.
export DM_DISABLE_UDEV=1
t_synced_data_survives_power_loss() {
    pc_run
    rc=$?
    # Whatever happened, nothing of this case is left for the next one.
    echo 3000 >/proc/sys/vm/dirty_expire_centisecs && echo 500 >/proc/sys/vm/dirty_writeback_centisecs
    if grep -q " /mnt/f " /proc/mounts; then
        for p in $(pidof secretfs); do kill -9 "$p"; done
        umount -l /mnt/f
    fi
    if grep -q " /mnt/p " /proc/mounts; then umount /mnt/p || rc=1; fi
    if [ -e /dev/mapper/pcut ]; then dmsetup remove pcut || rc=1; fi
    if [ -n "${loop:-}" ]; then losetup -d "$loop" || rc=1; fi
    rm -f /data/pcut.img
    return $rc
}
pc_run() {
    loop=
    truncate -s 32M /data/pcut.img
    loop=$(losetup -f --show /data/pcut.img) || return 1
    dmsetup create pcut --table "$(pc_table "$loop" "180 0")" || return 1
    mkdir -p /mnt/p /mnt/f
    mkfs.ext4 -q /dev/mapper/pcut && mount -o commit=600 /dev/mapper/pcut /mnt/p || return 1
    echo 360000 >/proc/sys/vm/dirty_expire_centisecs && echo 0 >/proc/sys/vm/dirty_writeback_centisecs
    $S init /mnt/p/store --key keyfile:/key >/dev/null && sync /mnt/p/store /mnt/p || return 1
    $S mount /mnt/p/store /mnt/f -o log=/tmp/pcut.log || { cat /tmp/pcut.log; return 1; }
    long=$(printf 'long-%0200d' 0)
    for n in early fsync fdatasync osync osync_old dirsync longname renamed unsynced; do
        head -c $((100000 + $(od -An -N2 -tu2 /dev/urandom))) /dev/urandom >"/tmp/pc.$n"
    done
    # Written before the syncs, so its creation rides in the journal commits they force.
    cp /tmp/pc.early /mnt/f/early || return 1
    cp /tmp/pc.fsync /mnt/f/fsync && sync /mnt/f/fsync || return 1
    cp /tmp/pc.fdatasync /mnt/f/fdatasync && sync -d /mnt/f/fdatasync || return 1
    /usr/bin/dd if=/tmp/pc.osync of=/mnt/f/osync bs=64k oflag=sync status=none || return 1
    # An existing file, synced once, then rewritten in place through an O_SYNC open.
    head -c "$(stat -c %s /tmp/pc.osync_old)" /dev/zero >/mnt/f/osync_old && sync /mnt/f/osync_old /mnt/f || return 1
    /usr/bin/dd if=/tmp/pc.osync_old of=/mnt/f/osync_old bs=64k oflag=sync conv=notrunc status=none || return 1
    mkdir /mnt/f/d && sync /mnt/f || return 1
    cp /tmp/pc.dirsync /mnt/f/d/new && cp /tmp/pc.longname "/mnt/f/d/$long" || return 1
    sync /mnt/f/d/new "/mnt/f/d/$long" /mnt/f/d || return 1
    cp /tmp/pc.renamed /mnt/f/renamed.tmp && sync /mnt/f/renamed.tmp || return 1
    mv /mnt/f/renamed.tmp /mnt/f/renamed && sync /mnt/f || return 1
    cp /tmp/pc.unsynced /mnt/f/unsynced || return 1
    # The power cut. --nolockfs: a plain suspend would freeze ext4, which writes everything out.
    dmsetup suspend --nolockfs pcut && dmsetup load pcut --table "$(pc_table "$loop" "0 180 1 drop_writes")" &&
        dmsetup resume pcut || return 1
    echo lost >/mnt/f/after && sync /mnt/f/after /mnt/f || return 1
    set -- $(pidof secretfs)
    [ $# -eq 1 ] || { echo "expected one daemon, found: $*"; return 1; }
    pid=$1
    kill -9 "$pid"
    i=0
    while [ -d "/proc/$pid" ] && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    [ ! -d "/proc/$pid" ] || { echo "daemon $pid did not die"; return 1; }
    umount /mnt/f && umount /mnt/p && dmsetup remove pcut || return 1
    # Power back: the same disk through a pass-through table; mounting replays the journal.
    dmsetup create pcut --table "$(pc_table "$loop" "180 0")" && mount /dev/mapper/pcut /mnt/p || return 1
    rc=0
    [ ! -e /mnt/p/store/secretfs.conf ] && { echo "the store's config is gone"; rc=1; }
    expect 0 "" $S fsck /mnt/p/store || rc=1
    $S mount /mnt/p/store /mnt/f -o log=/tmp/pcut2.log || { cat /tmp/pcut2.log; rc=1; }
    for pair in fsync:fsync fdatasync:fdatasync osync:osync osync_old:osync_old dirsync:d/new \
        "longname:d/$long" renamed:renamed; do
        cmp "/tmp/pc.${pair%%:*}" "/mnt/f/${pair#*:}" || { echo "synced file ${pair%%:*} did not survive"; rc=1; }
    done
    [ ! -e /mnt/f/renamed.tmp ] || { echo "renamed.tmp still there"; rc=1; }
    [ ! -e /mnt/f/after ] || { echo "a write after the cut reached the disk: no power cut happened"; rc=1; }
    # Unsynced files: gone, or a prefix of what was written (possibly empty); a read never fails.
    for n in early unsynced; do
        [ -e "/mnt/f/$n" ] || { echo "$n: gone"; continue; }
        cat "/mnt/f/$n" >/tmp/pc.read || { echo "$n: read failed"; rc=1; continue; }
        size=$(stat -c %s /tmp/pc.read)
        head -c "$size" "/tmp/pc.$n" | cmp - /tmp/pc.read || { echo "$n: not a prefix"; rc=1; }
        echo "$n: $size of $(stat -c %s "/tmp/pc.$n") bytes"
    done
    if grep -q integrity_failure /tmp/pcut2.log; then echo "integrity failures:"; grep integrity_failure /tmp/pcut2.log; rc=1; fi
    $S umount /mnt/f || rc=1
    return $rc
}
# Key slots (issue 14 item 4): one small image volume made with a key file and a recovery key,
# a second key file added, each slot opening it, refusals, and the emergency path with a stock
# cryptsetup and the recovery key alone.
V=/data/slots.img
rkey() { grep -oE '[0-9]{6}(-[0-9]{6}){16}' "$1"; }
t_slots_new_volume_with_recovery() {
    expect 0 "formatted and opened .*slot 0" $S block open $V /mnt/b --size 64M --key keyfile:/key --recovery || return 1
    rkey /tmp/exp >/tmp/rk || { echo "no recovery key printed"; return 1; }
    grep -q "cryptsetup open $V" /tmp/exp || { echo "no emergency instructions"; return 1; }
    echo slot-data >/mnt/b/x && (cd /mnt/b && sha256sum x) >/tmp/ssums
    $S block close /mnt/b || return 1
    cryptsetup luksDump $V >/tmp/dump && cat /tmp/dump
    grep -qE '^  0: luks2' /tmp/dump && grep -qE '^  1: luks2' /tmp/dump && ! grep -qE '^  2: luks2' /tmp/dump || return 1
    [ "$(grep -c 'secretfs' /tmp/dump)" -eq 2 ] || { echo "expected two secretfs tokens"; return 1; }
}
t_slots_add_and_list() {
    head -c 32 /dev/urandom >/key3 && chmod 0400 /key3
    expect 0 "added slot 2 (keyfile) to volume" $S key add $V --new-key keyfile:/key3 || return 1
    expect 0 "3 slot(s)" $S key list $V || return 1
    grep -q "slot 0: keyfile /key \[pinned\]" /tmp/exp && grep -q "slot 1: recovery \[pinned\]" /tmp/exp &&
        grep -q "slot 2: keyfile /key3 \[pinned\]" /tmp/exp
}
reads_back() { (cd /mnt/b && sha256sum -c /tmp/ssums) && $S block close /mnt/b; }
t_slots_open_each() {
    expect 0 "key source keyfile (slot 0)" $S block open $V /mnt/b --slot 0 && reads_back || return 1
    expect 0 "key source keyfile (slot 2)" $S block open $V /mnt/b --slot 2 && reads_back || return 1
    # The other key file alone: slot 0 refuses it (audited), slot 2 takes it.
    expect 0 "key source keyfile (slot 2)" $S block open $V /mnt/b --key keyfile:/key3 && reads_back || return 1
    expect 0 "key source recovery (slot 1)" $S block open $V /mnt/b --key recovery --passphrase-fd 3 3</tmp/rk &&
        reads_back || return 1
    # Typed without dashes, as a person might.
    tr -d - </tmp/rk >/tmp/rk-plain
    expect 0 "(slot 1)" $S block open $V /mnt/b --slot 1 --passphrase-fd 3 3</tmp/rk-plain && reads_back
}
# A well-formed recovery key (each group a multiple of 11, the checksum group right) that is
# not this volume's: computed here in shell, independently of the Rust codec.
other_recovery_key() {
    h=$(head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n')
    sum=$(printf %s "$h" | { unhex "$(cat)"; } | sha256sum | cut -c1-4)
    out= i=0
    while [ $i -lt 16 ]; do
        w=$(echo "$h" | cut -c$((i * 4 + 1))-$((i * 4 + 4)))
        out=$out$(printf %06d $((0x$w * 11)))-
        i=$((i + 1))
    done
    echo "$out$(printf %06d $((0x$sum * 11)))"
}
t_slots_wrong_recovery_key() {
    other_recovery_key >/tmp/rk-other
    expect 3 "wrong recovery key" $S block open $V /mnt/b --key recovery --passphrase-fd 3 3</tmp/rk-other || return 1
    no_mapping && ! grep -q " /mnt/b " /proc/mounts || return 1
    sed 's/^\(.\)/X/' /tmp/rk >/tmp/rk-typo
    expect 3 "group 1 of the recovery key is mistyped" $S block open $V /mnt/b --key recovery --passphrase-fd 3 3</tmp/rk-typo &&
        no_mapping
}
# The emergency path: no secretfs at all, the recovery key typed at cryptsetup's prompt (a
# line on stdin, newline ending it, is what cryptsetup reads as a typed passphrase).
t_slots_stock_cryptsetup_recovery() {
    cryptsetup open $V emergency </tmp/rk || return 1
    stock_mapping_reads_back emergency /tmp/ssums
}
# A keyslot with no token (a `key add` killed between luksAddKey and the token import): never
# tried, listed, and wiped by `key remove`.
t_slots_untokened_keyslot() {
    printf 'stray-passphrase' >/tmp/stray
    # A key file is read whole: the recovery key without the newline grep ended it with.
    tr -d '\n' </tmp/rk | cryptsetup luksAddKey -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
        --key-file - --new-key-slot 5 $V /tmp/stray || return 1
    expect 0 "keyslot 5: no secretfs token" $S key list $V || return 1
    expect 0 "(slot 0)" $S block open $V /mnt/b && reads_back || return 1
    expect 0 "wiped keyslot 5" $S key remove $V 5 || return 1
    ! cryptsetup luksDump $V | grep -qE '^  5: luks2'
}
t_slots_remove_refusals() {
    expect 2 "opened the volume for this command" $S key remove $V 0 --slot 0 || return 1
    expect 0 "removed slot 2 (keyfile)" $S key remove $V 2 || return 1
    cryptsetup luksDump $V | grep -qE '^  2: luks2' && { echo "keyslot 2 still there"; return 1; }
    expect 0 "removed slot 1 (recovery)" $S key remove $V 1 || return 1
    expect 2 "is the last slot" $S key remove $V 0 --force || return 1
    # --force takes away the slot in hand once another one exists (no other passphrase to
    # verify with: cryptsetup wipes it in batch mode).
    expect 0 "added slot 1 (keyfile)" $S key add $V --new-key keyfile:/key3 || return 1
    expect 0 "removed slot 0 (keyfile)" $S key remove $V 0 --slot 0 --force || return 1
    expect 0 "1 slot(s)" $S key list $V && grep -q "slot 1: keyfile /key3 \[pinned\]" /tmp/exp || return 1
    expect 3 "" $S block open $V /mnt/b --key keyfile:/key || return 1
    no_mapping && expect 0 "(slot 1)" $S block open $V /mnt/b && reads_back && no_loop
}
t_slots_recovery_refused_on_existing_volume() {
    expect 2 "already one" $S block open $V /mnt/b --recovery && no_mapping && no_loop
}

# Block mode with a KMS key (issue 17). The guest has no network: run.sh creates a key in moto on
# the host, writes /kms.env (its ARN and the port below) and relays HTTP between a virtio-serial
# port and moto (tests/vm/kms-relay.py, which logs every request). Here a loop of busybox nc
# hands each TCP connection on the loopback, one at a time, to that port. (This nc cannot bind
# one address; the guest has no interface but lo, which the case checks.) The SDK reads the
# endpoint and the emulator's fake credentials from the environment: no key material.
KV=/data/kms.img
kms_listen() {
    [ -f /kms.env ] || return 0
    . /kms.env
    [ -n "${KMS_KEY_ARN:-}" ] || return 0
    ip link set lo up || { KMS_BROKEN="cannot bring lo up"; return 1; }
    port= i=0
    while [ -z "$port" ] && [ "$i" -lt 100 ]; do
        for p in /sys/class/virtio-ports/*; do
            [ "$(cat "$p/name" 2>/dev/null)" = secretfs.kms ] && port=/dev/${p##*/}
        done
        [ -n "$port" ] || sleep 0.05
        i=$((i + 1))
    done
    [ -c "$port" ] || { KMS_BROKEN="no virtio-serial port named secretfs.kms"; return 1; }
    (
        exec 3<>"$port"
        while :; do nc -l -p "$KMS_PORT" <&3 >&3 2>>/tmp/kms-nc.log || sleep 0.1; done
    ) &
    export AWS_ENDPOINT_URL="http://127.0.0.1:$KMS_PORT" AWS_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
        AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
}
# Whether this run has KMS: exit 77 (skip) when the host had no emulator, a failure when the
# path to it is broken.
kms_ready() {
    if [ -n "${KMS_BROKEN:-}" ]; then echo "KMS path broken: $KMS_BROKEN"; return 1; fi
    [ -n "${KMS_KEY_ARN:-}" ] && return 0
    echo "${KMS_SKIP:-no /kms.env from the host}"
    return 77
}
# kms_call OP OUTCOME: the last command (/tmp/exp) audited KMS call OP, with OUTCOME (ok or
# failed) and a request id, which goes to the host: it must find that id in the relay's log.
kms_call() {
    line=$(grep 'event="kms"' /tmp/exp | grep "operation=\"$1\"" | tail -n 1)
    [ -n "$line" ] || { echo "no audit event for KMS $1"; return 1; }
    rid=$(echo "$line" | sed -n 's/.*request_id="\([^"]*\)".*/\1/p')
    [ -n "$rid" ] || { echo "KMS $1 audited without a request id"; return 1; }
    case $line in *'outcome="ok"'*) outcome=ok ;; *) outcome=failed ;; esac
    [ "$outcome" = "$2" ] || { echo "KMS $1: outcome $outcome, expected $2"; return 1; }
    echo "KMSCALL $1 $rid $outcome" >"$R"
}
t_kms_blank_volume_formats_and_reopens() {
    kms_ready || return
    [ "$(ls /sys/class/net)" = lo ] || { echo "interfaces besides lo:"; ls /sys/class/net; return 1; }
    expect 0 "formatted and opened .*key source kms (slot 0)" \
        $S block open $KV /mnt/b --size 64M --key kms --kms-key "$KMS_KEY_ARN" --aws-timeout 30 || return 1
    kms_call GenerateDataKey ok || return 1
    cryptsetup token export --token-id 0 $KV | grep -q "$KMS_KEY_ARN" || { echo "the token does not name the key"; return 1; }
    echo kms-data >/mnt/b/k && (cd /mnt/b && sha256sum k) >/tmp/ksums
    $S block close /mnt/b && no_mapping && no_loop || return 1
    # No --key: the pinned slot says kms; its key unwraps only through KMS Decrypt.
    expect 0 "^opened .*key source kms (slot 0)" $S block open $KV /mnt/b --aws-timeout 30 || return 1
    kms_call Decrypt ok || return 1
    (cd /mnt/b && sha256sum -c /tmp/ksums) && $S block close /mnt/b && no_loop
}
# KMS down (the endpoint pointed at a port where nothing listens): exit 8, nothing left behind,
# and the volume opens with its data once KMS answers again.
t_kms_unreachable_leaves_nothing_behind() {
    kms_ready || return
    expect 8 "cannot reach AWS KMS at http://127.0.0.1:9 within 3 s " \
        env AWS_ENDPOINT_URL=http://127.0.0.1:9 $S block open $KV /mnt/b --aws-timeout 3 || return 1
    no_mapping && no_loop || return 1
    ! grep -q " /mnt/b " /proc/mounts || { echo "/mnt/b is mounted"; return 1; }
    expect 0 "^opened .*key source kms" $S block open $KV /mnt/b --aws-timeout 30 || return 1
    kms_call Decrypt ok || return 1
    (cd /mnt/b && sha256sum -c /tmp/ksums) && $S block close /mnt/b && no_loop
}
# A KMS key that does not exist: exit 7 naming it, and the image this open created is gone.
t_kms_missing_key_refused() {
    kms_ready || return
    nokey=${KMS_KEY_ARN%/*}/00000000-0000-4000-8000-000000000000
    expect 7 "KMS key $nokey does not exist" \
        $S block open /data/kms-nokey.img /mnt/b --size 64M --key kms --kms-key "$nokey" --aws-timeout 30 || return 1
    kms_call GenerateDataKey failed || return 1
    no_mapping && no_loop || return 1
    [ ! -e /data/kms-nokey.img ] || { echo "the image this open created is still there"; return 1; }
    ! grep -q " /mnt/b " /proc/mounts || { echo "/mnt/b is mounted"; return 1; }
}

# A KMS slot made with --region/--endpoint-url records them in its token (as `init` does in a
# file-mode slot), so the volume opens through that endpoint with no flags, whatever the
# environment says; a malformed endpoint is refused before anything is formatted.
t_kms_slot_records_its_endpoint() {
    kms_ready || return
    ep=http://127.0.0.1:$KMS_PORT dead=http://127.0.0.1:9 img=/data/kms-ep.img
    expect 2 "endpoint" $S block open $img /mnt/b --size 64M --key kms --kms-key "$KMS_KEY_ARN" \
        --endpoint-url "ftp://127.0.0.1:$KMS_PORT" || return 1
    [ ! -e $img ] || { echo "a refused endpoint still created $img"; return 1; }
    expect 0 "formatted and opened .*key source kms (slot 0)" env AWS_ENDPOINT_URL=$dead \
        $S block open $img /mnt/b --size 64M --key kms --kms-key "$KMS_KEY_ARN" \
        --region us-east-1 --endpoint-url "$ep" --aws-timeout 30 || return 1
    kms_call GenerateDataKey ok || return 1
    token=$(cryptsetup token export --token-id 0 $img)
    for want in "\"endpoint\":\"$ep\"" '"region":"us-east-1"'; do
        echo "$token" | grep -qF "$want" || { echo "the token lacks $want: $token"; return 1; }
    done
    $S block close /mnt/b && no_loop || return 1
    expect 0 "^opened .*key source kms (slot 0)" env AWS_ENDPOINT_URL=$dead \
        $S block open $img /mnt/b --aws-timeout 30 || return 1
    kms_call Decrypt ok || return 1
    $S block close /mnt/b && no_loop || return 1
    # A first use (no pin on this host): the token is not authenticated, so the placement it
    # names is tried, and pinned, only when the command line names it too.
    uuid=$(cryptsetup luksUUID $img) && rm -f "/etc/secretfs/pins/$uuid.json" || return 1
    expect 3 "names an AWS placement (--region us-east-1 --endpoint-url $ep)" \
        $S block open $img /mnt/b --key kms --kms-key "$KMS_KEY_ARN" --aws-timeout 30 || return 1
    ! grep -q 'event="kms"' /tmp/exp || { echo "KMS was called for an unchecked placement"; return 1; }
    no_mapping && no_loop && [ ! -e "/etc/secretfs/pins/$uuid.json" ] || return 1
    expect 0 "^opened .*key source kms (slot 0)" $S block open $img /mnt/b --key kms \
        --kms-key "$KMS_KEY_ARN" --region us-east-1 --endpoint-url "$ep" --aws-timeout 30 || return 1
    kms_call Decrypt ok || return 1
    [ -f "/etc/secretfs/pins/$uuid.json" ] || { echo "the first open pinned nothing"; return 1; }
    $S block close /mnt/b && no_loop && rm -f $img
}

# The one key every persistent case uses; 32 random bytes, root-only.
head -c 32 /dev/urandom >/key && chmod 0400 /key
# The kernel hands unknown `name=value` boot parameters to init as environment: `cases=a,b`.
cases=$(echo "${cases:-}" | tr ',' ' ')
cases=${cases:-"open_blank_formats luks2_parameters status_shows_block_volume close
    reopen_keeps_data_formats_once default_key_from_token wrong_key_refused token_substitution_refused
    foreign_ext4_refused foreign_luks_refused busy_refused close_busy_refused cryptsetup_missing
    file_target_via_loop
    failure_undoes_everything ephemeral_starts_empty plain_cryptsetup_opens fstab_mount_umount
    file_mode_in_the_same_vm synced_data_survives_power_loss slots_new_volume_with_recovery
    slots_add_and_list slots_open_each slots_wrong_recovery_key slots_stock_cryptsetup_recovery
    slots_untokened_keyslot slots_remove_refusals slots_recovery_refused_on_existing_volume
    kms_blank_volume_formats_and_reopens kms_unreachable_leaves_nothing_behind kms_missing_key_refused
    kms_slot_records_its_endpoint"}
kms_listen
for c in $cases; do
    case_ "$c"
done
echo DONE >"$R"
