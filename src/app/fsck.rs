//! Offline verification of a backing store: walks every directory id, name, long-name side file,
//! symlink target, xattr and content block with the filesystem's keys, and repairs what is safe.

use super::{Error, ErrorKind, KeyChoice, Result};
use crate::crypto::content::{
    block_count, block_offset, plain_size, FileCipher, FileHeader, HEADER_LEN, STORED_BLOCK_SIZE,
};
use crate::crypto::keys::KeyRing;
use crate::crypto::names::{NameCipher, DIR_ID_LEN};
use crate::fs::acl::{is_acl, Acl};
use crate::fs::xattr::sealed_name;
use crate::store::confined;
use crate::store::layout::{
    classify, read_dir_id, read_long_name, write_dir_id, BackingEntry, CONFIG_FILE, DIRID_FILE,
    LONG_NAME_PREFIX, LONG_NAME_SIDE_SUFFIX, TEMP_PREFIX,
};
use crate::sys;
use serde::Serialize;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Blocks read per pread while verifying a file.
const CHUNK_BLOCKS: u64 = 256;
/// Bad blocks reported per file before the rest are summarised.
const MAX_BLOCK_PROBLEMS: usize = 8;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// Plaintext path where it could be recovered, else the plaintext parent plus the backing name.
    pub path: String,
    pub backing: PathBuf,
    pub kind: &'static str,
    pub detail: String,
    pub repaired: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub directories: u64,
    pub files: u64,
    pub symlinks: u64,
    pub blocks: u64,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn unrepaired(&self) -> usize {
        self.problems.iter().filter(|p| !p.repaired).count()
    }
}

pub struct Checker<'a> {
    keys: &'a KeyRing,
    names: NameCipher,
    repair: bool,
    report: Report,
    progress: &'a mut dyn FnMut(&Report),
}

/// Which store to check, with which key, and whether to repair what is safe to repair.
#[derive(Debug, Clone)]
pub struct FsckRequest {
    pub backing: PathBuf,
    pub key: KeyChoice,
    pub repair: bool,
}

/// Unlocks the store (as a mount would: the pinned or named key, proven by the config MAC) and
/// checks it; `progress` sees the counts as they grow. A repair needs the store unmounted.
pub fn run(req: &FsckRequest, progress: &mut dyn FnMut(&Report)) -> Result<Report> {
    let backing = super::existing_dir(&req.backing, "backing directory", ErrorKind::Backing)?;
    if req.repair {
        if let Some(m) = crate::mounts::serving(&backing) {
            return Err(Error::mount(format!(
                "{} is mounted at {}; --repair needs it unmounted",
                backing.display(),
                m.mountpoint.display()
            ))
            .hint(format!("secretfs umount {}", m.mountpoint.display())));
        }
    }
    crate::daemon::forbid_core_dumps();
    let (config, opened) = super::keys::unlock(&backing, &req.key)?;
    let root_id = config.root_dir_id()?;
    let slot_problems = super::keys::verify_other_slots(&req.key, &config, &opened);
    let mut report = check(&backing, root_id, &opened.keys, req.repair, progress);
    for (slot, detail) in slot_problems {
        report.problems.push(Problem {
            path: format!("/ (key slot {slot})"),
            backing: backing.join(CONFIG_FILE),
            kind: "key-slot",
            detail,
            repaired: false,
        });
    }
    Ok(report)
}

/// Checks the whole tree under `backing` (whose root directory id comes from the config).
pub fn check(
    backing: &Path,
    root_dir_id: [u8; DIR_ID_LEN],
    keys: &KeyRing,
    repair: bool,
    progress: &mut dyn FnMut(&Report),
) -> Report {
    let mut checker = Checker {
        keys,
        names: NameCipher::new(keys.names_key(), keys.xattr_key()),
        repair,
        report: Report::default(),
        progress,
    };
    match confined::open_root(backing) {
        Ok(root) => checker.directory(&root, backing, "", root_dir_id, true),
        Err(e) => checker.problem(
            "/".into(),
            backing,
            "unreadable-directory",
            e.to_string(),
            false,
        ),
    }
    checker.report
}

