//! Mounting from fstab through the real util-linux mount(8)/umount(8): the helper protocol,
//! init=auto on a blank store, ro, nofail, bad options, umount and remount, and a kms line.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

/// mount(8) finds helpers by name in /sbin: installed as scripts/install.sh does, the binary
/// under test linked as /sbin/mount.secretfs and umount.fuse.secretfs (it acts by the name it
/// is run as, so this is the installed helper itself, not a stand-in).
fn install_helpers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        common::require_root();
        for helper in ["/sbin/mount.secretfs", "/sbin/umount.fuse.secretfs"] {
            let _ = fs::remove_file(helper);
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_secretfs"), helper).unwrap();
        }
    });
}

struct Setup {
    dir: tempfile::TempDir,
    fstab: PathBuf,
    env: Vec<(String, String)>,
}

impl Setup {
    fn new() -> Self {
        install_helpers();
        let dir = tempfile::Builder::new()
            .prefix("secretfs-fstab")
            .tempdir()
            .unwrap();
        let fstab = dir.path().join("fstab");
        Setup {
            dir,
            fstab,
            env: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes fstab lines; `{d}` stands for the temp dir.
    fn lines(&self, lines: &[&str]) {
        let text: String = lines
            .iter()
            .map(|l| l.replace("{d}", self.dir.path().to_str().unwrap()) + "\n")
            .collect();
        fs::write(&self.fstab, text).unwrap();
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }

    fn mount(&self, mnt: &str) -> Output {
        let mnt = self.path(mnt);
        fs::create_dir_all(&mnt).unwrap();
        self.run(
            "mount",
            &[
                "--fstab",
                self.fstab.to_str().unwrap(),
                mnt.to_str().unwrap(),
            ],
        )
    }

    fn umount(&self, mnt: &str) -> Output {
        self.run("umount", &[self.path(mnt).to_str().unwrap()])
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for e in common_mounts_under(self.dir.path()) {
            let _ = Command::new("umount").arg("-l").arg(e).status();
        }
        common::forget_pins_under(self.dir.path());
    }
}

fn common_mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn mount_entry(mnt: &Path) -> Option<(String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap()))
        .map(|l| {
            let right: Vec<&str> = l.split(" - ").nth(1).unwrap().split(' ').collect();
            (right[0].to_string(), right[1].to_string())
        })
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keyfile_line_with_init_auto_then_umount_and_remount() {
    if !common::can_mount() {
        return;
    }
    let s = Setup::new();
    s.lines(&["{d}/backing {d}/mnt secretfs key=keyfile:{d}/key,init=auto,_netdev,x-systemd.after=network-online.target 0 0"]);
    ok(&s.mount("mnt"));
    let mnt = s.path("mnt");
    assert_eq!(
        mount_entry(&mnt),
        Some((
            "fuse.secretfs".into(),
            s.path("backing").to_str().unwrap().into()
        ))
    );
    assert!(
        s.path("backing/secretfs.conf").exists(),
        "init=auto did not create the filesystem"
    );
    fs::write(mnt.join("kept"), b"across umount").unwrap();
    let status = common::secretfs(&["status", mnt.to_str().unwrap(), "--json"]);
    let pid = serde_json::from_slice::<serde_json::Value>(&status.stdout).unwrap()["daemon_pid"]
        .as_u64()
        .unwrap();

    ok(&s.umount("mnt"));
    assert_eq!(mount_entry(&mnt), None);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "umount returned before the daemon exited"
    );
    ok(&s.mount("mnt"));
    assert_eq!(fs::read(mnt.join("kept")).unwrap(), b"across umount");
    ok(&s.umount("mnt"));
}

#[test]
fn read_only_line() {
    if !common::can_mount() {
        return;
    }
    let s = Setup::new();
    s.lines(&["{d}/backing {d}/mnt secretfs key=keyfile:{d}/key,init=auto,ro 0 0"]);
    ok(&s.mount("mnt"));
    let err = fs::write(s.path("mnt/x"), b"").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    ok(&s.umount("mnt"));
}

#[test]
fn bad_option_fails_with_the_valid_list_and_mounts_nothing() {
    if !common::can_mount() {
        return;
    }
    let s = Setup::new();
    s.lines(&["{d}/backing {d}/mnt secretfs key=keyfile:{d}/key,init=auto,colour=blue 0 0"]);
    let out = s.mount("mnt");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown mount option `colour=blue`") && err.contains("valid options"),
        "{err}"
    );
    assert_eq!(mount_entry(&s.path("mnt")), None);
    assert!(
        !s.path("backing").exists(),
        "a refused mount must not create anything"
    );
}

