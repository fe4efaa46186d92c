//! Key slots end to end, as an operator uses them: a recovery key and key files at init and by
//! `key add`, removal and its refusals, a slot the host never pinned, a KMS region taken away, a
//! deleted KMS key, and `kill -9` in the middle of a change; real binary, real FUSE, real SDK.

mod common;

use common::aws::{fails, ok, stderr, Admin, Inst, PrivateMoto};
use std::path::Path;
use std::process::Output;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The recovery key printed once by init / key add: 17 dash-separated groups of 6 digits.
fn recovery_key_in(out: &Output) -> String {
    stdout(out)
        .split_whitespace()
        .find(|w| w.len() == 17 * 7 - 1 && w.split('-').count() == 17)
        .unwrap_or_else(|| panic!("no recovery key in: {}", stdout(out)))
        .to_string()
}

fn slots_of(inst: &Inst) -> serde_json::Value {
    let out = inst.run(&["key", "list", inst.backing.to_str().unwrap(), "--json"]);
    ok(&out);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["slots"].clone()
}

fn ids(slots: &serde_json::Value) -> Vec<u64> {
    slots
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect()
}

/// A file holding a recovery key, readable by root only, handed over as a command's output.
fn secret_file(dir: &Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    format!("cat {}", path.display())
}

/// A moto server of the test's own (to take away), one KMS key in it, and an instance using it;
/// `None` where the test skips (no FUSE, no moto).
fn with_private_kms() -> Option<(PrivateMoto, String, Inst)> {
    if !common::can_mount() {
        return None;
    }
    let moto = PrivateMoto::start()?;
    let (key, _) = Admin::new(&moto.endpoint).key();
    let inst = Inst::new(&moto.endpoint);
    Some((moto, key, inst))
}

/// Asserts that the log holds a `slot` audit event of `slot` whose line contains `needle`.
fn has_slot_event(log: &str, slot: u32, needle: &str) {
    let field = format!("slot={slot} ");
    assert!(
        events(log, "slot")
            .iter()
            .any(|l| l.contains(&field) && l.contains(needle)),
        "no `slot` event of slot {slot} with `{needle}` in:\n{log}"
    );
}

/// Audit events of one kind in a log, as (field, value) lookups on each line.
fn events<'a>(log: &'a str, kind: &str) -> Vec<&'a str> {
    let tag = format!("event=\"{kind}\"");
    log.lines().filter(|l| l.contains(&tag)).collect()
}

