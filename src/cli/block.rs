//! `secretfs block open|close|status`: the dm-crypt/LUKS2 mode on the command line, and the
//! one place where `BlockError` becomes a message, a hint and an exit code.

use super::{exit, CliError, KeyArgs};
use crate::block::{self, BlockError, FormatPolicy, FsType, OpenRequest};
use crate::keysource::KeySpec;
use crate::store::config::KeySourceDescriptor;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct BlockArgs {
    #[command(subcommand)]
    pub command: BlockCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BlockCommand {
    /// Unlock (formatting a blank device first) and mount a device or file with dm-crypt.
    Open(OpenArgs),
    /// Unmount and close a block volume (loop devices detach themselves).
    Close(CloseArgs),
    /// Show an open block volume: mapping, device, backing file, key source.
    Status(CloseArgs),
}

#[derive(Debug, clap::Args)]
pub struct OpenArgs {
    /// A block device (e.g. an instance-store NVMe disk) or a file (attached to a loop device).
    pub target: PathBuf,
    /// Where the filesystem is mounted.
    pub mountpoint: PathBuf,
    /// Create a missing file target as a sparse file of this size (e.g. 10G, 512M).
    #[arg(long, value_name = "N[K|M|G|T]", value_parser = parse_size)]
    pub size: Option<u64>,
    /// Filesystem made inside a new volume.
    #[arg(long, value_enum, default_value_t = FsType::Ext4)]
    pub fs: FsType,
    /// auto: format a blank device, open ours, refuse others; always: format anything;
    /// never: only open.
    #[arg(long, value_enum, default_value_t = FormatPolicy::Auto)]
    pub format: FormatPolicy,
    /// Zero a newly formatted volume through dm-crypt (slow; progress on stderr).
    #[arg(long)]
    pub wipe: bool,
    /// Bypass dm-crypt's work queues (lower latency on NVMe).
    #[arg(long)]
    pub perf_no_workqueue: bool,
    /// Mount read-only.
    #[arg(long)]
    pub ro: bool,
    /// Honour setuid/setgid bits on the volume (mounted nosuid by default).
    #[arg(long)]
    pub suid: bool,
    /// Allow device nodes on the volume (mounted nodev by default).
    #[arg(long)]
    pub dev: bool,
    #[command(flatten)]
    pub key: KeyArgs,
}

#[derive(Debug, clap::Args)]
pub struct CloseArgs {
    /// A mount point of a block volume, or its mapping name (secretfs-UUID).
    pub target: String,
    /// Print JSON (status only).
    #[arg(long)]
    pub json: bool,
}

/// A volume size: `10G`, `512M` (binary multiples), at least what LUKS2 needs.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let size = super::parse_bytes(text)?;
    if size < 32 << 20 {
        return Err(format!(
            "size `{text}` is too small: a LUKS2 volume needs at least 32M"
        ));
    }
    Ok(size)
}

