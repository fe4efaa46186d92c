//! `secretfs doctor` through the real binary: each failing check driven on purpose (a missing
//! helper, a bad fstab line, an unreachable endpoint, no credentials) and one all-good run
//! against moto on loopback, with a temporary fstab, pin directory and sbin.

mod common;

use common::aws::{endpoint, Admin, REGION};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_secretfs");

/// A host in a temp dir: `sbin` with the three helper links, an fstab, a pin directory, a
/// mount point; the AWS environment is emptied so only what a test sets is seen.
struct Host {
    dir: tempfile::TempDir,
    sbin: PathBuf,
    fstab: PathBuf,
    pins: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("secretfs-doctor")
            .tempdir()
            .unwrap();
        let sbin = dir.path().join("sbin");
        std::fs::create_dir(&sbin).unwrap();
        for name in ["mount.secretfs", "umount.fuse.secretfs", "umount.secretfs"] {
            std::os::unix::fs::symlink(BIN, sbin.join(name)).unwrap();
        }
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        Host {
            fstab: dir.path().join("fstab"),
            pins: dir.path().join("pins"),
            sbin,
            dir,
            env: vec![
                ("AWS_EC2_METADATA_DISABLED", "true".into()),
                ("AWS_CONFIG_FILE", "/dev/null".into()),
                ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
                ("AWS_REGION", REGION.into()),
                ("AWS_DEFAULT_REGION", REGION.into()),
            ],
        }
    }

    /// Writes the fstab; `{d}` stands for the temp dir.
    fn fstab(&self, lines: &[&str]) {
        let d = self.dir.path().display().to_string();
        let text: String = lines.iter().map(|l| l.replace("{d}", &d) + "\n").collect();
        std::fs::write(&self.fstab, text).unwrap();
    }

    fn aws(&mut self, ep: &str) {
        self.env.push(("AWS_ENDPOINT_URL", ep.to_string()));
        self.env.push(("AWS_ACCESS_KEY_ID", "test".into()));
        self.env.push(("AWS_SECRET_ACCESS_KEY", "test".into()));
    }

    /// Runs `doctor --json` and returns its exit code and report.
    fn doctor(&self, extra: &[&str]) -> (i32, Value) {
        let mut cmd = Command::new(BIN);
        cmd.arg("doctor")
            .arg("--json")
            .arg("--fstab")
            .arg(&self.fstab)
            .arg("--pins")
            .arg(&self.pins)
            .arg("--sbin")
            .arg(&self.sbin)
            .args(extra);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("HOME", self.dir.path());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }
}

/// The check named `name`, or a panic showing the whole report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}

