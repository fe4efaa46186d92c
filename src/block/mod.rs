//! Block mode: a device or sparse file (via loop) encrypted with dm-crypt/LUKS2, unlocked by the
//! same key sources as file mode. Owns the open/format/mount orchestration, its undo, and close.

pub mod loopdev;
pub mod luks;
pub mod mkfs;
pub mod slots;

use crate::keysource::{KeySourceError, KeySpec};
use crate::store::config::{KeySlot, KeySourceDescriptor};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use mkfs::FsType;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block mode must run as root (it drives device-mapper, loop devices and mount)")]
    NotRoot,
    #[error("this kernel has no device-mapper (none in /proc/misc, /dev/mapper/control does not open): dm-crypt block mode cannot run here")]
    NoDeviceMapper,
    #[error("{tool} is not installed")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("this key does not open the volume (no LUKS keyslot accepts it); nothing was changed")]
    WrongKey,
    #[error("the {kind} key does not open slot {slot} of the volume (LUKS2 keyslot {slot} refuses it); nothing was changed")]
    SlotRefused { slot: u32, kind: &'static str },
    #[error("{path} is not a LUKS2 volume made by secretfs block mode: {why}")]
    NotAVolume { path: PathBuf, why: String },
    #[error("busy: {what}")]
    Busy { what: String },
    #[error("{device} already holds {what}; refusing to format it")]
    Foreign { device: PathBuf, what: String },
    #[error("{device} is blank and --format never was given")]
    BlankRefused { device: PathBuf },
    #[error("{path} does not exist; give --size to create it as a sparse file")]
    SizeNeeded { path: PathBuf },
    #[error("{path} is neither a block device nor a regular file")]
    BadTarget { path: PathBuf },
    #[error("mount point {path} is not a directory")]
    BadMountpoint { path: PathBuf },
    #[error("{target} is not an open secretfs block volume")]
    NotOpen { target: String },
    #[error("no key source given and {device} is not yet a secretfs volume")]
    KeyNeeded { device: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{tool} failed ({what}, exit {status}): {stderr}")]
    Tool {
        tool: &'static str,
        what: String,
        status: i32,
        stderr: String,
    },
    #[error(transparent)]
    Key(#[from] KeySourceError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FormatPolicy {
    /// Format a blank device; open ours; refuse anything else.
    #[default]
    Auto,
    /// Format whatever is there (destroys it).
    Always,
    /// Only open an existing secretfs volume.
    Never,
}

/// Everything `open` needs besides the key.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    pub target: PathBuf,
    pub mountpoint: PathBuf,
    /// Size of a file target that does not exist yet.
    pub size: Option<u64>,
    pub fs: FsType,
    pub format: FormatPolicy,
    pub wipe: bool,
    pub no_workqueue: bool,
    /// MS_* flags for the final mount (ro, nosuid, …).
    pub mount_flags: libc::c_ulong,
    /// A new volume also gets a recovery slot (keyslot 1), whose key is printed once.
    pub recovery: bool,
}

/// Refuses early, before anything is created, when block mode cannot work on this host.
pub fn preflight() -> Result<(), BlockError> {
    require_root()?;
    if !has_device_mapper() {
        return Err(BlockError::NoDeviceMapper);
    }
    require_cryptsetup()
}

/// The checks for commands that only read or change a LUKS2 header (`key list|add|remove`):
/// root and cryptsetup, but no device-mapper (nothing is activated).
pub fn preflight_header() -> Result<(), BlockError> {
    require_root()?;
    require_cryptsetup()
}

fn require_root() -> Result<(), BlockError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BlockError::NotRoot);
    }
    Ok(())
}

fn require_cryptsetup() -> Result<(), BlockError> {
    match tool("cryptsetup") {
        Some(_) => Ok(()),
        None => Err(BlockError::ToolMissing {
            tool: "cryptsetup",
            package: "cryptsetup-bin",
        }),
    }
}

/// Whether this kernel has device-mapper: registered in /proc/misc, or loadable (opening the
/// control node loads dm_mod). The node alone proves nothing: installing lvm2 creates it on
/// kernels without device-mapper too, and opening it then fails with ENODEV.
pub fn has_device_mapper() -> bool {
    let in_misc = std::fs::read_to_string("/proc/misc")
        .map(|t| t.lines().any(|l| l.trim_end().ends_with(" device-mapper")))
        .unwrap_or(false);
    in_misc
        || std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/mapper/control")
            .is_ok()
}