impl From<BlockError> for CliError {
    fn from(e: BlockError) -> Self {
        let msg = e.to_string();
        match e {
            BlockError::NotRoot => CliError::new(exit::MOUNT, msg).hint("run it with sudo"),
            BlockError::NoDeviceMapper => CliError::new(exit::MOUNT, msg).hint(
                "load it with `modprobe dm-crypt` if the kernel has it as a module; otherwise use file mode: `secretfs init DIR` then `secretfs mount DIR MOUNTPOINT` (FUSE, no device-mapper needed)",
            ),
            BlockError::ToolMissing { package, .. } => {
                CliError::new(exit::MOUNT, msg).hint(format!("apt-get install {package}"))
            }
            BlockError::WrongKey => CliError::new(exit::KEY, msg)
                .hint("check --key: it must be the key source this volume was formatted with (see `secretfs status`)"),
            BlockError::Busy { .. } => CliError::new(exit::MOUNT, msg)
                .hint("see `lsblk`, `dmsetup ls` and `findmnt`; close it first with `secretfs block close`"),
            BlockError::Foreign { .. } => CliError::new(exit::BACKING, msg)
                .hint("pick another device, or pass --format always to destroy what is there"),
            BlockError::BlankRefused { .. } => CliError::new(exit::BACKING, msg)
                .hint("use --format auto to create a new volume on it"),
            BlockError::SizeNeeded { .. } => CliError::new(exit::USAGE, msg)
                .hint("e.g. --size 10G"),
            BlockError::BadTarget { .. } | BlockError::KeyNeeded { .. } => {
                CliError::new(exit::USAGE, msg)
            }
            BlockError::BadMountpoint { path } => CliError::new(exit::MOUNT, msg)
                .hint(format!("create it first: mkdir -p {}", path.display())),
            BlockError::NotOpen { .. } => CliError::new(exit::NOT_MOUNTED, msg),
            BlockError::Key(k) => k.into(),
            BlockError::Io { .. } | BlockError::Tool { .. } => CliError::new(exit::FAILURE, msg),
        }
    }
}

/// The key of a volume, chosen as for a file-mode store: the LUKS2 token is read from the
/// device, which whoever can write the disk controls, so it never chooses the key alone. An
/// existing volume opens with the source this host pinned for its UUID (the token must match
/// it), or with the key the user names, which is then pinned; a new one takes the named key.
/// Returns whether the volume is to be pinned once it is open. Ephemeral volumes are formatted
/// at every open with a fresh random key, whatever their token says, and never pinned.
fn choose(
    key: &KeyArgs,
    option: Option<&str>,
    prepared: &block::Prepared,
) -> Result<(KeySpec, bool), CliError> {
    let given = key.key.as_deref().or(option);
    let (Some(stored), Some(uuid)) = (prepared.descriptor(), prepared.uuid()) else {
        return match given {
            Some(text) => Ok((key.spec(text)?, true)),
            None => Err(BlockError::KeyNeeded {
                device: prepared.device().to_path_buf(),
            }
            .into()),
        };
    };
    if matches!(stored, KeySourceDescriptor::Ephemeral) {
        return Ok((super::spec_for(key, option, stored)?, false));
    }
    let device = prepared.device().display();
    match crate::keysource::pins::load(std::path::Path::new(crate::keysource::pins::PIN_DIR), &uuid)
        .map_err(|e| CliError::new(exit::KEY, e.to_string()))?
    {
        Some(pin) => {
            if pin.key_source != *stored {
                return Err(CliError::new(
                    exit::KEY,
                    format!(
                        "the LUKS2 token of {device} names key source `{}`, but this host pinned `{}` for volume {uuid}: the token was replaced or edited; nothing was touched",
                        stored.kind(),
                        pin.key_source.kind()
                    ),
                ));
            }
            let mut spec = match given {
                Some(text) => key.spec(text)?,
                None => super::spec_for(key, None, &pin.key_source)?,
            };
            super::same_kind(&spec, &pin.key_source, "the pin")?;
            super::pin_kms_key(&mut spec, &pin.key_source);
            Ok((spec, false))
        }
        None => {
            let Some(text) = given else {
                return Err(CliError::new(
                    exit::KEY,
                    format!("volume {uuid} on {device} has no key pin on this host, and its LUKS2 token cannot be trusted to name its key"),
                )
                .hint("name the key once with --key (or -o key=); it is pinned after it opens the volume"));
            };
            let spec = key.spec(text)?;
            super::require_identity(&spec)?;
            super::same_kind(&spec, stored, "the volume's token")?;
            Ok((spec, true))
        }
    }
}

