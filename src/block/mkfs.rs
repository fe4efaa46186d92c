//! What is on a device before we touch it (blank, LUKS, something else), making the filesystem
//! inside the opened volume with lazy init, and the optional zero wipe with a progress bar.

use super::BlockError;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

/// How much of the start and of the end of a device must be zero for it to count as blank:
/// every common signature lies in the first MiB (MBR/GPT, LUKS, ext*, xfs, btrfs, swap,
/// iso9660, LVM) or the last one (the backup GPT, md 0.90/1.0 superblocks, ZFS labels 2-3).
pub const PROBE_LEN: usize = 1 << 20;
/// Beyond the first 8 MiB (read in full), samples of 4 KiB spread over the rest: data that outlived a zeroed start (a `dd` over the
/// first MiB, a stale header wiped) shows up in one of them, as do btrfs's superblock mirror
/// at 64 MiB and ext4's first backup superblock at 128 MiB, which are sampled too.
const SAMPLES: u64 = 256;
const SAMPLE_LEN: usize = 4096;
const FIXED_SAMPLES: [u64; 2] = [64 << 20, 128 << 20];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// All zeros where signatures live: a fresh instance-store disk or a new sparse file.
    Blank,
    /// A LUKS header (ours or not: the token decides).
    Luks,
    /// Anything else; `blkid -p` names it when it can.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

/// Classifies the first bytes of a device.
pub fn classify(head: &[u8]) -> Content {
    if head.starts_with(super::luks::LUKS_MAGIC) {
        Content::Luks
    } else if head.iter().all(|&b| b == 0) {
        Content::Blank
    } else {
        Content::Other
    }
}

/// What is on the device. Blank only when a wide probe agrees: the first and last MiB and
/// samples across the whole device all read as zeros, and `blkid -p` (every signature libblkid
/// knows, wherever it lives) finds nothing. Auto-format destroys what it misjudges, so every
/// doubt counts as data.
pub fn probe(device: &Path) -> Result<Content, BlockError> {
    use std::os::unix::fs::FileExt;
    let io = |source| BlockError::Io {
        what: format!("cannot read {}", device.display()),
        source,
    };
    let f = std::fs::File::open(device).map_err(io)?;
    let size = device_size(&f).map_err(io)?;
    let read = |offset: u64, len: usize| -> Result<Vec<u8>, BlockError> {
        let len = len.min(size.saturating_sub(offset) as usize);
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).map_err(io)?;
        Ok(buf)
    };
    let head = read(0, PROBE_LEN)?;
    match classify(&head) {
        Content::Blank => {}
        other => return Ok(other),
    }
    // The rest of the first 8 MiB in full: where a filesystem's first group metadata lies.
    if read(PROBE_LEN as u64, 7 * PROBE_LEN)?
        .iter()
        .any(|&b| b != 0)
    {
        return Ok(Content::Other);
    }
    let mut offsets = vec![size.saturating_sub(PROBE_LEN as u64)];
    offsets.extend(FIXED_SAMPLES.iter().copied().filter(|&o| o < size));
    offsets.extend((1..SAMPLES).map(|i| size / SAMPLES * i));
    for offset in offsets {
        let len = if offset + PROBE_LEN as u64 >= size {
            PROBE_LEN
        } else {
            SAMPLE_LEN
        };
        if read(offset, len)?.iter().any(|&b| b != 0) {
            return Ok(Content::Other);
        }
    }
    if describe(device).is_some() {
        return Ok(Content::Other);
    }
    Ok(Content::Blank)
}

