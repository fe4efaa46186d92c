//! `secretfs --version` (git commit and features) and `secretfs status` without a path (every
//! mount on the host, text and JSON), through the real binary.

mod common;

use common::secretfs;
use std::process::Command;

#[test]
fn version_names_the_commit_and_the_features() {
    let out = secretfs(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let rest = text
        .strip_prefix(&format!("secretfs {} (git ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{text}"));
    let (commit, features) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", features: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!features.is_empty(), "{text}");
    assert_eq!(
        features == "none",
        !cfg!(feature = "passthrough-control"),
        "{text}"
    );
    // The build saw this checkout's HEAD (unless a packager named the commit).
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output();
    match head {
        Ok(h) if h.status.success() && std::env::var_os("SECRETFS_GIT_COMMIT").is_none() => {
            let head = String::from_utf8_lossy(&h.stdout).trim().to_string();
            assert_eq!(commit.trim_end_matches("-dirty"), head, "{text}");
        }
        _ => common::skipped("no git checkout to compare the commit with"),
    }
}

#[test]
fn status_without_a_path_lists_every_mount() {
    if !common::can_mount() {
        return;
    }
    let mut fs = common::Fs::new();
    let mnt = fs.mnt.canonicalize().unwrap();
    let one = secretfs(&["status", fs.mnt.to_str().unwrap(), "--json"]);
    let one: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    let fs_id = one["fs_id"].as_str().unwrap().to_string();

    let out = secretfs(&["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("TARGET"), "{text}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(mnt.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} not listed: {text}", mnt.display()));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], "file", "{line}");
    assert_eq!(
        cols[2],
        fs.backing.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(cols[3], fs_id, "{line}");
    assert!(cols[4].starts_with("keyfile"), "{line}");

    let out = secretfs(&["status", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountpoint"] == mnt.to_str().unwrap())
        .unwrap_or_else(|| panic!("{list:#}"));
    assert_eq!(
        (&ours["mode"], &ours["id"]),
        (&"file".into(), &fs_id.into())
    );

    fs.umount();
    let out = secretfs(&["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(mnt.to_str().unwrap()), "{text}");
}

#[test]
fn a_host_without_ca_certificates_is_named_before_any_aws_call() {
    // rustls-native-certs reads only SSL_CERT_FILE/SSL_CERT_DIR when they are set: both empty
    // here, as on a minimal host without the ca-certificates package.
    let dir = tempfile::tempdir().unwrap();
    let (bundle, certs, backing) = (
        dir.path().join("empty.pem"),
        dir.path().join("certs"),
        dir.path().join("store"),
    );
    std::fs::write(&bundle, b"").unwrap();
    std::fs::create_dir(&certs).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .args(["init", backing.to_str().unwrap(), "--key", "kms"])
        .args([
            "--kms-key",
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        ])
        .env("SSL_CERT_FILE", &bundle)
        .env("SSL_CERT_DIR", &certs)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        // AWS's own HTTPS endpoint: the refusal comes before any connection is tried.
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(
        err.contains("no trusted CA certificates found on this host")
            && err.contains("ca-certificates"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!backing.join("secretfs.conf").exists());
}