/// Where an external tool is: PATH first, then the sbin directories, because mount(8) may run
/// its helpers with a minimal PATH that lacks them.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A command for `name`, found as `tool` finds it (else left to PATH, to fail as NotFound).
pub(crate) fn command(name: &str) -> std::process::Command {
    std::process::Command::new(tool(name).unwrap_or_else(|| PathBuf::from(name)))
}

/// Undoes, in reverse order, whatever a failed open had done; disarmed on success.
#[derive(Default)]
struct Undo {
    created_file: Option<PathBuf>,
    /// A device this open formatted: its header is zeroed again, else the next open would find
    /// "our" volume without a filesystem and never format it.
    formatted: Option<PathBuf>,
    mapping: Option<String>,
    mounted: Option<PathBuf>,
}

impl Undo {
    fn disarm(&mut self) {
        // Not `*self = Undo::default()`: that would drop, and so run, the old value.
        self.created_file = None;
        self.formatted = None;
        self.mapping = None;
        self.mounted = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            if let Err(e) = unmount(&m) {
                tracing::error!("undo: cannot unmount {}: {e}", m.display());
            }
        }
        if let Some(name) = self.mapping.take() {
            if let Err(e) = luks::close(&name) {
                tracing::error!("undo: cannot close {name}: {e}");
            }
        }
        if let Some(d) = self.formatted.take() {
            if let Err(e) = mkfs::erase_header(&d) {
                tracing::error!(
                    "undo: cannot erase the new LUKS header on {}: {e}",
                    d.display()
                );
            }
        }
        if let Some(f) = self.created_file.take() {
            // The loop device is detached by autoclear once its last opener is gone; the
            // file itself was made by this open and holds nothing yet.
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A target after preflight: a block device (a loop device for a file), and what it holds.
pub struct Prepared {
    req: OpenRequest,
    device: PathBuf,
    // Fields drop in declaration order: the undo must run while the loop device is still
    // attached (it may erase a header through it), so it comes before `_loop`.
    undo: Undo,
    /// Keeps the loop device attached until dm-crypt holds it (or detaches it on failure).
    _loop: Option<loopdev::LoopDevice>,
    /// The exclusive lock on the target, from the probe until the volume is mounted.
    _hold: std::fs::File,
    content: mkfs::Content,
    header: Option<luks::Header>,
    /// The mapping a successful unlock made: its name, its node and the slot that opened it.
    mapped: Option<(String, PathBuf, u32)>,
}

/// A volume `Prepared::format` made: its UUID, its slots (0, and 1 when it has a recovery
/// slot), keyslot 0's passphrase to open it with, and the recovery key to show once.
pub struct Formatted {
    pub uuid: uuid::Uuid,
    pub slots: Vec<KeySlot>,
    pub passphrase: slots::Passphrase,
    pub recovery_text: Option<zeroize::Zeroizing<String>>,
}

impl Prepared {
    /// How an existing secretfs volume is unlocked (its first slot's token).
    pub fn descriptor(&self) -> Option<&KeySourceDescriptor> {
        self.header.as_ref().and_then(|h| h.primary())
    }

    /// The slots an existing secretfs volume's tokens describe (empty for anything else).
    pub fn slots(&self) -> Vec<KeySlot> {
        self.header
            .as_ref()
            .map(luks::Header::key_slots)
            .unwrap_or_default()
    }

    pub fn device(&self) -> &Path {
        &self.device
    }

    /// The LUKS UUID (the filesystem id) of an existing volume.
    pub fn uuid(&self) -> Option<uuid::Uuid> {
        self.header.as_ref().map(|h| h.uuid)
    }
}

/// The outcome of a successful open.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Opened {
    pub name: String,
    pub mapper: PathBuf,
    pub device: PathBuf,
    pub mountpoint: PathBuf,
    pub uuid: String,
    pub formatted: bool,
    pub key_source: &'static str,
    /// The slot (LUKS2 keyslot) that opened it.
    pub slot: u32,
    /// What that slot's token holds.
    pub descriptor: KeySourceDescriptor,
}

/// Step 1 of open: checks, file creation and loop attach, and a look at the device's content.
pub fn prepare(req: &OpenRequest) -> Result<Prepared, BlockError> {
    preflight()?;
    if !req.mountpoint.is_dir() {
        return Err(BlockError::BadMountpoint {
            path: req.mountpoint.clone(),
        });
    }
    let mut undo = Undo::default();
    let io = |what: String| move |source| BlockError::Io { what, source };
    let mut hold = None;
    let (device, lo) = match std::fs::metadata(&req.target) {
        Ok(m) if m.file_type().is_block_device() => (req.target.clone(), None),
        Ok(m) if m.is_file() => {
            hold = Some(hold_exclusively(&req.target)?);
            let lo = loopdev::attach(&req.target).map_err(io(format!(
                "cannot attach {} to a loop device",
                req.target.display()
            )))?;
            (lo.path.clone(), Some(lo))
        }
        Ok(_) => {
            return Err(BlockError::BadTarget {
                path: req.target.clone(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let size = req.size.ok_or_else(|| BlockError::SizeNeeded {
                path: req.target.clone(),
            })?;
            loopdev::create_sparse(&req.target, size)
                .map_err(io(format!("cannot create {}", req.target.display())))?;
            undo.created_file = Some(req.target.clone());
            hold = Some(hold_exclusively(&req.target)?);
            let lo = loopdev::attach(&req.target).map_err(io(format!(
                "cannot attach {} to a loop device",
                req.target.display()
            )))?;
            (lo.path.clone(), Some(lo))
        }
        Err(e) => return Err(io(format!("cannot use {}", req.target.display()))(e)),
    };
    if lo.is_none() {
        // O_EXCL on a block device fails with EBUSY while it is mounted or held by a mapping.
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(&device)
        {
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => BlockError::Busy {
                    what: format!(
                        "{} is in use (mounted, or held by another mapping)",
                        device.display()
                    ),
                },
                _ => io(format!("cannot open {}", device.display()))(e),
            });
        }
    }
    let hold = match hold {
        Some(h) => h,
        None => hold_exclusively(&device)?,
    };
    let content = mkfs::probe(&device)?;
    let header = match content {
        mkfs::Content::Luks => Some(luks::read_header(&device)?),
        _ => None,
    };
    Ok(Prepared {
        req: req.clone(),
        device,
        _loop: lo,
        _hold: hold,
        content,
        header,
        undo,
        mapped: None,
    })
}

/// Takes an exclusive BSD lock on the target (image file or device node), held until the
/// volume is formatted and mounted: two opens of one target can never both find it blank and
/// format it. udev honours the same lock on block devices and does not probe them meanwhile.
fn hold_exclusively(target: &Path) -> Result<std::fs::File, BlockError> {
    let f = std::fs::File::open(target).map_err(|source| BlockError::Io {
        what: format!("cannot open {}", target.display()),
        source,
    })?;
    // SAFETY: plain flock on a descriptor we own.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => BlockError::Busy {
                what: format!("another open is preparing {}", target.display()),
            },
            _ => BlockError::Io {
                what: format!("cannot lock {}", target.display()),
                source: e,
            },
        });
    }
    Ok(f)
}

