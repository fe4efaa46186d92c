//! Shared fixture for integration tests: a real secretfs mounted through /dev/fuse in a temp
//! directory, driven by the real `secretfs` binary, unmounted on drop.
#![allow(dead_code)]

pub mod aws;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub fn secretfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .args(args)
        .output()
        .expect("run secretfs")
}

/// Runs an unmount again while it fails with EBUSY, a bounded number of times. A file a test
/// closed can still be open for a moment in a child that another test thread is spawning (a
/// fork holds a copy of every descriptor until it execs), which makes the mount busy.
pub fn retry_while_busy(mut umount: impl FnMut() -> Output) -> Output {
    let mut out = umount();
    for _ in 0..100 {
        if out.status.success()
            || !String::from_utf8_lossy(&out.stderr).contains("Device or resource busy")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        out = umount();
    }
    out
}

pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "integration tests mount FUSE filesystems and must run as root"
    );
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: modprobe fuse"
    );
}

/// Whether this test can run here: mounting needs root and /dev/fuse. Without them the test is
/// skipped with a line on the terminal (`cargo test` as a normal user), except under `CI=true`,
/// where nothing may be skipped and the missing privilege is a failure.
pub fn can_mount() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    if root && Path::new("/dev/fuse").exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        require_root();
    }
    skipped("needs root and /dev/fuse (run as root, or `sudo -E cargo test`)");
    false
}

/// Reports a skipped test on stderr itself: libtest captures `eprintln!`, not direct writes.
pub fn skipped(why: &str) {
    use std::io::Write;
    let name = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(std::io::stderr(), "skipped {name}: {why}");
}

pub struct Fs {
    pub dir: tempfile::TempDir,
    pub backing: PathBuf,
    pub mnt: PathBuf,
    pub key: PathBuf,
    pub log: PathBuf,
    mounted: bool,
}

impl Fs {
    /// A keyfile filesystem, initialised but not mounted.
    pub fn init() -> Self {
        Self::init_with_key(None)
    }

    /// Initialised with `--key SOURCE`, or a keyfile in the temp directory when `None`.
    pub fn init_with_key(source: Option<&str>) -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("secretfs-test")
            .tempdir()
            .expect("tempdir");
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        let key = dir.path().join("key");
        let log = dir.path().join("daemon.log");
        std::fs::create_dir(&mnt).unwrap();
        let keyfile = format!("keyfile:{}", key.display());
        let out = secretfs(&[
            "init",
            backing.to_str().unwrap(),
            "--key",
            source.unwrap_or(&keyfile),
        ]);
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Fs {
            dir,
            backing,
            mnt,
            key,
            log,
            mounted: false,
        }
    }

    /// Initialised and mounted (allow_other, root opened to everybody).
    pub fn new() -> Self {
        let mut fs = Self::init();
        fs.mount();
        std::fs::set_permissions(&fs.mnt, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        fs
    }

    pub fn try_mount(&mut self, extra: &[&str]) -> Output {
        let opts = format!("allow_other,log={}", self.log.display());
        let mut args = vec![
            "mount",
            self.backing.to_str().unwrap(),
            self.mnt.to_str().unwrap(),
            "-o",
            &opts,
        ];
        args.extend_from_slice(extra);
        let out = secretfs(&args);
        if out.status.success() {
            self.mounted = true;
        }
        out
    }

    /// Mounts with the daemon started under this soft/hard open-file limit, as fstab mounts
    /// under systemd (soft 1024) and login shells start it.
    /// `extra`: more mount options, comma-separated (or empty).
    pub fn mount_with_nofile(&mut self, soft: u64, hard: u64, extra: &str) {
        use std::os::unix::process::CommandExt;
        let mut opts = format!("allow_other,log={}", self.log.display());
        if !extra.is_empty() {
            opts = format!("{opts},{extra}");
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secretfs"));
        cmd.args([
            "mount",
            self.backing.to_str().unwrap(),
            self.mnt.to_str().unwrap(),
            "-o",
            &opts,
        ]);
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().expect("run secretfs");
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = true;
    }

    /// The daemon's pid, from `secretfs status --json`.
    pub fn daemon_pid(&self) -> u32 {
        daemon_pid_of(&self.mnt).expect("status --json names the daemon's pid")
    }

    pub fn mount(&mut self) {
        let out = self.try_mount(&[]);
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn umount(&mut self) {
        let out = retry_while_busy(|| secretfs(&["umount", self.mnt.to_str().unwrap()]));
        assert!(
            out.status.success(),
            "umount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = false;
    }

    pub fn remount(&mut self) {
        self.umount();
        self.mount();
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// For mounts made, or ended (daemon killed, SIGTERM), by the test itself, so that drop
    /// knows whether to unmount.
    #[allow(dead_code)]
    pub fn mark_mounted(&mut self, mounted: bool) {
        self.mounted = mounted;
    }

    pub fn is_mounted(&self) -> bool {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&format!(" {} ", self.mnt.display()))
    }

    /// The backing file of a plaintext path: FUSE inode numbers are the backing ones.
    pub fn backing_of(&self, plain: &Path) -> PathBuf {
        let ino = std::fs::symlink_metadata(plain).unwrap().ino();
        find_ino(&self.backing, ino).unwrap_or_else(|| panic!("no backing file with inode {ino}"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every file under the backing store, recursively.
    pub fn backing_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.backing, &mut out);
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

fn find_ino(dir: &Path, ino: u64) -> Option<PathBuf> {
    let mut all = Vec::new();
    walk(dir, &mut all);
    all.into_iter()
        .find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.ino() == ino))
}

impl Drop for Fs {
    fn drop(&mut self) {
        if self.mounted {
            let pid = daemon_pid_of(&self.mnt);
            let _ = secretfs(&["umount", "--lazy", self.mnt.to_str().unwrap()]);
            if let Some(pid) = pid {
                wait_for_exit(pid);
            }
        }
        forget_pins_under(self.dir.path());
    }
}

/// The pid of the daemon serving `mnt`, if `secretfs status` can tell.
pub fn daemon_pid_of(mnt: &Path) -> Option<u32> {
    let out = secretfs(&["status", mnt.to_str()?, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["daemon_pid"].as_u64().map(|p| p as u32)
}

/// Waits (up to 10 s) until process `pid` has exited: a lazily unmounted daemon finishes on
/// its own, and the test directory it holds goes only after it.
pub fn wait_for_exit(pid: u32) {
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    };
    for _ in 0..1000 {
        if gone() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("daemon {pid} still running 10 s after a lazy unmount");
}

pub fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Every entry under `dir` with its contents (empty for directories and unreadable objects),
/// sorted: what a refused mount must leave exactly as it was.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
                out.push((p, Vec::new()));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// Removes this host's key pins of stores under `dir` (a test's temp dir), so test runs leave
/// no pins behind in /etc/secretfs/pins.
pub fn forget_pins_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/etc/secretfs/pins") else {
        return;
    };
    for e in entries.flatten() {
        let pinned_here = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["backing"].as_str().map(|b| Path::new(b).starts_with(dir)))
            .unwrap_or(false);
        if pinned_here {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A seed printed so any failure replays: `SECRETFS_TEST_SEED=N` fixes it, otherwise every run
/// (CI included) takes a new one, next to the fixed seeds the tests also run.
#[allow(dead_code)]
pub fn fresh_seed(what: &str) -> u64 {
    let seed = std::env::var("SECRETFS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{what} seed: SECRETFS_TEST_SEED={seed}");
    seed
}