/// What `blkid -p` says is on the device ("ext4", "xfs", …), for the refusal message.
pub fn describe(device: &Path) -> Option<String> {
    let out = super::command("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(device)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!t.is_empty()).then_some(t)
}

/// Makes the filesystem. Lazy init leaves inode tables and journal to be zeroed in the
/// background after mount, so a multi-TB disk is usable in seconds.
pub fn mkfs(device: &Path, fs: FsType) -> Result<(), BlockError> {
    let (tool, package, args): (&'static str, &'static str, &[&str]) = match fs {
        FsType::Ext4 => (
            "mkfs.ext4",
            "e2fsprogs",
            &[
                "-q",
                "-F",
                "-L",
                "secretfs",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
            ],
        ),
        FsType::Xfs => ("mkfs.xfs", "xfsprogs", &["-q", "-f", "-L", "secretfs"]),
    };
    let out = super::command(tool)
        .args(args)
        .arg(device)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BlockError::ToolMissing { tool, package },
            _ => BlockError::Io {
                what: format!("cannot run {tool}"),
                source: e,
            },
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BlockError::Tool {
            tool,
            what: format!("making {} on {}", fs.name(), device.display()),
            status: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Writes zeros over the whole opened volume, so the disk holds ciphertext everywhere (the
/// classic recipe's `dd if=/dev/zero`); progress goes to stderr.
pub fn wipe(device: &Path) -> Result<(), BlockError> {
    let io = |source| BlockError::Io {
        what: format!("cannot wipe {}", device.display()),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(io)?;
    let total = device_size(&f).map_err(io)?;
    let chunk = vec![0u8; 4 << 20];
    let mut done: u64 = 0;
    let mut shown = u64::MAX;
    let mut err = std::io::stderr();
    while done < total {
        let n = chunk.len().min((total - done) as usize);
        f.write_all(&chunk[..n]).map_err(io)?;
        done += n as u64;
        let pct = done * 100 / total.max(1);
        if pct != shown {
            shown = pct;
            let bar = "#".repeat((pct / 5) as usize);
            let _ = write!(
                err,
                "\rwiping {}: [{bar:<20}] {pct:3}% ({} of {} MiB)",
                device.display(),
                done >> 20,
                total >> 20
            );
        }
    }
    f.sync_all().map_err(io)?;
    let _ = writeln!(err);
    Ok(())
}

/// LUKS2 keeps both header copies and the keyslot area in the first 16 MiB (the default data
/// offset); zeroing them makes the device blank again, as `classify` sees it.
pub const LUKS2_HEADER_AREA: u64 = 16 << 20;

/// Zeroes the LUKS2 header area (undo of a format that did not complete).
pub fn erase_header(device: &Path) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(device)?;
    let len = device_size(&f)?.min(LUKS2_HEADER_AREA);
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = zeros.len().min((len - done) as usize);
        f.write_all(&zeros[..n])?;
        done += n as u64;
    }
    f.sync_all()
}

/// Size of a block device or file, through lseek (works for both without an ioctl).
pub fn device_size(f: &std::fs::File) -> std::io::Result<u64> {
    use std::io::Seek;
    let mut f = f;
    let size = f.seek(std::io::SeekFrom::End(0))?;
    f.seek(std::io::SeekFrom::Start(0))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_blank_only_if_zero_at_both_ends_and_throughout() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let make = |data_at: Option<u64>| {
            let f = std::fs::File::create(&img).unwrap();
            f.set_len(512 << 20).unwrap();
            if let Some(o) = data_at {
                f.write_all_at(b"data that must survive", o).unwrap();
            }
        };
        make(None);
        assert_eq!(probe(&img).unwrap(), Content::Blank);
        // After the first MiB, at the end, in the middle, at btrfs's mirror superblock.
        for at in [
            (1 << 20) + 7,
            (512 << 20) - 100,
            (300 << 20) + 100,
            (64 << 20) + 0x40,
        ] {
            make(Some(at));
            assert_eq!(probe(&img).unwrap(), Content::Other, "data at {at} missed");
        }
    }

    #[test]
    fn classifies_heads() {
        assert_eq!(classify(&[0u8; 4096]), Content::Blank);
        assert_eq!(classify(&[]), Content::Blank);
        let mut luks = vec![0u8; 4096];
        luks[..6].copy_from_slice(b"LUKS\xba\xbe");
        assert_eq!(classify(&luks), Content::Luks);
        let mut ext4 = vec![0u8; 4096];
        ext4[1024 + 56] = 0x53;
        ext4[1024 + 57] = 0xEF;
        assert_eq!(classify(&ext4), Content::Other);
    }
}