fn join(parent: &str, name: &str) -> String {
    format!("{parent}/{name}")
}

impl Checker<'_> {
    fn problem(
        &mut self,
        path: String,
        backing: &Path,
        kind: &'static str,
        detail: impl Into<String>,
        repaired: bool,
    ) {
        self.report.problems.push(Problem {
            path,
            backing: backing.to_path_buf(),
            kind,
            detail: detail.into(),
            repaired,
        });
    }

    fn directory(
        &mut self,
        fd: &OwnedFd,
        dir: &Path,
        plain: &str,
        dir_id: [u8; DIR_ID_LEN],
        is_root: bool,
    ) {
        self.report.directories += 1;
        let entries: Vec<String> = match sys::read_dir(fd.as_raw_fd()) {
            Ok(list) => list
                .into_iter()
                .filter(|(n, _, _)| n != b"." && n != b"..")
                .map(|(n, _, _)| String::from_utf8_lossy(&n).into_owned())
                .collect(),
            Err(e) => {
                return self.problem(
                    plain_or_root(plain),
                    dir,
                    "unreadable-directory",
                    e.to_string(),
                    false,
                )
            }
        };
        for name in &entries {
            let path = dir.join(name);
            let Ok(cname) = CString::new(name.as_bytes()) else {
                continue;
            };
            let full = match classify(name) {
                BackingEntry::Internal => {
                    self.internal(fd, dir, plain, name, &entries, is_root);
                    continue;
                }
                BackingEntry::Short(s) => s.as_bytes().to_vec(),
                BackingEntry::Long(hashed) => match read_long_name(fd.as_raw_fd(), hashed) {
                    Ok(full) => full,
                    Err(e) => {
                        let kind = if confined::is_hostile(&e) {
                            "long-name-mismatch"
                        } else {
                            "long-name-missing"
                        };
                        self.problem(
                            join(plain, name),
                            &path,
                            kind,
                            format!("side file: {e}"),
                            false,
                        );
                        continue;
                    }
                },
            };
            let child = match self.names.decrypt_name(&dir_id, &full) {
                Ok(n) => join(plain, &String::from_utf8_lossy(&n)),
                Err(e) => {
                    self.problem(join(plain, name), &path, "name", e.to_string(), false);
                    continue;
                }
            };
            self.entry(fd, &cname, &path, &child);
        }
        (self.progress)(&self.report);
    }

    fn internal(
        &mut self,
        fd: &OwnedFd,
        dir: &Path,
        plain: &str,
        name: &str,
        entries: &[String],
        is_root: bool,
    ) {
        let path = dir.join(name);
        let Ok(cname) = CString::new(name.as_bytes()) else {
            return;
        };
        if name == DIRID_FILE || (is_root && name == CONFIG_FILE) {
            return;
        }
        if name.starts_with(TEMP_PREFIX) {
            let removed = self.repair && remove_at(fd.as_raw_fd(), &cname).is_ok();
            return self.problem(
                join(plain, name),
                &path,
                "leftover-temporary",
                "left by an interrupted mkdir, name or config write",
                removed,
            );
        }
        if let Some(entry) = name
            .strip_prefix(LONG_NAME_PREFIX)
            .and_then(|_| name.strip_suffix(LONG_NAME_SIDE_SUFFIX))
        {
            if !entries.iter().any(|e| e == entry) {
                let removed = self.repair && sys::unlinkat(fd.as_raw_fd(), &cname, 0).is_ok();
                return self.problem(
                    join(plain, name),
                    &path,
                    "orphaned-long-name",
                    "side file of a name that no longer exists",
                    removed,
                );
            }
            return;
        }
        self.problem(
            join(plain, name),
            &path,
            "unknown-internal-file",
            "not created by secretfs",
            false,
        );
    }

    /// One entry of directory `dir`, reached by name from its descriptor, never by path.
    fn entry(&mut self, dir: &OwnedFd, name: &CString, path: &Path, plain: &str) {
        let st = match sys::fstatat(dir.as_raw_fd(), name) {
            Ok(st) => st,
            Err(e) => return self.problem(plain.into(), path, "unreadable", e.to_string(), false),
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => match confined::open_dir(dir.as_raw_fd(), name) {
                Ok(child) => {
                    self.xattrs(&child, path, plain, false);
                    match self.child_dir_id(&child, path, plain) {
                        Some(id) => self.directory(&child, path, plain, id, false),
                        None => self.report.directories += 1,
                    }
                }
                Err(e) => self.problem(plain.into(), path, "unreadable", e.to_string(), false),
            },
            libc::S_IFLNK => {
                self.report.symlinks += 1;
                let fd = sys::openat(dir.as_raw_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0);
                if let Ok(fd) = &fd {
                    self.xattrs(fd, path, plain, true);
                }
                let target = fd.and_then(|fd| crate::store::symlinks::read(fd.as_raw_fd()));
                let result = target
                    .map_err(|e| e.to_string())
                    .and_then(|t| self.names.decrypt_symlink(&t).map_err(|e| e.to_string()));
                if let Err(e) = result {
                    self.problem(plain.into(), path, "symlink-target", e, false);
                }
            }
            libc::S_IFREG => {
                self.report.files += 1;
                match confined::open_regular(dir.as_raw_fd(), name) {
                    Ok(fd) => {
                        self.xattrs(&fd, path, plain, false);
                        self.content(std::fs::File::from(fd), path, plain, st.st_size as u64);
                    }
                    Err(e) => self.problem(plain.into(), path, "unreadable", e.to_string(), false),
                }
                if self.report.files % 256 == 0 {
                    (self.progress)(&self.report);
                }
            }
            _ => {
                // FIFOs, sockets and device nodes: only their xattrs, through an O_PATH
                // descriptor that never opens the object itself.
                if let Ok(fd) =
                    sys::openat(dir.as_raw_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)
                {
                    self.xattrs(&fd, path, plain, true);
                }
            }
        }
    }

    fn child_dir_id(
        &mut self,
        dir: &OwnedFd,
        path: &Path,
        plain: &str,
    ) -> Option<[u8; DIR_ID_LEN]> {
        let id_path = path.join(DIRID_FILE);
        match read_dir_id(dir.as_raw_fd()) {
            Ok(id) => Some(id),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                self.problem(plain.into(), &id_path, "directory-id", e.to_string(), false);
                None
            }
            Err(_) => {
                let has_names = sys::read_dir(dir.as_raw_fd())
                    .map(|list| {
                        list.iter().any(|(n, _, _)| {
                            n != b"."
                                && n != b".."
                                && !matches!(
                                    classify(&String::from_utf8_lossy(n)),
                                    BackingEntry::Internal
                                )
                        })
                    })
                    .unwrap_or(true);
                if has_names {
                    self.problem(
                        plain.into(),
                        &id_path,
                        "directory-id",
                        "missing; the names inside cannot be decrypted",
                        false,
                    );
                    return None;
                }
                // An empty directory's id protects nothing yet: a new one is safe.
                let mut id = [0u8; DIR_ID_LEN];
                crate::crypto::keys::fill_random(&mut id);
                let repaired = self.repair && write_dir_id(dir.as_raw_fd(), &id).is_ok();
                self.problem(
                    plain.into(),
                    &id_path,
                    "directory-id",
                    "missing in an empty directory",
                    repaired,
                );
                repaired.then_some(id)
            }
        }
    }

    fn content(&mut self, file: std::fs::File, path: &Path, plain: &str, stored: u64) {
        let size = match plain_size(stored) {
            Ok(0) => return,
            Ok(s) => s,
            Err(e) => return self.problem(plain.into(), path, "size", e.to_string(), false),
        };
        let mut raw = [0u8; HEADER_LEN];
        let header = match file
            .read_exact_at(&mut raw, 0)
            .map_err(|e| e.to_string())
            .and_then(|_| FileHeader::decode(&raw).map_err(|e| e.to_string()))
        {
            Ok(h) => h,
            Err(e) => return self.problem(plain.into(), path, "header", e, false),
        };
        let cipher = self
            .keys
            .with_file_key(&header.file_id, |key| FileCipher::new(key, &header));
        let (count, last) = (block_count(size), block_count(size) - 1);
        let mut bad = Vec::new();
        let mut out = vec![0u8; crate::crypto::content::BLOCK_SIZE];
        let mut first = 0;
        while first < count {
            let end = (first + CHUNK_BLOCKS).min(count);
            let from = block_offset(first);
            let mut buf = vec![0u8; (block_offset(end).min(stored) - from) as usize];
            if let Err(e) = file.read_exact_at(&mut buf, from) {
                return self.problem(plain.into(), path, "unreadable", e.to_string(), false);
            }
            for (i, block) in buf.chunks(STORED_BLOCK_SIZE).enumerate() {
                let b = first + i as u64;
                if cipher.open_block(b, b == last, block, &mut out).is_err() {
                    bad.push(b);
                }
            }
            self.report.blocks += end - first;
            first = end;
        }
        if !bad.is_empty() {
            let shown: Vec<String> = bad
                .iter()
                .take(MAX_BLOCK_PROBLEMS)
                .map(u64::to_string)
                .collect();
            let more = bad.len().saturating_sub(MAX_BLOCK_PROBLEMS);
            let detail = format!(
                "{} of {count} blocks fail authentication: {}{}",
                bad.len(),
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
            self.problem(plain.into(), path, "blocks", detail, false);
        }
    }

    /// `special`: a symlink, FIFO, socket or device, whose attributes are kept under
    /// `trusted.*` (FORMAT.md §8).
    fn xattrs(&mut self, fd: &OwnedFd, path: &Path, plain: &str, special: bool) {
        for backing in list_xattrs(fd) {
            let Some(stored) = sealed_name(&backing, special) else {
                continue;
            };
            let name = String::from_utf8_lossy(&stored).into_owned();
            let Ok(plain_name) = self.names.decrypt_xattr_name(&stored) else {
                self.problem(plain.into(), path, "xattr-name", name, false);
                continue;
            };
            let value =
                get_xattr(fd, &backing).and_then(|v| self.names.open_xattr_value(&name, &v).ok());
            match value {
                None => self.problem(plain.into(), path, "xattr-value", name, false),
                // Authentic, but not an ACL the daemon could serve (it would refuse with EIO).
                Some(v) if is_acl(&plain_name) && Acl::parse(&v).is_none() => {
                    self.problem(plain.into(), path, "acl", name, false)
                }
                Some(_) => {}
            }
        }
    }
}