fn assert_status(report: &Value, name: &str, status: &str, needle: &str) {
    let c = check(report, name);
    assert_eq!(c["status"], status, "{name}: {c:#}");
    let message = c["message"].as_str().unwrap();
    assert!(message.contains(needle), "{name}: `{needle}` not in {c:#}");
    if status != "ok" {
        assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{c:#}");
    }
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn a_missing_helper_fails_and_names_where_it_belongs() {
    let h = Host::new();
    h.fstab(&[]);
    std::fs::remove_file(h.sbin.join("mount.secretfs")).unwrap();
    let (code, r) = h.doctor(&[]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["ok"], false);
    let path = h.sbin.join("mount.secretfs");
    assert_status(
        &r,
        "helper mount.secretfs",
        "fail",
        &format!("{} is missing", path.display()),
    );
    assert_status(&r, "helper umount.fuse.secretfs", "ok", "");
    // A dangling link is no better than none.
    std::os::unix::fs::symlink(h.dir.path().join("gone"), &path).unwrap();
    let (code, r) = h.doctor(&[]);
    assert_eq!(code, 1, "{r:#}");
    assert_status(&r, "helper mount.secretfs", "fail", "dangling");
}

#[test]
fn a_bad_fstab_line_fails_with_its_number_and_the_parsers_error() {
    let h = Host::new();
    h.fstab(&[
        "# secretfs scratch",
        "{d}/backing {d}/mnt secretfs key=keyfile:{d}/key,init=auto,_netdev 0 0",
        "UUID=abc / ext4 defaults 0 1",
        "{d}/backing2 {d}/mnt secretfs key=keyfile:{d}/key,colour=blue 0 0",
        "{d}/backing3 {d}/mnt fuse.secretfs defaults 0 0",
        "{d}/backing4 {d}/no-such-dir secretfs init=auto 0 0",
    ]);
    let (code, r) = h.doctor(&[]);
    assert_eq!(code, 1, "{r:#}");
    assert_status(&r, "fstab line 2", "ok", "file mode, key keyfile:");
    assert_status(
        &r,
        "fstab line 4",
        "fail",
        "unknown mount option `colour=blue`; valid options: key=",
    );
    assert_status(&r, "fstab line 5", "fail", "type fuse.secretfs");
    assert_status(&r, "fstab line 6", "fail", "no-such-dir");
    assert!(
        !r["checks"].to_string().contains("fstab line 3"),
        "an ext4 line is not ours: {r:#}"
    );
}

#[test]
fn block_mode_checks_fail_only_when_fstab_uses_block_mode() {
    let has_dm = std::fs::read_to_string("/proc/misc")
        .unwrap()
        .lines()
        .any(|l| l.ends_with(" device-mapper"));
    let h = Host::new();
    h.fstab(&["{d}/backing {d}/mnt secretfs key=keyfile:{d}/key,init=auto 0 0"]);
    let (_, r) = h.doctor(&[]);
    let without = check(&r, "device-mapper")["status"].clone();
    h.fstab(&["{d}/disk.img {d}/mnt secretfs mode=block,key=keyfile:{d}/key 0 0"]);
    let (code, r) = h.doctor(&[]);
    let with = check(&r, "device-mapper")["status"].clone();
    if has_dm {
        assert_eq!((without, with), ("ok".into(), "ok".into()));
    } else {
        assert_eq!((without, with), ("warn".into(), "fail".into()), "{r:#}");
        assert_eq!(code, 1);
    }
}

#[test]
fn an_unreachable_endpoint_fails_each_key_and_object_in_time() {
    let mut h = Host::new();
    h.aws(&format!("http://127.0.0.1:{}", closed_port()));
    h.fstab(&["{d}/backing {d}/mnt secretfs key=kms,kms-key=alias/gone,wrapped-key=s3://secretfs-nowhere/fs.key,init=auto,_netdev 0 0"]);
    let (code, r) = h.doctor(&["--timeout", "2"]);
    assert_eq!(code, 1, "{r:#}");
    assert_status(&r, "aws credentials", "ok", "the environment");
    assert_status(&r, "kms alias/gone", "fail", "cannot reach AWS KMS");
    assert_status(
        &r,
        "s3 s3://secretfs-nowhere/fs.key",
        "fail",
        "cannot reach AWS S3",
    );
    assert_status(&r, "kms alias/gone", "fail", "named by fstab line 1");
    assert_status(&r, "clock", "warn", "no KMS endpoint answered");
}

#[test]
fn no_credentials_fails_when_a_line_needs_aws() {
    let mut h = Host::new();
    h.env.push((
        "AWS_ENDPOINT_URL",
        format!("http://127.0.0.1:{}", closed_port()),
    ));
    h.fstab(&["{d}/backing {d}/mnt secretfs key=kms,kms-key=alias/k,init=auto 0 0"]);
    let (code, r) = h.doctor(&["--timeout", "2"]);
    assert_eq!(code, 1, "{r:#}");
    assert_status(&r, "aws credentials", "fail", "none found");
    assert_status(&r, "kms alias/k", "fail", "no AWS credentials");
    // Without any AWS use configured, the same absence is only a warning.
    h.fstab(&[]);
    let (_, r) = h.doctor(&[]);
    assert_status(
        &r,
        "aws credentials",
        "warn",
        "nothing configured here uses AWS",
    );
}

#[test]
fn all_good_against_moto() {
    let Some(ep) = endpoint() else { return };
    if !common::can_mount() {
        return;
    }
    let admin = Admin::new(&ep);
    let (arn, alias) = admin.key();
    let bucket = admin.bucket();
    admin.put(&bucket, "fs.key", b"blob".to_vec());
    admin.put(&bucket, "pinned.key", b"blob".to_vec());
    let mut h = Host::new();
    h.aws(&ep);
    h.fstab(&[&format!("{{d}}/backing {{d}}/mnt secretfs key=kms,kms-key={alias},wrapped-key=s3://{bucket}/fs.key,region={REGION},init=auto,_netdev,nofail 0 0")]);
    // A pin, as `secretfs init` writes one, naming the key by ARN and another object.
    let fs_id = uuid::Uuid::new_v4();
    secretfs::keysource::pins::store(
        &h.pins,
        &secretfs::keysource::pins::Pin {
            fs_id,
            backing: h.dir.path().join("backing"),
            key_source: serde_json::from_value(serde_json::json!({
                "type": "kms",
                "key_id": arn,
                "key_arn": arn,
                "wrapped_key": "AAAA",
                "s3_uri": format!("s3://{bucket}/pinned.key"),
            }))
            .unwrap(),
            slots: Vec::new(),
        },
    )
    .unwrap();
    let (code, r) = h.doctor(&[]);
    let failed: Vec<&Value> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!((code, &r["ok"]), (0, &Value::Bool(true)), "{r:#}");
    assert_status(&r, &format!("kms {alias}"), "ok", "is enabled");
    assert_status(&r, &format!("kms {arn}"), "ok", &format!("pin {fs_id}"));
    assert_status(&r, &format!("s3 s3://{bucket}/fs.key"), "ok", "exists");
    assert_status(&r, &format!("s3 s3://{bucket}/pinned.key"), "ok", "exists");
    assert_status(&r, &format!("pin {fs_id}"), "ok", "kms (");
    assert_status(&r, "aws credentials", "ok", "the environment");
    assert_status(&r, "clock", "ok", "of KMS's clock");
    assert_status(&r, "fuse", "ok", "/dev/fuse opens");
    assert_status(&r, "fstab line 1", "ok", "file mode, key kms");
    // The secret is never printed.
    assert!(!r.to_string().contains("\"test\""), "{r:#}");
    // A deleted object is named, and only it fails.
    admin.delete(&bucket, "fs.key");
    let (code, r) = h.doctor(&[]);
    assert_eq!(code, 1);
    assert_status(
        &r,
        &format!("s3 s3://{bucket}/fs.key"),
        "fail",
        "does not exist",
    );
    assert_status(&r, &format!("s3 s3://{bucket}/pinned.key"), "ok", "exists");
}

#[test]
fn text_output_is_one_line_per_check_with_a_summary() {
    let h = Host::new();
    h.fstab(&["{d}/backing {d}/mnt secretfs key=keyfile:{d}/key,bogus 0 0"]);
    let out = Command::new(BIN)
        .args(["doctor", "--fstab"])
        .arg(&h.fstab)
        .arg("--pins")
        .arg(&h.pins)
        .arg("--sbin")
        .arg(Path::new(&h.sbin))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("fstab line 1"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(line.contains("; fix: "), "{line}");
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("doctor: ") && last.ends_with(" failed"),
        "{text}"
    );
}

#[test]
fn each_pinned_key_slot_is_checked_in_its_own_region_and_endpoint() {
    let Some(ep) = endpoint() else { return };
    let mut h = Host::new();
    h.aws(&ep);
    let admin = Admin::new(&ep);
    let (arn, _) = admin.key();
    let closed = format!("http://127.0.0.1:{}", closed_port());
    // Slot 0 reachable through the host's endpoint; slot 2's own endpoint is down.
    let slot = |id: u32, endpoint: Option<&str>| {
        let mut s = serde_json::json!({
            "id": id,
            "source": {"type": "kms", "key_id": arn, "key_arn": arn, "wrapped_key": "AAAA"},
        });
        if let Some(e) = endpoint {
            s["endpoint"] = e.into();
            s["wrapped_master"] =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0u8; 60])
                    .into();
        }
        serde_json::from_value::<secretfs::store::config::KeySlot>(s).unwrap()
    };
    let slots = vec![slot(0, None), slot(2, Some(&closed))];
    let fs_id = uuid::Uuid::new_v4();
    secretfs::keysource::pins::store(
        &h.pins,
        &secretfs::keysource::pins::Pin {
            fs_id,
            backing: h.dir.path().join("backing"),
            key_source: slots[0].source.clone(),
            slots,
        },
    )
    .unwrap();
    h.fstab(&[]);
    let (code, r) = h.doctor(&["--timeout", "2"]);
    assert_eq!(code, 1, "{r:#}");
    let checks = r["checks"].as_array().unwrap();
    let of = |needle: &str| {
        checks
            .iter()
            .filter(|c| {
                c["name"] == format!("kms {arn}") && c["message"].as_str().unwrap().contains(needle)
            })
            .map(|c| c["status"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&format!("pin {fs_id} slot 0")), ["ok"], "{r:#}");
    assert_eq!(of(&format!("pin {fs_id} slot 2")), ["fail"], "{r:#}");
}

#[test]
fn a_host_without_ca_certificates_is_told_to_install_them() {
    let mut h = Host::new();
    let (bundle, certs) = (h.dir.path().join("empty.pem"), h.dir.path().join("certs"));
    std::fs::write(&bundle, b"").unwrap();
    std::fs::create_dir(&certs).unwrap();
    h.env.push(("SSL_CERT_FILE", bundle.display().to_string()));
    h.env.push(("SSL_CERT_DIR", certs.display().to_string()));
    h.env.push(("AWS_ACCESS_KEY_ID", "test".into()));
    h.env.push(("AWS_SECRET_ACCESS_KEY", "test".into()));
    // AWS's own HTTPS endpoints: nothing is contacted, the missing CA store is named first.
    h.fstab(&["{d}/backing {d}/mnt secretfs key=kms,kms-key=alias/k,init=auto 0 0"]);
    let (code, r) = h.doctor(&["--timeout", "2"]);
    assert_eq!(code, 1, "{r:#}");
    for name in ["aws credentials", "kms alias/k"] {
        assert_status(&r, name, "fail", "no trusted CA certificates");
        let fix = check(&r, name)["fix"].as_str().unwrap();
        assert!(
            fix.contains("install the ca-certificates package"),
            "{name}: {fix}"
        );
    }
}
