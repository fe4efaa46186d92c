//! The reference-model test of the core: random operation sequences run on `SecretFs` over a
//! temporary backing directory (no FUSE, no root) and on an in-memory model, compared after each.
//!
//! Each step's outcome (success or errno) must match the model's, and after each step the
//! whole tree (names, kinds, sizes, contents, link counts, symlink targets, user xattrs) must
//! read back as the model holds it, including after a remount on the same keys.

use super::{Caller, FsOptions, SecretFs, SetAttr};
use crate::crypto::content::BLOCK_SIZE;
use crate::crypto::keys::{KeyRing, MasterKey};
use crate::fs::inodes::ROOT;
use crate::fs::xattr::XattrReply;
use crate::fs::Error;
use fuser::{Errno, FileType};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;

/// Few names, so operations collide; the last one is long enough to be stored as a long name
/// (a hashed backing name and a side file, FORMAT.md §6).
const NAMES: [&str; 4] = [
    "a",
    "b",
    "c",
    "long-nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
];
const XATTRS: [&[u8]; 2] = [b"user.one", b"user.two"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        dir: usize,
        name: usize,
    },
    Mkdir {
        dir: usize,
        name: usize,
    },
    Symlink {
        dir: usize,
        name: usize,
        target: u8,
    },
    Write {
        file: usize,
        offset: u64,
        len: usize,
        byte: u8,
    },
    Truncate {
        file: usize,
        size: u64,
    },
    Rename {
        from: usize,
        dir: usize,
        name: usize,
        flags: u32,
    },
    Link {
        file: usize,
        dir: usize,
        name: usize,
    },
    Unlink {
        entry: usize,
    },
    Rmdir {
        dir: usize,
    },
    SetXattr {
        file: usize,
        name: usize,
        value: u8,
    },
    Fsync {
        file: usize,
    },
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NAMES.len();
    let pick = 0usize..64;
    // Offsets and lengths straddle block boundaries and leave holes past the end.
    let offset = prop_oneof![
        0u64..64,
        (1u64..4).prop_map(|b| b * BLOCK_SIZE as u64 - 3),
        0u64..(4 * BLOCK_SIZE as u64)
    ];
    let flags = prop_oneof![
        Just(0),
        Just(libc::RENAME_NOREPLACE),
        Just(libc::RENAME_EXCHANGE)
    ];
    prop_oneof![
        4 => (pick.clone(), n.clone()).prop_map(|(dir, name)| Op::Create { dir, name }),
        2 => (pick.clone(), n.clone()).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        1 => (pick.clone(), n.clone(), any::<u8>())
            .prop_map(|(dir, name, target)| Op::Symlink { dir, name, target }),
        6 => (pick.clone(), offset, 0usize..(2 * BLOCK_SIZE + 7), any::<u8>())
            .prop_map(|(file, offset, len, byte)| Op::Write { file, offset, len, byte }),
        2 => (pick.clone(), 0u64..(3 * BLOCK_SIZE as u64 + 5))
            .prop_map(|(file, size)| Op::Truncate { file, size }),
        3 => (pick.clone(), pick.clone(), n.clone(), flags)
            .prop_map(|(from, dir, name, flags)| Op::Rename { from, dir, name, flags }),
        1 => (pick.clone(), pick.clone(), n.clone())
            .prop_map(|(file, dir, name)| Op::Link { file, dir, name }),
        2 => pick.clone().prop_map(|entry| Op::Unlink { entry }),
        1 => pick.clone().prop_map(|dir| Op::Rmdir { dir }),
        1 => (pick.clone(), 0..XATTRS.len(), any::<u8>())
            .prop_map(|(file, name, value)| Op::SetXattr { file, name, value }),
        1 => pick.clone().prop_map(|file| Op::Fsync { file }),
        1 => Just(Op::Remount),
    ]
}

/// An inode of the model: hard links share one.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    File(usize),
    Dir,
    Symlink(Vec<u8>),
}

#[derive(Debug, Default, Clone)]
struct FileData {
    bytes: Vec<u8>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Paths are component lists; the root is the empty list.
type Path = Vec<String>;

#[derive(Debug, Default)]
struct Model {
    entries: BTreeMap<Path, Node>,
    files: Vec<FileData>,
}

impl Model {
    fn dirs(&self) -> Vec<Path> {
        let mut dirs = vec![Vec::new()];
        dirs.extend(
            self.entries
                .iter()
                .filter(|(_, n)| **n == Node::Dir)
                .map(|(p, _)| p.clone()),
        );
        dirs
    }