#[test]
fn recovery_and_key_file_slots_open_alone_and_removal_refuses_what_would_lock_out() {
    if !common::can_mount() {
        return;
    }
    let mut inst = Inst::new("http://127.0.0.1:9");
    let dir = inst.dir.path().to_path_buf();
    let (k1, k2) = (dir.join("k1"), dir.join("k2"));
    let backing = inst.backing.to_str().unwrap().to_string();

    let out = inst.init(&["--key", &format!("keyfile:{}", k1.display()), "--recovery"]);
    ok(&out);
    let recovery = recovery_key_in(&out);
    // Shown once, stored nowhere: not in the config, the pin, or any file of the store.
    for (_, bytes) in common::snapshot(&inst.backing) {
        assert!(!String::from_utf8_lossy(&bytes).contains(&recovery[..20]));
    }
    let slots = slots_of(&inst);
    assert_eq!(ids(&slots), [0, 1]);
    assert_eq!(slots[0]["key_source"], "keyfile");
    assert_eq!(slots[0]["direct"], true);
    assert_eq!(slots[1]["key_source"], "recovery");
    assert_eq!(slots[1]["direct"], false);
    assert!(slots
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["pinned"] == true));
    assert_eq!(inst.config()["format_version"], 2);

    ok(&inst.mount(&[]));
    std::fs::write(inst.mnt.join("f"), b"kept across slots").unwrap();
    inst.umount();

    // A second key file, added with the first one.
    let out = inst.run(&[
        "key",
        "add",
        &backing,
        "--new-key",
        &format!("keyfile:{}", k2.display()),
    ]);
    ok(&out);
    assert!(
        stdout(&out).contains("added slot 2 (keyfile)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(ids(&slots_of(&inst)), [0, 1, 2]);
    assert!(!stdout(&out).contains("recovery key"));

    // fsck opens every slot it can without a person: a key file gone is reported by slot.
    std::fs::rename(&k2, dir.join("k2.away")).unwrap();
    let fsck = inst.run(&["fsck", &backing, "--json"]);
    assert_eq!(fsck.status.code(), Some(4), "{}", stderr(&fsck));
    let report: serde_json::Value = serde_json::from_slice(&fsck.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["kind"], "key-slot");
    assert!(problems[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("slot 2 (keyfile) does not open"));
    std::fs::rename(dir.join("k2.away"), &k2).unwrap();
    let fsck = inst.run(&["fsck", &backing]);
    assert_eq!(fsck.status.code(), Some(0), "{}", stderr(&fsck));

    // The recovery key alone opens it; a well-formed wrong one and a typo are refused (exit 3).
    let other = secretfs::crypto::recovery::RecoveryKey::generate()
        .display()
        .to_string();
    let wrong = secret_file(&dir, "wrong", &other);
    fails(
        &inst.mount(&["--key", "recovery", "--passphrase-command", &wrong]),
        3,
        "wrong recovery key",
    );
    let mut typo = recovery.clone();
    let first = if typo.starts_with('9') { "8" } else { "9" };
    typo.replace_range(0..1, first);
    let typo = secret_file(&dir, "typo", &typo);
    fails(
        &inst.mount(&["--key", "recovery", "--passphrase-command", &typo]),
        3,
        "group 1 of the recovery key is mistyped",
    );
    let right = secret_file(&dir, "right", &recovery);
    ok(&inst.mount(&["--key", "recovery", "--passphrase-command", &right]));
    assert_eq!(
        std::fs::read(inst.mnt.join("f")).unwrap(),
        b"kept across slots"
    );
    inst.umount();
    let log = std::fs::read_to_string(&inst.log).unwrap();
    has_slot_event(&log, 1, "outcome=\"ok\"");
    has_slot_event(&log, 1, "wrong recovery key");

    // Removing the slot that opened the command needs --force; nothing changes without it.
    let before = std::fs::read(inst.backing.join("secretfs.conf")).unwrap();
    fails(
        &inst.run(&["key", "remove", &backing, "0"]),
        2,
        "opened the filesystem",
    );
    assert_eq!(
        std::fs::read(inst.backing.join("secretfs.conf")).unwrap(),
        before
    );
    fails(
        &inst.run(&["key", "remove", &backing, "7", "--slot", "2"]),
        2,
        "has no slot 7",
    );

    // Slot 0 removed while unlocked with slot 2: k1 opens nothing any more, k2 does.
    ok(&inst.run(&["key", "remove", &backing, "0", "--slot", "2"]));
    assert_eq!(ids(&slots_of(&inst)), [1, 2]);
    fails(
        &inst.mount(&["--key", &format!("keyfile:{}", k1.display())]),
        3,
        "does not open this filesystem",
    );
    ok(&inst.mount(&[]));
    assert_eq!(
        std::fs::read(inst.mnt.join("f")).unwrap(),
        b"kept across slots"
    );
    inst.umount();

    // Down to the recovery slot, which can never be removed, not even with --force.
    ok(&inst.run(&["key", "remove", &backing, "2", "--slot", "2", "--force"]));
    fails(
        &inst.run(&[
            "key",
            "remove",
            &backing,
            "1",
            "--force",
            "--key",
            "recovery",
            "--passphrase-command",
            &right,
        ]),
        2,
        "is the last slot",
    );
    assert_eq!(ids(&slots_of(&inst)), [1]);
    let fsck = inst.run(&[
        "fsck",
        &backing,
        "--key",
        "recovery",
        "--passphrase-command",
        &right,
    ]);
    assert_eq!(fsck.status.code(), Some(0), "{}", stderr(&fsck));
}

#[test]
fn a_slot_this_host_never_pinned_is_never_tried() {
    if !common::can_mount() {
        return;
    }
    let mut inst = Inst::new("http://127.0.0.1:9");
    let dir = inst.dir.path().to_path_buf();
    let backing = inst.backing.to_str().unwrap().to_string();
    ok(&inst.init(&["--key", &format!("keyfile:{}", dir.join("k1").display())]));
    // This host's pin of the one-key filesystem, as it was before another host added a slot.
    let fs_id = inst.config()["fs_id"].as_str().unwrap().to_string();
    let pin_path = format!("/etc/secretfs/pins/{fs_id}.json");
    let old_pin = std::fs::read(&pin_path).unwrap();
    let k2 = format!("keyfile:{}", dir.join("k2").display());
    ok(&inst.run(&["key", "add", &backing, "--new-key", &k2]));
    // Format 1 became format 2 on the first add; its slot 0 is the old source, byte for byte.
    assert_eq!(inst.config()["format_version"], 2);
    std::fs::write(&pin_path, &old_pin).unwrap();
    let slots = slots_of(&inst);
    assert_eq!(slots[0]["pinned"], true);
    assert_eq!(slots[1]["pinned"], false);

    // The unpinned slot is refused by name and skipped (audited) by default.
    fails(
        &inst.mount(&["--slot", "1"]),
        3,
        "there is no slot 1 in the pin",
    );
    // A key file named on the command line is tried against the pinned key-file slot only.
    fails(
        &inst.mount(&["--key", &k2]),
        3,
        "does not open this filesystem",
    );
    ok(&inst.mount(&[]));
    inst.umount();
    let log = std::fs::read_to_string(&inst.log).unwrap();
    has_slot_event(&log, 1, "skipped: not pinned on this host");
    let fsck = inst.run(&["fsck", &backing, "--json"]);
    assert_eq!(fsck.status.code(), Some(4), "{}", stderr(&fsck));
    let report: serde_json::Value = serde_json::from_slice(&fsck.stdout).unwrap();
    assert!(
        report["problems"].as_array().unwrap().iter().any(
            |p| p["kind"] == "key-slot" && p["detail"].as_str().unwrap().contains("not pinned")
        ),
        "{report}"
    );
    // A slot planted in the config (a KMS key behind an endpoint the attacker runs): the edit
    // breaks the MAC, and the planted slot is never contacted on the way to finding that out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let evil = format!("http://{}", listener.local_addr().unwrap());
    let conf = inst.backing.join("secretfs.conf");
    let authentic = std::fs::read(&conf).unwrap();
    let mut edited = inst.config();
    let mut planted = edited["slots"][1].clone();
    planted["id"] = 9.into();
    planted["source"] =
        serde_json::json!({"type": "kms", "key_id": "alias/evil", "wrapped_key": "AQID"});
    planted["endpoint"] = evil.clone().into();
    edited["slots"].as_array_mut().unwrap().push(planted);
    std::fs::write(&conf, serde_json::to_vec_pretty(&edited).unwrap()).unwrap();
    fails(&inst.mount(&[]), 3, "config MAC mismatch");
    fails(
        &inst.mount(&["--slot", "9"]),
        3,
        "there is no slot 9 in the pin",
    );
    assert!(
        listener.accept().is_err(),
        "a planted slot's endpoint was contacted"
    );
    std::fs::write(&conf, &authentic).unwrap();

    // `secretfs pin` with a key that opens it trusts every slot again.
    ok(&inst.run(&["pin", &backing, "--key", &k2]));
    assert!(slots_of(&inst)
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["pinned"] == true));
    ok(&inst.mount(&["--slot", "1"]));
}

#[test]
fn with_one_regions_kms_down_the_other_regions_slot_opens_within_the_deadline() {
    if !common::can_mount() {
        return;
    }
    let (Some(moto_a), Some(moto_b)) = (PrivateMoto::start(), PrivateMoto::start()) else {
        return;
    };
    let (key_a, _) = Admin::in_region(&moto_a.endpoint, "us-east-1").key();
    let (key_b, _) = Admin::in_region(&moto_b.endpoint, "eu-west-1").key();
    assert!(key_b.contains(":eu-west-1:"), "{key_b}");
    let mut inst = Inst::new(&moto_a.endpoint);
    let backing = inst.backing.to_str().unwrap().to_string();
    let out = inst.init(&[
        "--key",
        "kms",
        "--kms-key",
        &key_a,
        "--endpoint-url",
        &moto_a.endpoint,
        "--region",
        "us-east-1",
        "--recovery",
    ]);
    ok(&out);
    let recovery = recovery_key_in(&out);
    ok(&inst.run(&[
        "key",
        "add",
        &backing,
        "--new-key",
        "kms",
        "--new-kms-key",
        &key_b,
        "--new-endpoint-url",
        &moto_b.endpoint,
    ]));
    let slots = slots_of(&inst);
    assert_eq!(ids(&slots), [0, 1, 2]);
    assert_eq!(
        slots[0]["endpoint"].as_str(),
        Some(moto_a.endpoint.as_str())
    );
    assert_eq!(
        slots[2]["region"], "eu-west-1",
        "the ARN's region is recorded"
    );
    assert_eq!(
        slots[2]["endpoint"].as_str(),
        Some(moto_b.endpoint.as_str())
    );
    assert_eq!(slots[2]["key"].as_str(), Some(key_b.as_str()));
    // Rewrapping slot 2 moves its blob to another key of region B (ReEncrypt there).
    let (key_b2, _) = Admin::in_region(&moto_b.endpoint, "eu-west-1").key();
    fails(
        &inst.run(&["rewrap", &backing, "--kms-key", &key_b2]),
        2,
        "several KMS slots",
    );
    ok(&inst.run(&["rewrap", &backing, "--slot", "2", "--kms-key", &key_b2]));
    assert_eq!(slots_of(&inst)[2]["key"].as_str(), Some(key_b2.as_str()));
    assert_eq!(slots_of(&inst)[2]["pinned"], true);
    ok(&inst.mount(&[]));
    std::fs::write(inst.mnt.join("f"), b"two regions").unwrap();
    inst.umount();

    // Region A's endpoint goes away (and stays the environment's default endpoint).
    let endpoint_a = moto_a.endpoint.clone();
    drop(moto_a);
    fails(
        &inst.mount(&["--slot", "0", "--aws-timeout", "3"]),
        8,
        "cannot reach AWS KMS",
    );
    std::fs::write(&inst.log, b"").unwrap();
    ok(&inst.mount(&["--slot-timeout", "3", "--aws-timeout", "40"]));
    assert_eq!(std::fs::read(inst.mnt.join("f")).unwrap(), b"two regions");
    inst.umount();
    let log = std::fs::read_to_string(&inst.log).unwrap();
    let attempts = events(&log, "slot");
    let slot0 = attempts
        .iter()
        .position(|l| l.contains("slot=0 ") && !l.contains("outcome=\"ok\""));
    let slot2 = attempts
        .iter()
        .position(|l| l.contains("slot=2 ") && l.contains("outcome=\"ok\""));
    assert!(
        matches!((slot0, slot2), (Some(a), Some(b)) if a < b),
        "expected slot 0 to fail, then slot 2 to open: {log}"
    );
    assert!(
        log.contains(&endpoint_a),
        "the failure names region A's endpoint: {log}"
    );
    has_slot_event(&log, 1, "skipped: a recovery key is used only when named");
    let kms = events(&log, "kms");
    assert!(
        kms.iter().any(|l| l.contains("slot=2 ")
            && l.contains("operation=\"Decrypt\"")
            && l.contains(&key_b2)
            && l.contains("outcome=\"ok\"")),
        "no Decrypt audit event for slot 2: {log}"
    );

    // The slot named in mount options (as in an fstab line) is the only one tried.
    std::fs::write(&inst.log, b"").unwrap();
    ok(&inst.mount(&["-o", "slot=2,slot-timeout=5"]));
    inst.umount();
    let log = std::fs::read_to_string(&inst.log).unwrap();
    assert!(
        !events(&log, "slot").iter().any(|l| l.contains("slot=0 ")),
        "slot 0 was tried although slot=2 was named: {log}"
    );

    // Region B gone too: the recovery key opens it with no AWS at all.
    drop(moto_b);
    let right = secret_file(inst.dir.path(), "right", &recovery);
    ok(&inst.mount(&["--key", "recovery", "--passphrase-command", &right]));
    assert_eq!(std::fs::read(inst.mnt.join("f")).unwrap(), b"two regions");
}

#[test]
fn a_deleted_kms_key_leaves_the_recovery_key_as_the_way_in() {
    let Some((moto, key, mut inst)) = with_private_kms() else {
        return;
    };
    let out = inst.init(&["--key", "kms", "--kms-key", &key, "--recovery"]);
    ok(&out);
    let recovery = recovery_key_in(&out);
    ok(&inst.mount(&[]));
    std::fs::write(inst.mnt.join("f"), b"survives its KMS key").unwrap();
    inst.umount();
    // moto enforces neither DisableKey nor a key policy for Decrypt, so the key is taken away
    // the only way it offers: every key of this private server is forgotten (deleted).
    moto.reset();
    fails(&inst.mount(&[]), 7, "does not exist");
    let right = secret_file(inst.dir.path(), "right", &recovery);
    ok(&inst.mount(&["--key", "recovery", "--passphrase-command", &right]));
    assert_eq!(
        std::fs::read(inst.mnt.join("f")).unwrap(),
        b"survives its KMS key"
    );
}

#[test]
fn kill_9_during_key_add_or_remove_leaves_a_store_that_opens_with_its_old_slots() {
    use rand::{Rng, SeedableRng};
    if !common::can_mount() {
        return;
    }
    let mut inst = Inst::new("http://127.0.0.1:9");
    let dir = inst.dir.path().to_path_buf();
    let backing = inst.backing.to_str().unwrap().to_string();
    ok(&inst.init(&["--key", &format!("keyfile:{}", dir.join("k1").display())]));
    ok(&inst.mount(&[]));
    std::fs::write(inst.mnt.join("f"), b"never lost").unwrap();
    inst.umount();
    let seed = common::fresh_seed("kill during key change");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut outcomes = (0, 0);
    let mut unpinned_left = 0;
    for round in 0..10 {
        let before = ids(&slots_of(&inst));
        // Even rounds add a passphrase slot (argon2id makes the command last long enough to be
        // killed anywhere in it); odd rounds remove the newest slot, unlocked with slot 0.
        let args: Vec<String> = if round % 2 == 0 || before.len() == 1 {
            let pass = format!("echo pass-{round}");
            [
                "key",
                "add",
                &backing,
                "--new-key",
                "passphrase",
                "--new-passphrase-command",
                &pass,
            ]
            .map(String::from)
            .to_vec()
        } else {
            let newest = before.last().unwrap().to_string();
            ["key", "remove", &backing, &newest, "--slot", "0"]
                .map(String::from)
                .to_vec()
        };
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_secretfs"));
        cmd.args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        // The fault's timing, drawn from the seed: anywhere from start-up to the commit.
        let delay = rng.gen_range(0..if round % 2 == 0 { 700 } else { 40 });
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            outcomes.1 += 1;
        } else {
            outcomes.0 += 1;
        }
        // The config is whole (old or new list). Every slot it had before is still pinned here,
        // but two: a slot added by a command killed between config and pin, and the slot a
        // command killed between pin and config was removing (both never tried). The operator
        // finishes what was interrupted: `pin` adopts the first, `key remove` again the second.
        let slots = slots_of(&inst);
        let after = ids(&slots);
        let grew = after.len() == before.len() + 1 && after.starts_with(&before);
        let shrank = after.len() + 1 == before.len() && before.starts_with(&after);
        assert!(
            after == before || grew || shrank,
            "round {round} (delay {delay} ms, seed {seed}): {before:?} -> {after:?}"
        );
        let removing = args[1] == "remove";
        for slot in slots.as_array().unwrap() {
            let id = slot["id"].as_u64().unwrap();
            let half_removed = removing && Some(&id) == before.last();
            let half_added = !before.contains(&id);
            if slot["pinned"] == true {
                continue;
            }
            assert!(
                half_added || half_removed,
                "round {round} (seed {seed}): slot {id} lost its pin: {slots}"
            );
            unpinned_left += 1;
            if half_added {
                let k1 = format!("keyfile:{}", dir.join("k1").display());
                ok(&inst.run(&["pin", &backing, "--key", &k1]));
            } else {
                ok(&inst.run(&["key", "remove", &backing, &id.to_string(), "--slot", "0"]));
                assert!(!ids(&slots_of(&inst)).contains(&id));
            }
        }
        ok(&inst.mount(&["--slot", "0"]));
        assert_eq!(std::fs::read(inst.mnt.join("f")).unwrap(), b"never lost");
        inst.umount();
    }
    eprintln!(
        "killed before the end: {}, finished: {}, a slot left unpinned: {unpinned_left}",
        outcomes.0, outcomes.1
    );
    // Every passphrase slot that survived is whole: one of the passphrases given opens it (an
    // odd round adds one too when the slot before it was not made).
    for slot in slots_of(&inst).as_array().unwrap() {
        if slot["key_source"] != "passphrase" {
            continue;
        }
        let id = slot["id"].as_u64().unwrap().to_string();
        let opens = (0..10).any(|round| {
            let pass = format!("echo pass-{round}");
            let fsck = inst.run(&[
                "fsck",
                &backing,
                "--slot",
                &id,
                "--passphrase-command",
                &pass,
            ]);
            fsck.status.code() == Some(0)
        });
        assert!(
            opens,
            "passphrase slot {id} opens with none of the passphrases (seed {seed})"
        );
    }
}