#[test]
fn mount_all_goes_on_past_a_nofail_line_with_a_missing_key() {
    if !common::can_mount() {
        return;
    }
    let s = Setup::new();
    // A filesystem whose key file is gone, as after a botched re-provisioning.
    let lost = s.path("lost-key");
    ok(&common::secretfs(&[
        "init",
        s.path("broken").to_str().unwrap(),
        "--key",
        &format!("keyfile:{}", lost.display()),
    ]));
    fs::remove_file(&lost).unwrap();
    fs::create_dir_all(s.path("mnt-broken")).unwrap();
    fs::create_dir_all(s.path("mnt-good")).unwrap();
    s.lines(&[
        "{d}/broken {d}/mnt-broken secretfs key=keyfile:{d}/lost-key,nofail 0 0",
        "{d}/good {d}/mnt-good secretfs key=keyfile:{d}/good-key,init=auto 0 0",
    ]);
    let out = s.run(
        "mount",
        &["-a", "--fstab", s.fstab.to_str().unwrap(), "-t", "secretfs"],
    );
    // mount(8) reports "some mounts succeeded" (64); the failing line names its cause.
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("lost-key does not exist"));
    assert_eq!(mount_entry(&s.path("mnt-broken")), None);
    assert!(mount_entry(&s.path("mnt-good")).is_some());
    ok(&s.umount("mnt-good"));
    // Without nofail the same line makes mount fail with the key error.
    s.lines(&["{d}/broken {d}/mnt-broken secretfs key=keyfile:{d}/lost-key 0 0"]);
    let out = s.mount("mnt-broken");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fake_and_verbose_flags() {
    if !common::can_mount() {
        return;
    }
    let s = Setup::new();
    ok(&common::secretfs(&[
        "init",
        s.path("backing").to_str().unwrap(),
        "--key",
        &format!("keyfile:{}", s.path("key").display()),
    ]));
    s.lines(&["{d}/backing {d}/mnt secretfs key=keyfile:{d}/key 0 0"]);
    fs::create_dir_all(s.path("mnt")).unwrap();
    let out = s.run(
        "mount",
        &[
            "-f",
            "-v",
            "--fstab",
            s.fstab.to_str().unwrap(),
            s.path("mnt").to_str().unwrap(),
        ],
    );
    ok(&out);
    assert_eq!(mount_entry(&s.path("mnt")), None, "-f must not mount");
    // -v reaches the helper, which says what it would mount, with the options it was given.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "mounting {} on {}",
            s.path("backing").display(),
            s.path("mnt").display()
        )) && said.contains("key=keyfile:"),
        "verbose output: {said}"
    );
}

#[test]
fn kms_line_with_the_wrapped_key_in_s3() {
    let Some(ep) = common::aws::endpoint() else {
        return;
    };
    let admin = common::aws::Admin::new(&ep);
    let (arn, _) = admin.key();
    let bucket = admin.bucket();
    let mut s = Setup::new();
    s.env = [
        ("AWS_ENDPOINT_URL", ep.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    s.lines(&[&format!(
        "{{d}}/backing {{d}}/mnt secretfs key=kms,kms-key={arn},wrapped-key=s3://{bucket}/fs.key,region={},kms-context=app=test;tier=scratch,init=auto,_netdev 0 0",
        common::aws::REGION
    )]);
    ok(&s.mount("mnt"));
    // init=auto recorded the encryption context given in fstab (`;` separates its pairs there).
    let conf: serde_json::Value =
        serde_json::from_slice(&fs::read(s.path("backing/secretfs.conf")).unwrap()).unwrap();
    assert_eq!(
        conf["key_source"]["context"],
        serde_json::json!({"app": "test", "tier": "scratch"}),
        "the fstab context did not reach the config"
    );
    fs::write(s.path("mnt/f"), b"kms").unwrap();
    ok(&s.umount("mnt"));
    ok(&s.mount("mnt"));
    assert_eq!(fs::read(s.path("mnt/f")).unwrap(), b"kms");
    ok(&s.umount("mnt"));
}

#[test]
fn an_fstab_mount_never_obeys_a_substituted_config() {
    if !common::can_mount() {
        return;
    }
    let s = Setup::new();
    s.lines(&["{d}/backing {d}/mnt secretfs key=keyfile:{d}/key,init=auto 0 0"]);
    ok(&s.mount("mnt"));
    fs::write(s.path("mnt/kept"), b"precious").unwrap();
    ok(&s.umount("mnt"));
    let conf = s.path("backing/secretfs.conf");
    let original = fs::read(&conf).unwrap();

    // The key source edited to `ephemeral` (which would empty the store), then the config of
    // an ephemeral store made elsewhere; also a line naming no key at all.
    let mut edited: serde_json::Value = serde_json::from_slice(&original).unwrap();
    edited["key_source"] = serde_json::json!({"type": "ephemeral"});
    let other = s.path("other");
    let out = common::secretfs(&["init", other.to_str().unwrap(), "--key", "ephemeral"]);
    assert!(out.status.success());
    let foreign = fs::read(other.join("secretfs.conf")).unwrap();
    for (what, bytes) in [
        ("edited to ephemeral", serde_json::to_vec(&edited).unwrap()),
        ("another store's", foreign),
    ] {
        fs::write(&conf, &bytes).unwrap();
        for line in [
            "{d}/backing {d}/mnt secretfs key=keyfile:{d}/key,init=auto 0 0",
            "{d}/backing {d}/mnt secretfs init=auto 0 0",
        ] {
            s.lines(&[line]);
            let before = common::snapshot(&s.path("backing"));
            let out = s.mount("mnt");
            assert!(!out.status.success(), "{what} config mounted via `{line}`");
            assert_eq!(mount_entry(&s.path("mnt")), None);
            assert_eq!(
                common::snapshot(&s.path("backing")),
                before,
                "{what} config via `{line}` changed the store"
            );
        }
    }
    fs::write(&conf, &original).unwrap();
    s.lines(&["{d}/backing {d}/mnt secretfs init=auto 0 0"]);
    ok(&s.mount("mnt"));
    assert_eq!(fs::read(s.path("mnt/kept")).unwrap(), b"precious");
    ok(&s.umount("mnt"));
}