    fn files(&self) -> Vec<(Path, usize)> {
        self.entries
            .iter()
            .filter_map(|(p, n)| match n {
                Node::File(id) => Some((p.clone(), *id)),
                _ => None,
            })
            .collect()
    }

    fn children(&self, dir: &Path) -> Vec<(String, Node)> {
        self.entries
            .iter()
            .filter(|(p, _)| p.len() == dir.len() + 1 && p.starts_with(dir))
            .map(|(p, n)| (p[dir.len()].clone(), n.clone()))
            .collect()
    }

    fn links(&self, id: usize) -> usize {
        self.entries
            .values()
            .filter(|n| **n == Node::File(id))
            .count()
    }

    fn create(&mut self, path: Path, node: Node) -> Result<(), Errno> {
        if self.entries.contains_key(&path) {
            return Err(Errno::EEXIST);
        }
        self.entries.insert(path, node);
        Ok(())
    }

    /// Moves `from` (and, for a directory, everything under it) to `to`.
    fn move_tree(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(Path, Node)> = self
            .entries
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        for (p, _) in &moved {
            self.entries.remove(p);
        }
        for (p, n) in moved {
            let mut q = to.clone();
            q.extend_from_slice(&p[from.len()..]);
            self.entries.insert(q, n);
        }
    }

    fn rename(&mut self, from: &Path, to: &Path, flags: u32) -> Result<(), Errno> {
        let src = self.entries.get(from).cloned().ok_or(Errno::ENOENT)?;
        let dst = self.entries.get(to).cloned();
        vfs_rename_checks(from, to, dst.is_some(), flags)?;
        if from == to {
            return Ok(());
        }
        if flags == libc::RENAME_EXCHANGE {
            let parked = vec!["\0parked".to_string()];
            self.move_tree(from, &parked);
            self.move_tree(to, from);
            self.move_tree(&parked, to);
            return Ok(());
        }
        if let Some(dst) = dst {
            // Two names of one file: rename does nothing.
            if matches!((&src, &dst), (Node::File(a), Node::File(b)) if a == b) {
                return Ok(());
            }
            match (&src, &dst) {
                (Node::Dir, Node::Dir) if !self.children(to).is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                (Node::Dir, Node::File(_) | Node::Symlink(_)) => return Err(Errno::ENOTDIR),
                (Node::File(_) | Node::Symlink(_), Node::Dir) => return Err(Errno::EISDIR),
                _ => {}
            }
            self.entries.remove(to);
        }
        self.move_tree(from, to);
        Ok(())
    }
}

/// What an operation's indices name, resolved on the model before the step, so that the core
/// and the model act on the same objects (an index wraps round the current choices).
struct Picks {
    dirs: Vec<Path>,
    files: Vec<(Path, usize)>,
    entries: Vec<Path>,
    non_dirs: Vec<Path>,
}

fn nth<T: Clone>(v: &[T], i: usize) -> Option<T> {
    v.get(i % v.len().max(1)).cloned()
}

impl Picks {
    fn of(model: &Model) -> Self {
        let non_dirs = model
            .entries
            .iter()
            .filter(|(_, n)| **n != Node::Dir)
            .map(|(p, _)| p.clone())
            .collect();
        Picks {
            dirs: model.dirs(),
            files: model.files(),
            entries: model.entries.keys().cloned().collect(),
            non_dirs,
        }
    }

    /// `NAMES[name]` inside directory `dir` (the root is always one).
    fn child(&self, dir: usize, name: usize) -> Path {
        let mut p = nth(&self.dirs, dir).unwrap_or_default();
        p.push(NAMES[name].to_string());
        p
    }

    fn file(&self, i: usize) -> Option<(Path, usize)> {
        nth(&self.files, i)
    }

    fn entry(&self, i: usize) -> Option<Path> {
        nth(&self.entries, i)
    }

    fn non_dir(&self, i: usize) -> Option<Path> {
        nth(&self.non_dirs, i)
    }

    /// A directory other than the root.
    fn subdir(&self, i: usize) -> Option<Path> {
        nth(&self.dirs[1..], i)
    }
}

/// The core under test with what a remount needs to build it again.
struct Core {
    _dir: tempfile::TempDir,
    backing: std::path::PathBuf,
    master: MasterKey,
    fs_id: [u8; 16],
    root_id: [u8; 16],
    fs: SecretFs,
    caller: Caller,
}

impl Core {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let backing = dir.path().join("backing");
        std::fs::create_dir(&backing).expect("backing dir");
        let master = MasterKey::random();
        let (fs_id, root_id) = ([3; 16], [4; 16]);
        let fs = Self::open(&backing, &master, &fs_id, &root_id);
        // SAFETY: getuid/getgid have no preconditions.
        let caller = Caller {
            uid: unsafe { libc::geteuid() },
            gid: unsafe { libc::getegid() },
            pid: std::process::id(),
        };
        Core {
            _dir: dir,
            backing,
            master,
            fs_id,
            root_id,
            fs,
            caller,
        }
    }

