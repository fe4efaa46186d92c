//! Reading the kernel's mount table (/proc/self/mountinfo): is a path a secretfs mount, and
//! which backing store does it serve. Used by status, umount and the mount-time busy check.

use std::path::{Path, PathBuf};

pub const FUSE_TYPE: &str = "fuse.secretfs";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// mountinfo escapes space, tab, newline and backslash as \ooo octal (fstab writes them so too).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next().unwrap_or("");
            Some(MountEntry {
                mountpoint: PathBuf::from(unescape(mountpoint)),
                fstype: fstype.to_string(),
                source: unescape(source),
            })
        })
        .collect()
}

pub fn all() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// The topmost mount at exactly `path`, if any.
pub fn at(path: &Path) -> Option<MountEntry> {
    all().into_iter().rev().find(|m| m.mountpoint == path)
}

/// A secretfs file-mode mount whose backing store is `backing`.
pub fn serving(backing: &Path) -> Option<MountEntry> {
    all()
        .into_iter()
        .rev()
        .find(|m| m.fstype == FUSE_TYPE && Path::new(&m.source) == backing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fuse_lines_with_escapes() {
        let text = "36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - fuse.secretfs /var/lib/s rw,user_id=0\n\
                    37 35 98:0 / /proc rw - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, PathBuf::from("/mnt/with space"));
        assert_eq!(m[0].fstype, FUSE_TYPE);
        assert_eq!(m[0].source, "/var/lib/s");
        assert!(parse_mountinfo("garbage\n\n").is_empty());
    }
}
