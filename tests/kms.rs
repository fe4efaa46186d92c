//! The `kms` and `kms-password` key sources end to end: the real binary and the real AWS SDK
//! over HTTP against moto on loopback (SECRETFS_TEST_AWS_ENDPOINT), with real FUSE mounts.

mod common;

use common::aws::{endpoint, fails, ok, stderr, Admin, Inst, REGION};

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn kms_init_mount_write_then_mount_on_another_instance_with_only_the_s3_uri() {
    let Some(ep) = endpoint() else { return };
    let admin = Admin::new(&ep);
    let (arn, alias) = admin.key();
    let bucket = admin.bucket();
    let uri = format!("s3://{bucket}/fs/wrapped.key");
    let mut a = Inst::new(&ep);
    ok(&a.init(&[
        "--key",
        "kms",
        "--kms-key",
        &alias,
        "--wrapped-key",
        &uri,
        "--context",
        "app=test,tier=db",
    ]));
    let ks = &a.config()["key_source"];
    assert_eq!(ks["type"], "kms");
    assert_eq!(ks["key_arn"], arn.as_str());
    assert_eq!(ks["s3_uri"], uri.as_str());
    assert_eq!(ks["context"]["app"], "test");
    assert!(ks["wrapped_key"].as_str().is_some_and(|w| !w.is_empty()));

    // Default key source from the config.
    ok(&a.mount(&[]));
    std::fs::write(a.mnt.join("hello.txt"), b"from instance A").unwrap();
    a.umount();
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(
        log.contains("event=\"kms\"") && log.contains("Decrypt") && log.contains(&arn),
        "no KMS audit event in: {log}"
    );
    // A CloudTrail-joinable id, not the empty one the audit line prints when there is none.
    assert!(
        log.lines().any(|l| l.contains("Decrypt")
            && l.split("request_id=\"")
                .nth(1)
                .is_some_and(|r| !r.starts_with('"'))),
        "no KMS audit event with a request id: {log}"
    );

    // Instance B: a copy of the backing store, a fresh process, the S3 URI given explicitly.
    let mut b = Inst::new(&ep);
    let copy = b.dir.path().join("restored");
    let cp = Command::new("cp")
        .args(["-a", a.backing.to_str().unwrap(), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(cp.success());
    // Another host has no pin of A's: both instances share this machine's pin directory.
    let fs_id = a.config()["fs_id"].as_str().unwrap().to_string();
    let pin = format!("/etc/secretfs/pins/{fs_id}.json");
    std::fs::remove_file(&pin).unwrap();
    fails(&b.mount_at(&copy, &[]), 3, "has no key pin on this host");
    ok(&b.mount_at(&copy, &["--key", "kms", "--wrapped-key", &uri]));
    assert!(
        std::fs::read_to_string(&pin).unwrap().contains("restored"),
        "the first explicit mount did not pin B's store"
    );
    assert_eq!(
        std::fs::read(b.mnt.join("hello.txt")).unwrap(),
        b"from instance A"
    );
    b.umount();

    // A second init may not overwrite that object, and leaves nothing behind.
    let object = admin.get(&bucket, "fs/wrapped.key");
    let c = Inst::new(&ep);
    let out = c.init(&["--kms-key", &alias, "--wrapped-key", &uri]);
    fails(&out, 7, "already exists");
    assert!(!c.backing.exists(), "init wrote something on failure");
    assert_eq!(
        admin.get(&bucket, "fs/wrapped.key"),
        object,
        "the object was replaced"
    );
    // (This host's pin now names B's copy.)
    ok(&b.mount_at(&copy, &[]));
    assert_eq!(
        std::fs::read(b.mnt.join("hello.txt")).unwrap(),
        b"from instance A"
    );
    b.umount();
}

#[test]
fn kms_wrong_context_or_another_filesystems_blob_is_refused() {
    let Some(ep) = endpoint() else { return };
    let admin = Admin::new(&ep);
    let (_, alias) = admin.key();
    let bucket = admin.bucket();
    let uri_a = format!("s3://{bucket}/a.key");
    let uri_b = format!("s3://{bucket}/b.key");
    let mut a = Inst::new(&ep);
    ok(&a.init(&[
        "--key",
        "kms",
        "--kms-key",
        &alias,
        "--wrapped-key",
        &uri_a,
        "--context",
        "app=a",
    ]));
    let out = a.mount(&["--context", "app=b"]);
    fails(&out, 3, "encryption context");
    assert!(!a.mounted);

    let mut b = Inst::new(&ep);
    ok(&b.init(&["--key", "kms", "--kms-key", &alias, "--wrapped-key", &uri_b]));
    // A's blob is bound to A's fs id: KMS refuses it for B.
    let out = b.mount(&["--key", "kms", "--wrapped-key", &uri_a]);
    fails(&out, 3, "another filesystem");

    // A blob that KMS does decrypt under B's context but that holds another key: the config
    // MAC is what catches it.
    let fs_id = b.config()["fs_id"].as_str().unwrap().to_string();
    let other = admin.data_key_blob(
        &alias,
        HashMap::from([("secretfs:fs-id".to_string(), fs_id)]),
    );
    admin.put(&bucket, "b.key", other);
    let out = b.mount(&[]);
    fails(&out, 3, "does not open this filesystem");
    assert!(!b.mounted);
}

#[test]
fn kms_missing_object_bucket_and_refused_key_are_named() {
    let Some(ep) = endpoint() else { return };
    let admin = Admin::new(&ep);
    let (arn, alias) = admin.key();
    let bucket = admin.bucket();
    let uri = format!("s3://{bucket}/gone.key");
    let mut a = Inst::new(&ep);
    ok(&a.init(&["--key", "kms", "--kms-key", &alias, "--wrapped-key", &uri]));

    admin.delete(&bucket, "gone.key");
    fails(&a.mount(&[]), 7, "does not exist");
    fails(
        &a.mount(&["--wrapped-key", "s3://no-such-bucket-secretfs/x.key"]),
        7,
        "bucket no-such-bucket-secretfs does not exist",
    );

    // Pinning another key at mount: KMS refuses, in one sentence, nothing mounted. moto
    // answers AccessDeniedException (exit 7); real KMS IncorrectKeyException, which is exit 3
    // (that mapping: the unit tests of keysource/kms.rs and keysource/aws.rs).
    let (other_arn, _) = admin.key();
    let mut b = Inst::new(&ep);
    ok(&b.init(&["--key", "kms", "--kms-key", &arn]));
    let out = b.mount(&["--key", "kms", "--kms-key", &other_arn]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "wrong exit code: {err}");
    assert!(
        err.contains("denied kms:Decrypt") || err.contains("cannot decrypt"),
        "{err}"
    );
    assert!(!b.mounted);
    // moto does not enforce DisableKey for Decrypt (checked: it still decrypts), so the
    // disabled/pending-deletion mapping is covered by the unit test on the SDK's error types.
}

#[test]
fn kms_no_credentials_and_unreachable_endpoint_fail_fast_and_clearly() {
    let Some(ep) = endpoint() else { return };
    let admin = Admin::new(&ep);
    let (arn, _) = admin.key();
    let mut a = Inst::new(&ep);
    ok(&a.init(&["--key", "kms", "--kms-key", &arn]));

    let mut nocred = Inst::new(&ep);
    nocred.set_env("AWS_ACCESS_KEY_ID", None);
    nocred.set_env("AWS_SECRET_ACCESS_KEY", None);
    let backing = a.backing.clone();
    fails(
        &nocred.mount_at(&backing, &[]),
        7,
        "no AWS credentials found",
    );

    // Nothing listens on this port: the error must come within the deadline, not hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    a.set_env(
        "AWS_ENDPOINT_URL",
        Some(&format!("http://127.0.0.1:{port}")),
    );
    let t = Instant::now();
    let out = a.mount(&["--aws-timeout", "3"]);
    let took = t.elapsed();
    fails(&out, 8, "cannot reach AWS KMS");
    assert!(stderr(&out).contains("--aws-timeout"));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(!a.mounted);

    let c = {
        let mut c = Inst::new(&ep);
        c.set_env(
            "AWS_ENDPOINT_URL",
            Some(&format!("http://127.0.0.1:{port}")),
        );
        c
    };
    fails(
        &c.init(&["--kms-key", &arn, "--aws-timeout", "2"]),
        8,
        "cannot reach",
    );
    assert!(!c.backing.exists());
}

#[test]
fn kms_rewrap_to_a_new_key_then_mount() {
    let Some(ep) = endpoint() else { return };
    let admin = Admin::new(&ep);
    let (old_arn, old_alias) = admin.key();
    let (new_arn, _) = admin.key();
    let bucket = admin.bucket();
    let uri = format!("s3://{bucket}/rewrap.key");
    let mut a = Inst::new(&ep);
    ok(&a.init(&[
        "--key",
        "kms",
        "--kms-key",
        &old_alias,
        "--wrapped-key",
        &uri,
        "--context",
        "team=storage",
    ]));
    ok(&a.mount(&[]));
    std::fs::write(a.mnt.join("kept.txt"), b"survives rewrap").unwrap();
    a.umount();
    let before = a.config();

    let out = a.run(&["rewrap", a.backing.to_str().unwrap(), "--kms-key", &new_arn]);
    ok(&out);
    assert!(
        stderr(&out).contains("wrapped key moved to a new KMS key"),
        "no rewrap audit event: {}",
        stderr(&out)
    );
    // Logs written to a pipe carry no colour codes (journald would store them).
    assert!(
        !stderr(&out).contains('\x1b'),
        "ANSI escape codes in piped stderr: {:?}",
        stderr(&out)
    );
    let after = a.config();
    assert_eq!(after["key_source"]["key_arn"], new_arn.as_str());
    assert_eq!(after["key_source"]["context"]["team"], "storage");
    assert_ne!(
        after["key_source"]["wrapped_key"],
        before["key_source"]["wrapped_key"]
    );
    assert_eq!(after["fs_id"], before["fs_id"]);

    // The new blob is under the new key: pinning it at mount works, pinning the old fails.
    ok(&a.mount(&["--key", "kms", "--kms-key", &new_arn]));
    assert_eq!(
        std::fs::read(a.mnt.join("kept.txt")).unwrap(),
        b"survives rewrap"
    );
    a.umount();
    assert!(!a
        .mount(&["--key", "kms", "--kms-key", &old_arn])
        .status
        .success());
    ok(&a.mount(&[]));
    a.umount();

    // Rewrapping to a key that does not exist fails and changes nothing.
    let object = admin.get(&bucket, "rewrap.key");
    let out = a.run(&[
        "rewrap",
        a.backing.to_str().unwrap(),
        "--kms-key",
        "alias/secretfs-no-such-key",
    ]);
    fails(&out, 7, "does not exist");
    assert_eq!(a.config(), after);
    // ... and the filesystem still opens as before, from its unchanged S3 object.
    ok(&a.mount(&[]));
    assert_eq!(
        std::fs::read(a.mnt.join("kept.txt")).unwrap(),
        b"survives rewrap"
    );
    a.umount();
    assert_eq!(admin.get(&bucket, "rewrap.key"), object);
}

#[test]
fn kms_password_object_of_the_classic_recipe_is_accepted() {
    let Some(ep) = endpoint() else { return };
    let admin = Admin::new(&ep);
    let (arn, _) = admin.key();
    let bucket = admin.bucket();
    // What `aws kms encrypt --plaintext fileb://pw` + `aws s3 cp` leave behind: no context.
    let blob = admin.encrypt(&arn, b"correct horse battery staple\n");
    admin.put(&bucket, "password.enc", blob);
    let uri = format!("s3://{bucket}/password.enc");

    let mut a = Inst::new(&ep);
    ok(&a.init(&["--key", "kms-password", "--wrapped-key", &uri]));
    let ks = a.config()["key_source"].clone();
    assert_eq!(ks["type"], "kms-password");
    assert_eq!(
        ks["kdf"]["type"], "argon2id",
        "new filesystems hash the password"
    );
    assert_eq!(
        ks["key_arn"],
        arn.as_str(),
        "the password's KMS key is not recorded"
    );
    ok(&a.mount(&[]));
    std::fs::write(a.mnt.join("p.txt"), b"password-derived").unwrap();
    a.umount();
    ok(&a.mount(&["--key", "kms-password", "--wrapped-key", &uri]));
    assert_eq!(
        std::fs::read(a.mnt.join("p.txt")).unwrap(),
        b"password-derived"
    );
    a.umount();

    // Another password in the object: the config MAC refuses it.
    let other = admin.encrypt(&arn, b"another password");
    admin.put(&bucket, "password.enc", other);
    fails(&a.mount(&[]), 3, "does not open this filesystem");
}

#[test]
fn kms_credentials_and_region_from_an_imdsv2_instance_role() {
    let Some(ep) = endpoint() else { return };
    let admin = Admin::new(&ep);
    let (_, alias) = admin.key();
    let bucket = admin.bucket();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/imds.py");
    let mut imds = Command::new("python3")
        .arg(&script)
        .args([REGION, "secretfs-instance-role"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(imds.stdout.take().unwrap()).lines();
    let port: u16 = lines.next().unwrap().unwrap().trim().parse().unwrap();

    let mut a = Inst::new(&ep);
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        a.set_env(k, None);
    }
    a.set_env(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        Some(&format!("http://127.0.0.1:{port}")),
    );
    let uri = format!("s3://{bucket}/imds.key");
    let init = a.init(&["--key", "kms", "--kms-key", &alias, "--wrapped-key", &uri]);
    let mount = if init.status.success() {
        let m = a.mount(&[]);
        if m.status.success() {
            std::fs::write(a.mnt.join("x"), b"role").unwrap();
            a.umount();
        }
        Some(m)
    } else {
        None
    };
    let _ = imds.kill();
    let served: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = imds.wait();
    ok(&init);
    ok(&mount.unwrap());
    assert!(
        served
            .iter()
            .any(|l| l.contains("security-credentials/secretfs-instance-role")),
        "credentials did not come from IMDS: {served:?}"
    );
    assert!(
        served.iter().any(|l| l.contains("placement/region")),
        "region did not come from IMDS: {served:?}"
    );
}

#[test]
fn kms_usage_errors_name_the_missing_flag() {
    let Some(ep) = endpoint() else { return };
    let a = Inst::new(&ep);
    fails(&a.init(&["--key", "kms"]), 2, "--kms-key");
    fails(&a.init(&["--key", "kms-password"]), 2, "--wrapped-key");
    fails(
        &a.init(&[
            "--key",
            "kms",
            "--kms-key",
            "k",
            "--wrapped-key",
            "bucket/key",
        ]),
        2,
        "not an S3 URI",
    );
    fails(
        &a.init(&[
            "--key",
            "kms",
            "--kms-key",
            "k",
            "--context",
            "secretfs:fs-id=x",
        ]),
        2,
        "may not set",
    );
    fails(
        &a.init(&["--key", "ephemeral", "--kms-key", "k"]),
        2,
        "apply to --key kms",
    );
    assert!(!a.backing.exists());
}

#[test]
fn kms_a_blob_or_config_made_under_the_attackers_own_key_is_refused() {
    let Some(ep) = endpoint() else { return };
    let admin = Admin::new(&ep);
    let (arn, alias) = admin.key();
    // The attacker's own KMS key, which this instance is allowed to use too.
    let (_, evil_alias) = admin.key();
    let bucket = admin.bucket();
    let uri = format!("s3://{bucket}/fs.key");
    let mut a = Inst::new(&ep);
    ok(&a.init(&["--key", "kms", "--kms-key", &alias, "--wrapped-key", &uri]));
    ok(&a.mount(&[]));
    std::fs::write(a.mnt.join("kept"), b"precious").unwrap();
    a.umount();
    let fs_id = a.config()["fs_id"].as_str().unwrap().to_string();
    let ctx = HashMap::from([("secretfs:fs-id".to_string(), fs_id.clone())]);

    // A blob in the right context but under the attacker's key, inline in an edited config:
    // the config no longer matches the pin, and nothing reaches KMS.
    let conf_path = a.backing.join("secretfs.conf");
    let original = std::fs::read(&conf_path).unwrap();
    let mut edited: serde_json::Value = serde_json::from_slice(&original).unwrap();
    use base64::Engine;
    let evil_blob = admin.data_key_blob(&evil_alias, ctx.clone());
    edited["key_source"]["wrapped_key"] = base64::engine::general_purpose::STANDARD
        .encode(&evil_blob)
        .into();
    edited["key_source"]["s3_uri"] = serde_json::Value::Null;
    std::fs::write(&conf_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    fails(&a.mount(&[]), 3, "this host pinned");
    fails(&a.mount(&["--key", "kms"]), 3, "this host pinned");
    std::fs::write(&conf_path, &original).unwrap();

    // The same blob as the S3 object: Decrypt names the pinned key, so it is refused.
    admin.put(&bucket, "fs.key", evil_blob);
    // moto answers AccessDenied (exit 7; real KMS IncorrectKeyException, exit 3, as unit
    // tested); the pinned key is named and nothing is mounted.
    let out = a.mount(&[]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains(&arn), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("MAC mismatch"),
        "KMS decrypted a blob of another key: Decrypt did not name the pinned key"
    );
    assert!(!a.mounted);
}

#[test]
fn kms_password_config_made_under_the_attackers_own_object_is_refused() {
    let Some(ep) = endpoint() else { return };
    let admin = Admin::new(&ep);
    let (arn, _) = admin.key();
    let (evil_arn, _) = admin.key();
    let bucket = admin.bucket();
    admin.put(
        &bucket,
        "pw.enc",
        admin.encrypt(&arn, b"the admin's password"),
    );
    admin.put(
        &bucket,
        "evil.enc",
        admin.encrypt(&evil_arn, b"attacker knows this"),
    );
    let uri = format!("s3://{bucket}/pw.enc");
    let evil_uri = format!("s3://{bucket}/evil.enc");
    let mut a = Inst::new(&ep);
    ok(&a.init(&["--key", "kms-password", "--wrapped-key", &uri]));
    ok(&a.mount(&[]));
    std::fs::write(a.mnt.join("kept"), b"precious").unwrap();
    a.umount();
    let conf_path = a.backing.join("secretfs.conf");
    let original = std::fs::read(&conf_path).unwrap();

    // The same filesystem id, the object and key swapped for the attacker's.
    let mut edited: serde_json::Value = serde_json::from_slice(&original).unwrap();
    edited["key_source"]["s3_uri"] = evil_uri.clone().into();
    edited["key_source"]["key_arn"] = evil_arn.clone().into();
    std::fs::write(&conf_path, serde_json::to_vec(&edited).unwrap()).unwrap();
    fails(&a.mount(&[]), 3, "this host pinned");
    fails(&a.mount(&["--key", "kms-password"]), 3, "this host pinned");

    // A whole config of the attacker's own store (another fs id, no pin here).
    let b = Inst::new(&ep);
    ok(&b.init(&["--key", "kms-password", "--wrapped-key", &evil_uri]));
    let foreign = b.config();
    std::fs::remove_file(format!(
        "/etc/secretfs/pins/{}.json",
        foreign["fs_id"].as_str().unwrap()
    ))
    .unwrap();
    std::fs::write(&conf_path, serde_json::to_vec(&foreign).unwrap()).unwrap();
    fails(&a.mount(&[]), 3, "has no key pin on this host");
    // The user's own object against the attacker's config: the MAC refuses it.
    fails(
        &a.mount(&["--key", "kms-password", "--wrapped-key", &uri]),
        3,
        "does not open this filesystem",
    );

    std::fs::write(&conf_path, &original).unwrap();
    ok(&a.mount(&[]));
    assert_eq!(std::fs::read(a.mnt.join("kept")).unwrap(), b"precious");
    a.umount();
}