#[test]
fn a_passphrase_filesystem_with_a_recovery_key_mounts_with_its_passphrase_alone() {
    if !common::can_mount() {
        return;
    }
    let mut inst = Inst::new("http://127.0.0.1:9");
    let backing = inst.backing.to_str().unwrap().to_string();
    let out = inst.run_with_stdin(
        &[
            "init",
            &backing,
            "--key",
            "passphrase",
            "--passphrase-fd",
            "0",
            "--recovery",
        ],
        b"correct horse\n",
    );
    ok(&out);
    // Every slot needs a person: the passphrase is read once from the descriptor, the recovery
    // slot is not tried (nor asked for) unless named.
    std::fs::write(&inst.log, b"").unwrap();
    let opts = format!("log={}", inst.log.display());
    let mnt = inst.mnt.to_str().unwrap().to_string();
    let out = inst.run_with_stdin(
        &["mount", &backing, &mnt, "-o", &opts, "--passphrase-fd", "0"],
        b"correct horse\n",
    );
    ok(&out);
    inst.mounted = true;
    inst.umount();
    let log = std::fs::read_to_string(&inst.log).unwrap();
    has_slot_event(&log, 0, "outcome=\"ok\"");
    has_slot_event(&log, 1, "skipped: a recovery key is used only when named");
    // A wrong passphrase on the descriptor is refused as such.
    let out = inst.run_with_stdin(
        &["mount", &backing, &mnt, "-o", &opts, "--passphrase-fd", "0"],
        b"wrong horse\n",
    );
    fails(&out, 3, "wrong passphrase");
}