    fn open(
        backing: &std::path::Path,
        master: &MasterKey,
        fs_id: &[u8; 16],
        root: &[u8; 16],
    ) -> SecretFs {
        let keys = KeyRing::new(master, fs_id);
        SecretFs::new(backing, *root, keys, FsOptions::default()).expect("open the backing store")
    }

    fn remount(&mut self) {
        self.fs = Self::open(&self.backing, &self.master, &self.fs_id, &self.root_id);
    }

    fn ino(&self, path: &Path) -> Result<u64, Error> {
        let mut ino = ROOT;
        for name in path {
            let parent = self.fs.inode(ino)?;
            ino = self.fs.lookup_child(&parent, OsStr::new(name))?.0.ino;
        }
        Ok(ino)
    }

    fn parent_and_name<'a>(&self, path: &'a Path) -> Result<(u64, &'a OsStr), Error> {
        let (name, parent) = path.split_last().ok_or(Error::new(Errno::EINVAL))?;
        Ok((self.ino(&parent.to_vec())?, OsStr::new(name)))
    }

    fn with_open<T>(
        &self,
        path: &Path,
        f: impl FnOnce(fuser::FileHandle) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let inode = self.fs.inode(self.ino(path)?)?;
        let (fh, _) = self.fs.open_file(&inode, libc::O_RDWR, None)?;
        let result = f(fh);
        self.fs.release_file(fh)?;
        result
    }

    fn read_all(&self, path: &Path) -> Result<Vec<u8>, Error> {
        self.with_open(path, |fh| {
            let mut out = Vec::new();
            loop {
                let mut got = 0;
                self.fs.read_file(fh, out.len() as u64, 64 * 1024, |d| {
                    got = d.len();
                    out.extend_from_slice(d);
                })?;
                if got == 0 {
                    return Ok(out);
                }
            }
        })
    }

    fn apply(&mut self, op: &Op, model: &Model) -> Result<(), Error> {
        let at = Picks::of(model);
        let c = self.caller;
        match *op {
            Op::Create { dir, name } => {
                let path = at.child(dir, name);
                let (p, n) = self.parent_and_name(&path)?;
                let (_, fh, _) = self.fs.create_file(&c, p, n, 0o644, 0o022, libc::O_RDWR)?;
                self.fs.release_file(fh)
            }
            Op::Mkdir { dir, name } => {
                let path = at.child(dir, name);
                let (p, n) = self.parent_and_name(&path)?;
                self.fs.make_directory(&c, p, n, 0o755, 0o022).map(drop)
            }
            Op::Symlink { dir, name, target } => {
                let path = at.child(dir, name);
                let (p, n) = self.parent_and_name(&path)?;
                self.fs
                    .make_symlink(&c, p, n, &symlink_target(target))
                    .map(drop)
            }
            Op::Write {
                file,
                offset,
                len,
                byte,
            } => {
                let Some(path) = at.file(file).map(|(p, _)| p) else {
                    return Ok(());
                };
                let data = vec![byte; len];
                self.with_open(&path, |fh| self.fs.write_file(&c, fh, offset, &data, false))
            }
            Op::Truncate { file, size } => {
                let Some(path) = at.file(file).map(|(p, _)| p) else {
                    return Ok(());
                };
                let change = SetAttr {
                    mode: None,
                    uid: None,
                    gid: None,
                    size: Some(size),
                    atime: None,
                    mtime: None,
                    fh: None,
                    kill_privs: None,
                };
                self.fs.change_attrs(&c, self.ino(&path)?, change).map(drop)
            }
            Op::Rename {
                from,
                dir,
                name,
                flags,
            } => {
                let Some(src) = at.entry(from) else {
                    return Ok(());
                };
                let dst = at.child(dir, name);
                vfs_rename_checks(&src, &dst, self.ino(&dst).is_ok(), flags)?;
                let (sp, sn) = self.parent_and_name(&src)?;
                let (dp, dn) = self.parent_and_name(&dst)?;
                let (sp, dp) = (self.fs.inode(sp)?, self.fs.inode(dp)?);
                self.fs.rename_entry(&sp, sn, &dp, dn, flags)
            }
            Op::Link { file, dir, name } => {
                let Some(src) = at.file(file).map(|(p, _)| p) else {
                    return Ok(());
                };
                let dst = at.child(dir, name);
                let (dp, dn) = self.parent_and_name(&dst)?;
                self.fs.make_link(self.ino(&src)?, dp, dn).map(drop)
            }
            Op::Unlink { entry } => {
                let Some(path) = at.non_dir(entry) else {
                    return Ok(());
                };
                let (p, n) = self.parent_and_name(&path)?;
                let p = self.fs.inode(p)?;
                self.fs.remove_file(&p, n)
            }
            Op::Rmdir { dir } => {
                let Some(path) = at.subdir(dir) else {
                    return Ok(());
                };
                let (p, n) = self.parent_and_name(&path)?;
                let p = self.fs.inode(p)?;
                self.fs.remove_dir(&p, n)
            }
            Op::SetXattr { file, name, value } => {
                let Some(path) = at.file(file).map(|(p, _)| p) else {
                    return Ok(());
                };
                self.fs
                    .set_xattr_as(&c, self.ino(&path)?, XATTRS[name], &[value; 3], 0)
            }
            Op::Fsync { file } => {
                let Some(path) = at.file(file).map(|(p, _)| p) else {
                    return Ok(());
                };
                self.with_open(&path, |fh| self.fs.sync_file(fh, false))
            }
            Op::Remount => {
                self.remount();
                Ok(())
            }
        }
    }
}