fn plain_or_root(plain: &str) -> String {
    if plain.is_empty() {
        "/".into()
    } else {
        plain.into()
    }
}

/// Removes a leftover temporary: a file, or a directory with the files a crashed mkdir left.
fn remove_at(dir: i32, name: &CString) -> std::io::Result<()> {
    if sys::unlinkat(dir, name, 0).is_ok() {
        return Ok(());
    }
    let child = confined::open_dir(dir, name)?;
    for (n, _, _) in sys::read_dir(child.as_raw_fd())? {
        if n != b"." && n != b".." {
            sys::unlinkat(child.as_raw_fd(), &sys::cstring(&n)?, 0)?;
        }
    }
    sys::unlinkat(dir, name, libc::AT_REMOVEDIR)
}

/// The xattr names of the object behind `fd` (an O_PATH descriptor works too).
fn list_xattrs(fd: &OwnedFd) -> Vec<Vec<u8>> {
    let Ok(buf) = sys::listxattr(fd.as_raw_fd()) else {
        return Vec::new();
    };
    buf.split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn get_xattr(fd: &OwnedFd, name: &[u8]) -> Option<Vec<u8>> {
    let name = CString::new(name).ok()?;
    let mut buf = vec![0u8; 65536 + 64];
    let n = sys::getxattr(fd.as_raw_fd(), &name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}
