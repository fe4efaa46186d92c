//! The systems the comparison benchmark measures, and how each is set up over a store directory
//! and torn down again: plain, the FUSE passthrough control, file mode, block mode, gocryptfs.

use super::BenchError;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum System {
    /// The store directory itself, no FUSE, no crypto: the ceiling.
    Plain,
    /// Our FUSE frontend with the identity codec: FUSE cost without crypto cost.
    Control,
    /// secretfs file mode.
    Secretfs,
    /// secretfs file mode mounted with `-o writeback` (the kernel's writeback cache).
    SecretfsWriteback,
    /// secretfs block mode: kernel dm-crypt (LUKS2) over a loop file in the store, ext4 inside.
    Block,
    /// gocryptfs, the peer users compare us with.
    Gocryptfs,
}

impl System {
    pub const ALL: [System; 6] = [
        System::Plain,
        System::Control,
        System::Secretfs,
        System::SecretfsWriteback,
        System::Block,
        System::Gocryptfs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::Plain => "plain",
            System::Control => "control",
            System::Secretfs => "secretfs",
            System::SecretfsWriteback => "secretfs-wb",
            System::Block => "block",
            System::Gocryptfs => "gocryptfs",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn description(self) -> &'static str {
        match self {
            System::Plain => "the store itself (no FUSE, no encryption)",
            System::Control => "secretfs frontend with the identity codec (FUSE cost only)",
            System::Secretfs => "secretfs file mode (AES-256-GCM per 4 KiB block)",
            System::SecretfsWriteback => {
                "secretfs file mode with `-o writeback` (kernel writeback cache)"
            }
            System::Block => "secretfs block mode (LUKS2 aes-xts-plain64, ext4, loop file)",
            System::Gocryptfs => "gocryptfs (AES-256-GCM per 4 KiB block)",
        }
    }

    /// Why this system cannot run here with the secretfs binary `bin`, if it cannot.
    pub fn unavailable(self, bin: &Path) -> Option<String> {
        match self {
            System::Plain | System::Secretfs | System::SecretfsWriteback => None,
            System::Control => (!has_passthrough_control(bin)).then(|| {
                "this secretfs was built without `--features passthrough-control`".to_string()
            }),
            System::Block => {
                if !secretfs::block::has_device_mapper() {
                    Some(
                        "no device-mapper in this kernel (run benches/vm.sh for block mode)".into(),
                    )
                } else if !on_path("cryptsetup") {
                    Some("cryptsetup is not installed".into())
                } else {
                    None
                }
            }
            System::Gocryptfs => {
                (!on_path("gocryptfs")).then(|| "gocryptfs is not installed".into())
            }
        }
    }
}

/// Whether `bin` knows the hidden `mount --passthrough-control`: clap rejects an unknown flag
/// before it looks at `--help`, so only a build with the control prints the help and succeeds.
fn has_passthrough_control(bin: &Path) -> bool {
    Command::new(bin)
        .args(["mount", "--passthrough-control", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn on_path(tool: &str) -> bool {
    find_on_path(tool).is_some()
}

/// The first `tool` in a directory of `$PATH`, as a shell would find it.
pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A system ready to be measured: files go under `root`.
pub struct Mounted {
    pub system: System,
    pub root: PathBuf,
    pub daemon_pid: Option<u32>,
    teardown: Teardown,
}

enum Teardown {
    Nothing,
    SecretfsUmount { bin: PathBuf, mountpoint: PathBuf },
    BlockClose { bin: PathBuf, mountpoint: PathBuf },
    Umount { mountpoint: PathBuf },
}

fn run(cmd: &mut Command, what: &str) -> Result<String, BenchError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Io {
            what: format!("cannot run {what}"),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(BenchError::Setup(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )))
    }
}

fn mkdir(path: &Path) -> Result<(), BenchError> {
    fs::create_dir_all(path).map_err(|source| BenchError::Io {
        what: format!("cannot create {}", path.display()),
        source,
    })
}

/// The pid of the gocryptfs daemon serving `mountpoint` (it forks away from its parent).
fn gocryptfs_pid(mountpoint: &Path) -> Option<u32> {
    let want = mountpoint.as_os_str().as_encoded_bytes();
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = fs::read(e.path().join("cmdline")).ok()?;
        let mut args = cmdline.split(|b| *b == 0);
        let exe = args.next()?;
        (exe.ends_with(b"gocryptfs") && cmdline.split(|b| *b == 0).any(|a| a == want))
            .then_some(pid)
    })
}