impl Prepared {
    /// Step 2 of open: whether this open formats the target (a blank device, `--format
    /// always`, an ephemeral volume), or refuses it (someone else's data, a persistent volume
    /// under an `ephemeral` key); `false` means it opens our existing volume.
    pub fn needs_format(&self, ephemeral: bool) -> Result<bool, BlockError> {
        let ours = self.descriptor();
        Ok(match (self.req.format, self.content, ours) {
            (FormatPolicy::Always, _, _) => true,
            // An ephemeral volume's key died with its last open: start over, as designed.
            (_, _, Some(KeySourceDescriptor::Ephemeral)) => self.req.format != FormatPolicy::Never,
            (_, _, Some(_)) if ephemeral => {
                return Err(BlockError::Foreign {
                    device: self.device.clone(),
                    what: "a persistent secretfs volume (ephemeral would destroy it)".into(),
                })
            }
            (_, _, Some(_)) => false,
            (FormatPolicy::Never, mkfs::Content::Blank, None) => {
                return Err(BlockError::BlankRefused {
                    device: self.device.clone(),
                })
            }
            (_, mkfs::Content::Blank, None) => true,
            (_, content, None) => {
                let what = match content {
                    mkfs::Content::Luks => "another LUKS volume (no secretfs token)".to_string(),
                    _ => mkfs::describe(&self.device)
                        .map(|t| format!("an existing {t} filesystem"))
                        .unwrap_or_else(|| "data (a partition table or unknown signature)".into()),
                };
                return Err(BlockError::Foreign {
                    device: self.device.clone(),
                    what,
                });
            }
        })
    }