/// What the kernel's VFS decides before it sends a rename at all (do_renameat2), in its order:
/// the flags' conditions, then a directory moved into its own subtree. The FUSE core is never
/// asked these, so the harness answers them as the kernel would.
fn vfs_rename_checks(from: &Path, to: &Path, to_exists: bool, flags: u32) -> Result<(), Errno> {
    if flags == libc::RENAME_NOREPLACE && to_exists {
        return Err(Errno::EEXIST);
    }
    if flags == libc::RENAME_EXCHANGE && !to_exists {
        return Err(Errno::ENOENT);
    }
    let under = |a: &Path, b: &Path| b.len() > a.len() && b.starts_with(a);
    if under(from, to) {
        return Err(Errno::EINVAL);
    }
    if under(to, from) {
        return Err(if flags == libc::RENAME_EXCHANGE {
            Errno::EINVAL
        } else {
            Errno::ENOTEMPTY
        });
    }
    Ok(())
}

fn symlink_target(seed: u8) -> Vec<u8> {
    format!("../target-{seed}/{}", "x".repeat(seed as usize)).into_bytes()
}

/// The model's outcome of `op`, computed on the same picks as `Core::apply`.
fn expect(op: &Op, model: &mut Model) -> Result<(), Errno> {
    let at = Picks::of(model);
    match *op {
        Op::Create { dir, name } => {
            let path = at.child(dir, name);
            if model.entries.contains_key(&path) {
                return Err(Errno::EEXIST);
            }
            model.files.push(FileData::default());
            let id = model.files.len() - 1;
            model.create(path, Node::File(id))
        }
        Op::Mkdir { dir, name } => model.create(at.child(dir, name), Node::Dir),
        Op::Symlink { dir, name, target } => {
            model.create(at.child(dir, name), Node::Symlink(symlink_target(target)))
        }
        Op::Write {
            file: f,
            offset,
            len,
            byte,
        } => {
            let Some((_, id)) = at.file(f) else {
                return Ok(());
            };
            if len == 0 {
                return Ok(());
            }
            let bytes = &mut model.files[id].bytes;
            let end = offset as usize + len;
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[offset as usize..offset as usize + len].fill(byte);
            Ok(())
        }
        Op::Truncate { file: f, size } => {
            let Some((_, id)) = at.file(f) else {
                return Ok(());
            };
            model.files[id].bytes.resize(size as usize, 0);
            Ok(())
        }
        Op::Rename {
            from,
            dir,
            name,
            flags,
        } => {
            let Some(src) = at.entry(from) else {
                return Ok(());
            };
            let dst = at.child(dir, name);
            model.rename(&src, &dst, flags)
        }
        Op::Link { file: f, dir, name } => {
            let Some((_, id)) = at.file(f) else {
                return Ok(());
            };
            model.create(at.child(dir, name), Node::File(id))
        }
        Op::Unlink { entry } => {
            if let Some(path) = at.non_dir(entry) {
                model.entries.remove(&path);
            }
            Ok(())
        }
        Op::Rmdir { dir } => {
            let Some(path) = at.subdir(dir) else {
                return Ok(());
            };
            if !model.children(&path).is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            model.entries.remove(&path);
            Ok(())
        }
        Op::SetXattr {
            file: f,
            name,
            value,
        } => {
            let Some((_, id)) = at.file(f) else {
                return Ok(());
            };
            model.files[id]
                .xattrs
                .insert(XATTRS[name].to_vec(), vec![value; 3]);
            Ok(())
        }
        Op::Fsync { .. } | Op::Remount => Ok(()),
    }
}