impl Mounted {
    /// Sets `system` up in `store` (backing data) with its mount point under `mounts`.
    pub fn setup(
        system: System,
        bin: &Path,
        store: &Path,
        mounts: &Path,
        block_bytes: u64,
    ) -> Result<Self, BenchError> {
        let backing = store.join(system.name());
        let mountpoint = mounts.join(system.name());
        mkdir(&backing)?;
        match system {
            System::Plain => Ok(Self {
                system,
                root: backing,
                daemon_pid: None,
                teardown: Teardown::Nothing,
            }),
            System::Secretfs | System::SecretfsWriteback | System::Control => {
                mkdir(&mountpoint)?;
                // Ephemeral: a fresh random key in memory, so no key file is left behind.
                run(
                    Command::new(bin)
                        .arg("init")
                        .arg(&backing)
                        .args(["--key", "ephemeral"]),
                    "secretfs init",
                )?;
                let mut mount = Command::new(bin);
                mount.arg("mount").arg(&backing).arg(&mountpoint);
                if system == System::Control {
                    mount.arg("--passthrough-control");
                }
                if system == System::SecretfsWriteback {
                    mount.args(["-o", "writeback"]);
                }
                run(&mut mount, "secretfs mount")?;
                let daemon_pid = secretfs::daemon::read_state(&mountpoint).map(|s| s.pid);
                Ok(Self {
                    system,
                    root: mountpoint.clone(),
                    daemon_pid,
                    teardown: Teardown::SecretfsUmount {
                        bin: bin.to_path_buf(),
                        mountpoint,
                    },
                })
            }
            System::Block => {
                mkdir(&mountpoint)?;
                let image = backing.join("volume.img");
                run(
                    Command::new(bin)
                        .args(["block", "open"])
                        .arg(&image)
                        .arg(&mountpoint)
                        .args(["--key", "ephemeral", "--size"])
                        .arg(format!("{}M", block_bytes.div_ceil(1 << 20))),
                    "secretfs block open",
                )?;
                Ok(Self {
                    system,
                    root: mountpoint.clone(),
                    daemon_pid: None,
                    teardown: Teardown::BlockClose {
                        bin: bin.to_path_buf(),
                        mountpoint,
                    },
                })
            }
            System::Gocryptfs => {
                mkdir(&mountpoint)?;
                let passfile = store.join("gocryptfs.pass");
                let mut password = [0u8; 24];
                getrandom::getrandom(&mut password).map_err(|e| {
                    BenchError::Setup(format!("no randomness for the gocryptfs password: {e}"))
                })?;
                password.iter_mut().for_each(|b| *b = b'a' + (*b % 26));
                write_private(&passfile, &password)?;
                // scrypt's default cost only slows the set-up, not the data path.
                run(
                    Command::new("gocryptfs")
                        .args(["-init", "-q", "-scryptn", "10", "-passfile"])
                        .arg(&passfile)
                        .arg(&backing),
                    "gocryptfs -init",
                )?;
                run(
                    Command::new("gocryptfs")
                        .args(["-q", "-passfile"])
                        .arg(&passfile)
                        .arg(&backing)
                        .arg(&mountpoint),
                    "gocryptfs mount",
                )?;
                Ok(Self {
                    system,
                    root: mountpoint.clone(),
                    daemon_pid: gocryptfs_pid(&mountpoint),
                    teardown: Teardown::Umount { mountpoint },
                })
            }
        }
    }

    /// Unmounts and waits for the daemon to go; errors are reported, not fatal.
    pub fn teardown(mut self) -> Result<(), BenchError> {
        self.teardown_now()
    }

    fn teardown_now(&mut self) -> Result<(), BenchError> {
        let result = match std::mem::replace(&mut self.teardown, Teardown::Nothing) {
            Teardown::Nothing => Ok(()),
            Teardown::SecretfsUmount { bin, mountpoint } => run(
                Command::new(bin).arg("umount").arg(mountpoint),
                "secretfs umount",
            )
            .map(drop),
            Teardown::BlockClose { bin, mountpoint } => run(
                Command::new(bin).args(["block", "close"]).arg(mountpoint),
                "secretfs block close",
            )
            .map(drop),
            Teardown::Umount { mountpoint } => {
                run(Command::new("umount").arg(&mountpoint), "umount").map(drop)
            }
        };
        if let Some(pid) = self.daemon_pid.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while secretfs::daemon::pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        result
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // An interrupted benchmark must not leave mounts behind.
        let _ = self.teardown_now();
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| BenchError::Io {
            what: format!("cannot create {}", path.display()),
            source,
        })?;
    f.write_all(bytes).map_err(|source| BenchError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_plain_is_always_there() {
        for s in System::ALL {
            assert_eq!(System::parse(s.name()), Some(s));
        }
        assert_eq!(System::parse("ext4"), None);
        assert!(System::Plain
            .unavailable(Path::new("/nonexistent"))
            .is_none());
        assert!(System::Control
            .unavailable(Path::new("/nonexistent"))
            .is_some());
    }

    #[test]
    fn plain_is_the_store_directory() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mounted::setup(
            System::Plain,
            Path::new("/nonexistent"),
            dir.path(),
            dir.path(),
            0,
        )
        .unwrap();
        assert_eq!(m.root, dir.path().join("plain"));
        assert!(m.root.is_dir());
        m.teardown().unwrap();
    }
}
