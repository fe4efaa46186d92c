//! `secretfs block open|close|status`: the arguments of the dm-crypt/LUKS2 mode, handed to
//! `app::block`, and the human rendering of a volume's status.

use super::{exit, CliError, KeyArgs, SlotArgs};
use crate::block::{self, FormatPolicy, FsType, OpenRequest};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct BlockArgs {
    #[command(subcommand)]
    pub command: BlockCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BlockCommand {
    /// Unlock (formatting a blank device first) and mount a device or file with dm-crypt.
    Open(Box<OpenArgs>),
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
    /// A new volume also gets a recovery key (printed once: write it down) as slot 1, which
    /// opens it with `--key recovery`, or with a stock `cryptsetup open` where secretfs is gone.
    #[arg(long)]
    pub recovery: bool,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub slot: SlotArgs,
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
                recovery: a.recovery,
            };
            let done = crate::app::block::open(&req, &a.slot.apply(a.key.choice()), None)?;
            let o = &done.opened;
            println!(
                "{} {} ({}) on {} via {}, key source {} (slot {})",
                if o.formatted {
                    "formatted and opened"
                } else {
                    "opened"
                },
                o.name,
                o.device.display(),
                o.mountpoint.display(),
                o.mapper.display(),
                o.key_source,
                o.slot
            );
            if let Some(text) = &done.recovery_text {
                super::key::print_volume_recovery_key(text, &a.target);
            }
            Ok(())
        }
        BlockCommand::Close(a) => {
            let name = crate::app::block::close(&a.target)?;
            println!("closed {name}");
            Ok(())
        }
        BlockCommand::Status(a) => {
            let s = crate::app::block::status(&a.target).ok_or_else(|| {
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
            .map(crate::app::status::describe_key)
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