/// The whole tree read through the core equals the model.
fn compare(core: &Core, model: &Model, dir: &Path) -> Result<(), String> {
    let inode = core
        .fs
        .inode(core.ino(dir).map_err(|e| format!("{dir:?}: {e:?}"))?)
        .map_err(|e| format!("{e:?}"))?;
    let listing = core
        .fs
        .list(&inode)
        .map_err(|e| format!("list {dir:?}: {e:?}"))?;
    if let Some(e) = listing.damaged.first() {
        return Err(format!("list {dir:?}: a name reads as damaged: {e}"));
    }
    let listed = listing.entries;
    let mut got: Vec<(String, FileType)> = listed
        .iter()
        .map(|l| (l.name.to_string_lossy().into_owned(), l.kind))
        .filter(|(n, _)| n != "." && n != "..")
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let want: Vec<(String, FileType)> = model
        .children(dir)
        .into_iter()
        .map(|(n, node)| {
            let kind = match node {
                Node::File(_) => FileType::RegularFile,
                Node::Dir => FileType::Directory,
                Node::Symlink(_) => FileType::Symlink,
            };
            (n, kind)
        })
        .collect();
    if got != want {
        return Err(format!("{dir:?} lists {got:?}, the model {want:?}"));
    }
    for (name, node) in model.children(dir) {
        let mut path = dir.clone();
        path.push(name);
        let err = |e: Error| format!("{path:?}: {e:?}");
        match node {
            Node::Dir => compare(core, model, &path)?,
            Node::Symlink(target) => {
                let read = core
                    .fs
                    .read_symlink(core.ino(&path).map_err(err)?)
                    .map_err(err)?;
                if read != target {
                    return Err(format!("{path:?} points to {read:?}, not {target:?}"));
                }
            }
            Node::File(id) => {
                let data = &model.files[id];
                let bytes = core.read_all(&path).map_err(err)?;
                if bytes != data.bytes {
                    let at = bytes.iter().zip(&data.bytes).position(|(a, b)| a != b);
                    return Err(format!(
                        "{path:?}: {} bytes read, model {}; first difference at {at:?}",
                        bytes.len(),
                        data.bytes.len()
                    ));
                }
                let inode = core.fs.inode(core.ino(&path).map_err(err)?).map_err(err)?;
                let attr = core.fs.attr_of(&inode).map_err(err)?;
                if attr.size != data.bytes.len() as u64 || attr.nlink as usize != model.links(id) {
                    return Err(format!(
                        "{path:?}: size {} nlink {}, model {} and {}",
                        attr.size,
                        attr.nlink,
                        data.bytes.len(),
                        model.links(id)
                    ));
                }
                for name in XATTRS {
                    let got = match core.fs.get_xattr(&inode, name, 4096) {
                        Ok(XattrReply::Data(v)) => Some(v),
                        Ok(XattrReply::Size(_)) => return Err("size reply for a sized ask".into()),
                        Err(e) if e.errno() == Errno::ENODATA => None,
                        Err(e) => return Err(err(e)),
                    };
                    if got.as_ref() != data.xattrs.get(name) {
                        return Err(format!("{path:?} xattr {name:?}: {got:?}"));
                    }
                }
            }
        }
    }
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut core = Core::new();
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        // The core acts on the picks as they were before the model applies the step.
        let got = core.apply(op, &model);
        if let Err(e) = &got {
            // Nothing here tampers with the store: no step may see tampered data.
            prop_assert!(
                e.integrity_failure().is_none(),
                "step {} {:?}: {}",
                i,
                op,
                e
            );
        }
        let got = got.map_err(|e| e.errno());
        let want = expect(op, &mut model);
        prop_assert_eq!(got, want, "step {} {:?}", i, op);
        if let Err(e) = compare(&core, &model, &Vec::new()) {
            return Err(TestCaseError::fail(format!("after step {i} {op:?}: {e}")));
        }
    }
    core.remount();
    compare(&core, &model, &Vec::new())
        .map_err(|e| TestCaseError::fail(format!("after the final remount: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn the_core_matches_a_reference_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops)?;
    }
}