/// Shared by `block open` and the fstab helper (`mode=block`).
pub fn open(
    req: &OpenRequest,
    key: &KeyArgs,
    option: Option<&str>,
) -> Result<block::Opened, CliError> {
    crate::daemon::forbid_core_dumps();
    let prepared = block::prepare(req)?;
    let (mut spec, pin_after) = choose(key, option, &prepared)?;
    if let KeySpec::Passphrase(crate::keysource::PassphraseInput::Tty) = &spec {
        let pass = crate::keysource::local::read_passphrase(
            &crate::keysource::PassphraseInput::Tty,
            prepared.descriptor().is_none(),
        )?;
        spec = KeySpec::Passphrase(crate::keysource::PassphraseInput::Preread(pass));
    }
    let opened = block::open(prepared, &spec)?;
    let target = std::fs::canonicalize(&req.target).unwrap_or_else(|_| req.target.clone());
    if pin_after && !matches!(opened.descriptor, KeySourceDescriptor::Ephemeral) {
        if let Ok(fs_id) = opened.uuid.parse() {
            if let Err(e) = crate::keysource::pins::store(
                std::path::Path::new(crate::keysource::pins::PIN_DIR),
                &crate::keysource::pins::Pin {
                    fs_id,
                    backing: target,
                    key_source: opened.descriptor.clone(),
                },
            ) {
                eprintln!("secretfs: warning: {e}; give --key at every open until it is pinned");
            }
        }
    }
    crate::audit::unlocked(&opened.uuid, opened.key_source);
    crate::audit::mounted(
        &opened.uuid,
        &opened.device.to_string_lossy(),
        &opened.mountpoint.to_string_lossy(),
    );
    Ok(opened)
}

pub fn run(args: &BlockArgs) -> Result<(), CliError> {
    match &args.command {
        BlockCommand::Open(a) => {
            let req = OpenRequest {
                target: a.target.clone(),
                mountpoint: a.mountpoint.clone(),
                size: a.size,
                fs: a.fs,
                format: a.format,
                wipe: a.wipe,
                no_workqueue: a.perf_no_workqueue,
                mount_flags: [
                    (a.ro, libc::MS_RDONLY),
                    (!a.suid, libc::MS_NOSUID),
                    (!a.dev, libc::MS_NODEV),
                ]
                .iter()
                .filter(|(on, _)| *on)
                .fold(0, |flags, (_, flag)| flags | flag),
            };
            let o = open(&req, &a.key, None)?;
            println!(
                "{} {} ({}) on {} via {}, key source {}",
                if o.formatted {
                    "formatted and opened"
                } else {
                    "opened"
                },
                o.name,
                o.device.display(),
                o.mountpoint.display(),
                o.mapper.display(),
                o.key_source
            );
            Ok(())
        }
        BlockCommand::Close(a) => {
            let name = block::close(&a.target)?;
            println!("closed {name}");
            Ok(())
        }
        BlockCommand::Status(a) => {
            let s = block::status(&a.target).ok_or_else(|| {
                CliError::new(
                    exit::NOT_MOUNTED,
                    format!("{} is not an open secretfs block volume", a.target),
                )
            })?;
            super::print_report(&s, a.json, render)
        }
    }
}

pub fn render(s: &block::BlockStatus) -> String {
    let mut out = format!("{}: open (block mode, dm-crypt LUKS2)\n", s.name);
    out += &format!("  mapping:     {}\n", s.mapper.display());
    for m in &s.mountpoints {
        out += &format!("  mount point: {}\n", m.display());
    }
    if let Some(d) = &s.device {
        out += &format!("  device:      {}\n", d.display());
    }
    if let Some(f) = &s.backing_file {
        out += &format!("  backing:     {}\n", f.display());
    }
    out += &format!("  luks uuid:   {}\n", s.uuid);
    out += &format!(
        "  key source:  {}\n",
        s.key_source
            .as_ref()
            .map(super::status::describe_key)
            .unwrap_or_else(|| "unknown (no secretfs token)".into())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("67108864"), Ok(64 << 20));
        assert!(parse_size("1M").is_err());
        assert!(parse_size("10X").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("").is_err());
    }
}