    /// Step 3, new volume: luksFormat with `spec`'s new key as slot 0 and its token, then (with
    /// `recovery`) a fresh recovery key as slot 1. Undone (header erased) if the open fails.
    pub fn format(&mut self, spec: &KeySpec) -> Result<Formatted, BlockError> {
        let uuid = uuid::Uuid::new_v4();
        let (master, descriptor) = spec.init(uuid.as_bytes())?;
        let passphrase = slots::key_passphrase(&master, &uuid);
        drop(master);
        self.undo.formatted = Some(self.device.clone());
        luks::format(&self.device, &uuid, &passphrase)?;
        // A KMS slot records the region and endpoint it was made with, as `init` does in file
        // mode, so the volume opens there without the flags.
        let first = KeySlot {
            region: spec.aws_args().and_then(|a| a.region.clone()),
            endpoint: spec.aws_args().and_then(|a| a.endpoint.clone()),
            ..KeySlot::direct(0, descriptor)
        };
        luks::import_token(&self.device, &first)?;
        let mut made = vec![first];
        let mut recovery_text = None;
        if self.req.recovery {
            let new = KeySpec::Recovery(crate::keysource::PassphraseInput::Tty)
                .create(uuid.as_bytes())?;
            let slot = KeySlot::direct(1, new.descriptor.clone());
            slots::add(
                &self.device,
                0,
                &passphrase,
                &slot,
                &slots::new_passphrase(&new, &uuid),
            )?;
            made.push(slot);
            recovery_text = new.recovery_text;
        }
        Ok(Formatted {
            uuid,
            slots: made,
            passphrase,
            recovery_text,
        })
    }

    /// Step 3 (or 4 after format): opens the volume with keyslot `slot` alone. Called once
    /// per slot the caller tries; a refused passphrase is `WrongKey` and changes nothing.
    pub fn unlock(
        &mut self,
        uuid: &uuid::Uuid,
        slot: u32,
        passphrase: &[u8],
    ) -> Result<(), BlockError> {
        let name = format!("{}{uuid}", luks::NAME_PREFIX);
        let mapper = luks::open(&self.device, &name, slot, passphrase, self.req.no_workqueue)?;
        self.undo.mapping = Some(name.clone());
        self.mapped = Some((name, mapper, slot));
        Ok(())
    }

    /// Last step: on a new volume wipe (if asked) and mkfs, then mount; everything done so far
    /// is kept. `slot` describes the slot that opened it (for the caller's pin and output).
    pub fn finish(
        mut self,
        uuid: &uuid::Uuid,
        formatted: bool,
        slot: &KeySlot,
    ) -> Result<Opened, BlockError> {
        let Some((name, mapper, _)) = self.mapped.clone() else {
            return Err(BlockError::NotOpen {
                target: self.device.display().to_string(),
            });
        };
        if formatted {
            // Wiping an existing volume would destroy its data: --wipe applies to a new one.
            if self.req.wipe {
                mkfs::wipe(&mapper)?;
            }
            mkfs::mkfs(&mapper, self.req.fs)?;
        }
        mount(
            &mapper,
            &self.req.mountpoint,
            self.req.fs,
            self.req.mount_flags,
        )?;
        self.undo.mounted = Some(self.req.mountpoint.clone());
        self.undo.disarm();
        register_umount_helper(&mapper, &self.req.mountpoint, self.req.fs.name());
        Ok(Opened {
            name,
            mapper,
            device: self.device.clone(),
            mountpoint: self.req.mountpoint.clone(),
            uuid: uuid.to_string(),
            formatted,
            key_source: slot.source.kind(),
            slot: slot.id,
            descriptor: slot.source.clone(),
        })
    }
}

fn cstr(p: &Path) -> Result<std::ffi::CString, BlockError> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| BlockError::Io {
        what: format!("bad path {}", p.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })
}

fn mount(dev: &Path, dir: &Path, fs: FsType, flags: libc::c_ulong) -> Result<(), BlockError> {
    let (d, m) = (cstr(dev)?, cstr(dir)?);
    let t = cstr(Path::new(fs.name()))?;
    // SAFETY: three valid C strings and a null data pointer.
    let ret = unsafe { libc::mount(d.as_ptr(), m.as_ptr(), t.as_ptr(), flags, std::ptr::null()) };
    crate::sys::cvt(ret).map(drop).map_err(|e| {
        let what = format!("cannot mount {} on {}", dev.display(), dir.display());
        match e.raw_os_error() {
            Some(libc::EBUSY) => BlockError::Busy { what },
            _ => BlockError::Io { what, source: e },
        }
    })
}