#[test]
fn a_key_file_slot_is_tried_even_after_unreachable_kms_slots_used_the_whole_deadline() {
    let Some((moto, key, mut inst)) = with_private_kms() else {
        return;
    };
    let backing = inst.backing.to_str().unwrap().to_string();
    ok(&inst.init(&["--key", "kms", "--kms-key", &key]));
    let k2 = format!("keyfile:{}", inst.dir.path().join("k2").display());
    ok(&inst.run(&["key", "add", &backing, "--new-key", &k2]));
    drop(moto);
    // Slot 0 (KMS, unreachable) takes the whole AWS deadline; slot 1 needs no network.
    std::fs::write(&inst.log, b"").unwrap();
    ok(&inst.mount(&["--aws-timeout", "2", "--slot-timeout", "1"]));
    inst.umount();
    let log = std::fs::read_to_string(&inst.log).unwrap();
    has_slot_event(&log, 0, "cannot reach AWS KMS");
    has_slot_event(&log, 1, "outcome=\"ok\"");
}

#[test]
fn an_older_config_restored_over_the_store_is_noticed_and_not_built_on() {
    if !common::can_mount() {
        return;
    }
    let mut inst = Inst::new("http://127.0.0.1:9");
    let dir = inst.dir.path().to_path_buf();
    let backing = inst.backing.to_str().unwrap().to_string();
    let k1 = format!("keyfile:{}", dir.join("k1").display());
    ok(&inst.init(&["--key", &k1, "--recovery"]));
    let conf = inst.backing.join("secretfs.conf");
    let last_week = std::fs::read(&conf).unwrap();
    let k2 = format!("keyfile:{}", dir.join("k2").display());
    ok(&inst.run(&["key", "add", &backing, "--new-key", &k2]));
    std::fs::write(&conf, &last_week).unwrap();

    // The store still opens with its pinned slots, and the mount says what it saw.
    ok(&inst.mount(&[]));
    inst.umount();
    let log = std::fs::read_to_string(&inst.log).unwrap();
    assert!(
        log.contains("a key slot this host pinned is missing"),
        "{log}"
    );
    // Building on it would silently drop slot 2 from the pin: refused, nothing changed.
    let k3 = format!("keyfile:{}", dir.join("k3").display());
    fails(
        &inst.run(&["key", "add", &backing, "--new-key", &k3]),
        3,
        "an older config may have been restored",
    );
    assert_eq!(std::fs::read(&conf).unwrap(), last_week);
    fails(
        &inst.run(&["key", "remove", &backing, "1"]),
        3,
        "an older config may have been restored",
    );
    // Trusting the config as it is, on purpose, lets the operator go on.
    let out = inst.run(&["pin", &backing, "--key", &k1]);
    ok(&out);
    ok(&inst.run(&["key", "add", &backing, "--new-key", &k3]));
    assert_eq!(ids(&slots_of(&inst)), [0, 1, 2]);
}