fn unmount(dir: &Path) -> Result<(), BlockError> {
    let m = cstr(dir)?;
    // SAFETY: a valid C string.
    let ret = unsafe { libc::umount2(m.as_ptr(), 0) };
    crate::sys::cvt(ret).map(drop).map_err(|e| {
        let what = format!("cannot unmount {}", dir.display());
        match e.raw_os_error() {
            Some(libc::EBUSY) => BlockError::Busy {
                what: format!("{what}: files are open under it"),
            },
            _ => BlockError::Io { what, source: e },
        }
    })
}

/// Records `helper=secretfs` for the mount in util-linux's utab (`mount -f` only writes the
/// table), so a plain `umount DIR` runs `umount.secretfs DIR`, which closes LUKS and loop too.
/// Best effort: without util-linux mount, `secretfs block close` still does everything.
fn register_umount_helper(dev: &Path, dir: &Path, fstype: &str) {
    let status = command("mount")
        .args(["-f", "-i", "-t", fstype, "-o", "helper=secretfs"])
        .arg(dev)
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        tracing::debug!(
            "mount -f could not record helper=secretfs for {}",
            dir.display()
        );
    }
}

/// Drops the utab record of a mount that is about to be unmounted (`umount --fake` only edits
/// the table; it needs the mount still present to find it).
fn forget_umount_helper(dir: &Path) {
    let _ = command("umount")
        .args(["--fake", "-i"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The mapping name behind `target`: a mount point of ours, a mapping name, or /dev/mapper/NAME.
pub fn resolve_name(target: &str) -> Option<String> {
    let path = Path::new(target);
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if let Some(m) = crate::mounts::at(&canon) {
        if let Some(name) = m.source.strip_prefix("/dev/mapper/") {
            if name.starts_with(luks::NAME_PREFIX) {
                return Some(name.to_string());
            }
        }
    }
    let name = target.strip_prefix("/dev/mapper/").unwrap_or(target);
    (name.starts_with(luks::NAME_PREFIX) && luks::mapper_path(name).exists())
        .then(|| name.to_string())
}

/// Reverses open: unmounts every mount of the mapping, closes it; the loop device (if any)
/// detaches itself through autoclear once dm-crypt lets go of it.
pub fn close(target: &str) -> Result<String, BlockError> {
    preflight()?;
    let name = resolve_name(target).ok_or_else(|| BlockError::NotOpen {
        target: target.to_string(),
    })?;
    let source = format!("/dev/mapper/{name}");
    let mut mounts: Vec<_> = crate::mounts::all()
        .into_iter()
        .filter(|m| m.source == source)
        .collect();
    mounts.reverse();
    for m in &mounts {
        forget_umount_helper(&m.mountpoint);
        if let Err(e) = unmount(&m.mountpoint) {
            // Still mounted: keep `umount DIR` able to close it later.
            register_umount_helper(Path::new(&source), &m.mountpoint, &m.fstype);
            return Err(e);
        }
    }
    luks::close(&name)?;
    Ok(name)
}

/// What `status` shows about an open block volume.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockStatus {
    pub name: String,
    pub mapper: PathBuf,
    pub mountpoints: Vec<PathBuf>,
    pub device: Option<PathBuf>,
    pub backing_file: Option<PathBuf>,
    pub uuid: String,
    pub key_source: Option<KeySourceDescriptor>,
}

/// The mapping names of every open secretfs volume, from the /dev/mapper nodes named by our
/// prefix (`status` reads each one through its node too).
pub fn open_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/mapper")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(luks::NAME_PREFIX))
        .collect();
    names.sort();
    names
}

/// Status of the block volume behind `target`, or None when it is not one of ours.
pub fn status(target: &str) -> Option<BlockStatus> {
    let name = resolve_name(target)?;
    let source = format!("/dev/mapper/{name}");
    let device = luks::underlying_device(&name);
    let backing_file = device.as_deref().and_then(loopdev::backing_file);
    let key_source = device
        .as_deref()
        .and_then(|d| luks::read_header(d).ok())
        .and_then(|h| h.primary().cloned());
    Some(BlockStatus {
        mapper: luks::mapper_path(&name),
        mountpoints: crate::mounts::all()
            .into_iter()
            .filter(|m| m.source == source)
            .map(|m| m.mountpoint)
            .collect(),
        device,
        backing_file,
        uuid: name.trim_start_matches(luks::NAME_PREFIX).to_string(),
        key_source,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_a_held_target_is_busy_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::write(&img, b"").unwrap();
        let first = hold_exclusively(&img).unwrap();
        assert!(matches!(
            hold_exclusively(&img),
            Err(BlockError::Busy { .. })
        ));
        drop(first);
        assert!(hold_exclusively(&img).is_ok());
    }
}
