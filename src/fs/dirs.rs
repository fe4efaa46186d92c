//! Directories and names: per-directory ids (created crash-safely), name encryption on every
//! path component, long-name side files, readdir snapshots, create/mkdir/link/rename/unlink.

use super::inodes::{attr_from_stat, dirent_type, Inode, PathFd, ROOT};
use super::{Caller, SecretFs};
use crate::crypto::content::plain_size;
use crate::crypto::names::DIR_ID_LEN;
use crate::fs::Error;
use crate::store::confined;
use crate::store::layout::{
    classify, long_name_side_file, read_dir_id, read_long_name, write_dir_id, BackingEntry,
    StoredName, TEMP_PREFIX,
};
use crate::sys;
use fuser::{Errno, FileAttr, FileType};
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

/// A directory listing: the entries the kernel will see, and the damaged names left out of it,
/// which the boundary audits (a listing does not fail over one bad name).
pub struct Listing {
    pub entries: Vec<Listed>,
    pub damaged: Vec<Error>,
}

/// One entry of a directory listing, as the kernel will see it.
pub struct Listed {
    pub name: OsString,
    pub ino: u64,
    pub kind: FileType,
    /// Backing name, to look the entry up again for readdirplus.
    pub backing: Option<CString>,
}

pub(super) fn io(e: std::io::Error) -> Error {
    Error::from(e)
}

/// A new object's owner: the caller, with the group inherited from a setgid parent.
pub(super) struct Owner {
    pub uid: u32,
    pub gid: Option<u32>,
}

impl SecretFs {
    pub(super) fn inode(&self, ino: u64) -> Result<Arc<Inode>, Error> {
        self.inodes.get(ino).ok_or(Error::new(Errno::ESTALE))
    }

    /// The id of directory `dir`, read once from its `secretfs.dirid` file.
    pub(super) fn dir_id(&self, dir: &Inode) -> Result<[u8; DIR_ID_LEN], Error> {
        if let Some(id) = dir.dir_id.get() {
            return Ok(*id);
        }
        if dir.kind != FileType::Directory {
            return Err(Errno::ENOTDIR.into());
        }
        let id = match read_dir_id(dir.fd()?.raw()) {
            Ok(id) => id,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.repair_missing_dir_id(dir)?,
            Err(e) if confined::is_hostile(&e) => {
                return Err(Error::integrity("dir-id", dir.ino, e.to_string()));
            }
            Err(e) => return Err(io(e)),
        };
        Ok(*dir.dir_id.get_or_init(|| id))
    }

    /// A directory without an id can only be trusted when no name depends on the id.
    fn repair_missing_dir_id(&self, dir: &Inode) -> Result<[u8; DIR_ID_LEN], Error> {
        let entries = sys::read_dir(dir.fd()?.raw()).map_err(io)?;
        let named = entries.iter().any(|(n, _, _)| {
            let n = String::from_utf8_lossy(n);
            n != "." && n != ".." && !matches!(classify(&n), BackingEntry::Internal)
        });
        if named {
            return Err(Error::integrity(
                "dir-id",
                dir.ino,
                "directory id file is missing",
            ));
        }
        let mut id = [0u8; DIR_ID_LEN];
        crate::crypto::keys::fill_random(&mut id);
        write_dir_id(dir.fd()?.raw(), &id).map_err(io)?;
        tracing::warn!(
            ino = dir.ino,
            "recreated the missing id of an empty directory"
        );
        Ok(id)
    }

    pub(super) fn stored_name(&self, parent: &Inode, name: &OsStr) -> Result<StoredName, Error> {
        let bytes = sys::os(name);
        if bytes.len() > 255 {
            return Err(Errno::ENAMETOOLONG.into());
        }
        Ok(StoredName::of(
            self.names.encrypt_name(&self.dir_id(parent)?, bytes),
        ))
    }

    pub(super) fn attr_of(&self, inode: &Inode) -> Result<FileAttr, Error> {
        let st = sys::fstat(inode.fd()?.raw()).map_err(io)?;
        Ok(attr_from_stat(
            inode.ino,
            &st,
            self.plain_size_of(inode, &st),
        ))
    }

    fn plain_size_of(&self, inode: &Inode, st: &libc::stat) -> u64 {
        match inode.kind {
            FileType::RegularFile => match inode.content.lock().as_ref() {
                Some(content) => content.size(),
                // Damage is reported when the file is read; stat must still work so it can be removed.
                None => plain_size(st.st_size as u64).unwrap_or(0),
            },
            FileType::Symlink => match inode.fd() {
                Ok(fd) => symlink_plain_len(crate::store::symlinks::encoded_len(
                    fd.raw(),
                    st.st_size as u64,
                )),
                // The descriptor stays closed, so the readlink that follows meets (and
                // reports) the same failure.
                Err(_) => 0,
            },
            _ => st.st_size as u64,
        }
    }

    /// Looks `name` up in `parent` and counts one kernel reference to the result.
    pub(super) fn lookup_child(
        &self,
        parent: &Inode,
        name: &OsStr,
    ) -> Result<(Arc<Inode>, FileAttr), Error> {
        let stored = self.stored_name(parent, name)?;
        self.lookup_backing(
            parent,
            &sys::cstring(stored.backing_name().as_bytes()).map_err(io)?,
        )
    }

    pub(super) fn lookup_backing(
        &self,
        parent: &Inode,
        backing: &CString,
    ) -> Result<(Arc<Inode>, FileAttr), Error> {
        // An inode the kernel already knows (readdirplus, rm, repeated lookups) needs only a
        // stat; a new one gets its own O_PATH descriptor, stat'ed through that descriptor. A
        // known inode's number cannot be reused meanwhile: objects this mount unlinks are kept
        // alive until forgotten (`keep_alive`), and a reuse behind our back is caught by file
        // handle when the inode's descriptor is reopened or replaced.
        let st = sys::fstatat(parent.fd()?.raw(), backing).map_err(io)?;
        if let Some(inode) = self.inodes.remember_known(&st) {
            let attr = attr_from_stat(inode.ino, &st, self.plain_size_of(&inode, &st));
            return Ok((inode, attr));
        }
        self.lookup_open(parent, backing)
    }

    /// As `lookup_backing`, for an object that is most likely new (just created).
    pub(super) fn lookup_open(
        &self,
        parent: &Inode,
        backing: &CString,
    ) -> Result<(Arc<Inode>, FileAttr), Error> {
        let fd = sys::openat(
            parent.fd()?.raw(),
            backing,
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        )
        .map_err(io)?;
        let st = sys::fstat(fd.as_raw_fd()).map_err(io)?;
        let inode = self.inodes.remember(fd, &st)?;
        let attr = attr_from_stat(inode.ino, &st, self.plain_size_of(&inode, &st));
        Ok((inode, attr))
    }

    /// Decrypted listing of a directory, internal files hidden, damaged names set aside.
    pub(super) fn list(&self, dir: &Inode) -> Result<Listing, Error> {
        let dir_id = self.dir_id(dir)?;
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for (raw, backing_ino, d_type) in sys::read_dir(dir.fd()?.raw()).map_err(io)? {
            let kind = dirent_type(d_type);
            if raw == b"." || raw == b".." {
                let ino = if raw == b"." || dir.ino == ROOT {
                    dir.ino
                } else {
                    self.inodes.inos.to_fuse(backing_ino)
                };
                out.push(Listed {
                    name: OsString::from_vec(raw),
                    ino,
                    kind: FileType::Directory,
                    backing: None,
                });
                continue;
            }
            let Ok(text) = std::str::from_utf8(&raw) else {
                continue;
            };
            let full = match classify(text) {
                BackingEntry::Internal => continue,
                BackingEntry::Short(s) => s.as_bytes().to_vec(),
                BackingEntry::Long(hashed) => match read_long_name(dir.fd()?.raw(), hashed) {
                    Ok(full) => full,
                    Err(e) => {
                        let detail = format!("{hashed}: side file: {e}");
                        damaged.push(Error::integrity("name", dir.ino, detail));
                        continue;
                    }
                },
            };
            match self.names.decrypt_name(&dir_id, &full) {
                Ok(name) => out.push(Listed {
                    name: OsString::from_vec(name),
                    ino: self.inodes.inos.to_fuse(backing_ino),
                    kind,
                    backing: sys::cstring(&raw).ok(),
                }),
                Err(e) => {
                    damaged.push(Error::integrity("name", dir.ino, format!("{text}: {e}")));
                }
            }
        }
        Ok(Listing {
            entries: out,
            damaged,
        })
    }

    /// Writes the side file of a long name before the entry itself appears.
    pub(super) fn prepare_name(&self, parent: &Inode, stored: &StoredName) -> Result<(), Error> {
        if let StoredName::Long { hashed, full } = stored {
            // Written beside and renamed over whatever holds the name: a planted symlink is
            // replaced, never followed, and an existing side file is never truncated in place.
            let side = sys::cstring(long_name_side_file(hashed).as_bytes()).map_err(io)?;
            confined::put_file(
                parent.fd()?.raw(),
                &side,
                full.as_bytes(),
                0o600,
                TEMP_PREFIX,
                confined::Existing::Replace,
            )
            .map_err(io)?;
        }
        Ok(())
    }

    /// Removes a long name's side file once no entry uses the name.
    pub(super) fn forget_name(&self, parent: &Inode, stored: &StoredName) {
        if let StoredName::Long { hashed, .. } = stored {
            let Ok(entry) = sys::cstring(hashed.as_bytes()) else {
                return;
            };
            let Ok(dir) = parent.fd() else {
                return;
            };
            if sys::fstatat(dir.raw(), &entry).is_err() {
                if let Ok(side) = sys::cstring(long_name_side_file(hashed).as_bytes()) {
                    let _ = sys::unlinkat(dir.raw(), &side, 0);
                }
            }
        }
    }

    pub(super) fn owner_for(&self, caller: &Caller, parent: &Inode) -> Result<Owner, Error> {
        let st = sys::fstat(parent.fd()?.raw()).map_err(io)?;
        let setgid = st.st_mode & libc::S_ISGID != 0;
        Ok(Owner {
            uid: caller.uid,
            gid: (!setgid).then_some(caller.gid),
        })
    }

    /// Creates an object through `make(parent_fd, backing_name)`, gives it to its owner and
    /// returns it looked up. Cleans up the long-name side file if creation fails.
    pub(super) fn create_entry(
        &self,
        caller: &Caller,
        parent: &Inode,
        name: &OsStr,
        make: impl FnOnce(i32, &CString) -> std::io::Result<()>,
    ) -> Result<(Arc<Inode>, FileAttr), Error> {
        let stored = self.stored_name(parent, name)?;
        let backing = sys::cstring(stored.backing_name().as_bytes()).map_err(io)?;
        let owner = self.owner_for(caller, parent)?;
        self.prepare_name(parent, &stored)?;
        if let Err(e) = make(parent.fd()?.raw(), &backing) {
            self.forget_name(parent, &stored);
            return Err(io(e));
        }
        let (inode, attr) = self.lookup_open(parent, &backing)?;
        // The daemon created it as itself: a caller with the same ids (root, usually) needs
        // no chown, and its attributes are already the ones just looked up.
        if attr.uid == owner.uid && owner.gid.is_none_or(|g| g == attr.gid) {
            return Ok((inode, attr));
        }
        let mode = sys::fstat(inode.fd()?.raw()).map_err(io)?.st_mode;
        sys::chown_fd(inode.fd()?.raw(), Some(owner.uid), owner.gid).map_err(io)?;
        // chown drops setuid/setgid bits; the creator asked for them, so put them back.
        if mode & (libc::S_ISUID | libc::S_ISGID) != 0 && inode.kind != FileType::Symlink {
            sys::chmod_fd(inode.fd()?.raw(), mode & 0o7777).map_err(io)?;
        }
        let attr = self.attr_of(&inode)?;
        Ok((inode, attr))
    }

    /// mkdir: built under a temporary name with its id inside, then renamed into place, so a
    /// crash can never leave a visible directory without an id.
    pub(super) fn make_dir(
        &self,
        caller: &Caller,
        parent: &Inode,
        name: &OsStr,
        mode: u32,
    ) -> Result<(Arc<Inode>, FileAttr), Error> {
        self.create_entry(caller, parent, name, |pfd, backing| {
            let tmp = crate::store::temp_name(TEMP_PREFIX)?;
            sys::mkdirat(pfd, &tmp, mode & 0o7777)?;
            let result = (|| {
                let dir = confined::open_dir(pfd, &tmp)?;
                let mut id = [0u8; DIR_ID_LEN];
                crate::crypto::keys::fill_random(&mut id);
                // write_dir_id fsyncs the id and then this directory: nothing left to sync.
                write_dir_id(dir.as_raw_fd(), &id)?;
                sys::renameat2(pfd, &tmp, pfd, backing, libc::RENAME_NOREPLACE)
            })();
            if result.is_err() {
                let _ = remove_tree_at(pfd, &tmp);
            }
            result
        })
    }

    /// `keep_alive` for the entry `backing` of the directory `dir`, if it is there.
    fn keep_alive_at(&self, dir: i32, backing: &CString) -> Result<Option<PathFd>, Error> {
        match sys::fstatat(dir, backing) {
            Ok(st) => self.inodes.keep_alive(&st),
            Err(_) => Ok(None),
        }
    }

    pub(super) fn remove_dir(&self, parent: &Inode, name: &OsStr) -> Result<(), Error> {
        let stored = self.stored_name(parent, name)?;
        let backing = sys::cstring(stored.backing_name().as_bytes()).map_err(io)?;
        let dir = parent.fd()?;
        let _alive = self.keep_alive_at(dir.raw(), &backing)?;
        let victim = EmptiedDir::empty(dir.raw(), &backing)?;
        if let Err(e) = sys::unlinkat(dir.raw(), &backing, libc::AT_REMOVEDIR) {
            victim.restore();
            return Err(io(e));
        }
        self.forget_name(parent, &stored);
        Ok(())
    }

    pub(super) fn remove_file(&self, parent: &Inode, name: &OsStr) -> Result<(), Error> {
        let stored = self.stored_name(parent, name)?;
        let backing = sys::cstring(stored.backing_name().as_bytes()).map_err(io)?;
        let dir = parent.fd()?;
        let _alive = self.keep_alive_at(dir.raw(), &backing)?;
        sys::unlinkat(dir.raw(), &backing, 0).map_err(io)?;
        self.forget_name(parent, &stored);
        Ok(())
    }

    pub(super) fn rename_entry(
        &self,
        parent: &Inode,
        name: &OsStr,
        new_parent: &Inode,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Error> {
        // RENAME_WHITEOUT (overlayfs upper directories) leaves a 0/0 character device under
        // the source name: the backing rename makes it under the encrypted name, which is
        // exactly that. EXCHANGE combines with nothing.
        let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT;
        if flags & !known != 0
            || (flags & libc::RENAME_EXCHANGE != 0 && flags != libc::RENAME_EXCHANGE)
        {
            return Err(Errno::EINVAL.into());
        }
        let replacing = flags & (libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) == 0;
        let src = self.stored_name(parent, name)?;
        let dst = self.stored_name(new_parent, new_name)?;
        let src_c = sys::cstring(src.backing_name().as_bytes()).map_err(io)?;
        let dst_c = sys::cstring(dst.backing_name().as_bytes()).map_err(io)?;
        // A directory renamed onto an empty one replaces it (POSIX): the target holds only its
        // id file, which would make the backing rename fail with ENOTEMPTY.
        let new_dir = new_parent.fd()?;
        let target = sys::fstatat(new_dir.raw(), &dst_c)
            .ok()
            .filter(|_| replacing);
        let is_dir = |st: &libc::stat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let replaced = match &target {
            Some(st) => {
                // The kernel's VFS answers these before asking us; the core answers them too,
                // so that it is right on its own: two names of one object make rename do
                // nothing (emptying the "target" would strip a directory of its id), and only
                // a directory may replace one (a file gets EISDIR from the backing rename).
                let source = sys::fstatat(parent.fd()?.raw(), &src_c).map_err(io)?;
                if (source.st_dev, source.st_ino) == (st.st_dev, st.st_ino) {
                    return Ok(());
                }
                if is_dir(st) && is_dir(&source) {
                    Some(EmptiedDir::empty(new_dir.raw(), &dst_c)?)
                } else {
                    None
                }
            }
            None => None,
        };
        let _alive = match target.map(|st| self.inodes.keep_alive(&st)).transpose() {
            Ok(alive) => alive.flatten(),
            Err(e) => {
                if let Some(victim) = replaced {
                    victim.restore();
                }
                return Err(e);
            }
        };
        let renamed = self.prepare_name(new_parent, &dst).and_then(|()| {
            sys::renameat2(parent.fd()?.raw(), &src_c, new_dir.raw(), &dst_c, flags).map_err(|e| {
                self.forget_name(new_parent, &dst);
                io(e)
            })
        });
        if let Err(e) = renamed {
            if let Some(victim) = replaced {
                victim.restore();
            }
            return Err(e);
        }
        // The source name is gone, unless swapped or left as a whiteout.
        if flags & (libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT) == 0 {
            self.forget_name(parent, &src);
        }
        Ok(())
    }
}

/// A directory about to be removed or replaced, emptied of its internal files (id, leftovers of
/// a crashed mkdir), with its id kept so that a failed removal can put it back.
struct EmptiedDir {
    fd: OwnedFd,
    saved_id: Option<[u8; DIR_ID_LEN]>,
}

impl EmptiedDir {
    /// ENOTEMPTY if `name` holds any entry but internal files. The kernel holds the victim's
    /// lock (rmdir and rename both), so no entry can appear while we empty it.
    fn empty(parent: i32, name: &CString) -> Result<Self, Error> {
        let fd = sys::openat(
            parent,
            name,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY,
            0,
        )
        .map_err(io)?;
        let mut internal = Vec::new();
        for (raw, _, _) in sys::read_dir(fd.as_raw_fd()).map_err(io)? {
            if raw == b"." || raw == b".." {
                continue;
            }
            match std::str::from_utf8(&raw).map(classify) {
                Ok(BackingEntry::Internal) => internal.push(raw),
                _ => return Err(Errno::ENOTEMPTY.into()),
            }
        }
        let saved_id = read_dir_id(fd.as_raw_fd()).ok();
        for raw in &internal {
            let name = sys::cstring(raw).map_err(io)?;
            // A crashed mkdir can leave a temporary directory behind: it goes too.
            if sys::unlinkat(fd.as_raw_fd(), &name, 0).is_err() {
                let _ = remove_tree_at(fd.as_raw_fd(), &name);
            }
        }
        Ok(Self { fd, saved_id })
    }

    /// The removal failed: the directory gets its id back.
    fn restore(self) {
        if let Some(id) = &self.saved_id {
            let _ = write_dir_id(self.fd.as_raw_fd(), id);
        }
    }
}

/// Removes a half-built temporary directory (its id file and itself).
fn remove_tree_at(parent: i32, name: &CString) -> std::io::Result<()> {
    if let Ok(dir) = sys::openat(
        parent,
        name,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    ) {
        if let Ok(entries) = sys::read_dir(dir.as_raw_fd()) {
            for (raw, _, _) in entries {
                if raw != b"." && raw != b".." {
                    let _ = sys::unlinkat(dir.as_raw_fd(), &sys::cstring(&raw)?, 0);
                }
            }
        }
    }
    sys::unlinkat(parent, name, libc::AT_REMOVEDIR)
}

/// Plaintext length of a symlink target from the length of its base64url AES-SIV encoding.
pub(super) fn symlink_plain_len(encoded_len: u64) -> u64 {
    (encoded_len * 3 / 4).saturating_sub(16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::{KeyRing, MasterKey};
    use crate::crypto::names::NameCipher;
    use crate::fs::FsOptions;
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::Mutex;

    /// Every path under `dir`, to show that a refused operation changed nothing in the store.
    fn tree(dir: &Path) -> BTreeSet<std::path::PathBuf> {
        let mut out = BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(tree(&path));
            }
            out.insert(path);
        }
        out
    }

    /// What the daemon's log receives while `f` runs.
    fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
        (out, text)
    }

    /// unlink, rmdir and a rename onto an existing name first keep the victim alive through its
    /// descriptor; when the sweep had closed that descriptor and its file handle now reopens
    /// another object, the name no longer names what the kernel knows as that inode: each is
    /// refused with EIO and an `inode` audit event, and nothing in the store is removed or
    /// renamed. A swept victim whose handle reopens to itself is removed as usual.
    #[test]
    fn unlink_rmdir_rename_refuse_a_swept_victim_that_reopens_to_another_object() {
        if !crate::testing::root_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("backing");
        std::fs::create_dir(&backing).unwrap();
        // Outside the store, on the same filesystem: what the victims' handles will reopen.
        let decoy = dir.path().join("decoy");
        std::fs::write(&decoy, b"decoy").unwrap();
        let decoy_fd = std::fs::File::open(&decoy).unwrap();
        let keys = KeyRing::new(&MasterKey::random(), &[3; 16]);
        let opts = FsOptions {
            max_fds: 8,
            ..FsOptions::default()
        };
        let fs = SecretFs::new(&backing, [4; 16], keys, opts).unwrap();
        let caller = Caller {
            uid: 0,
            gid: 0,
            pid: std::process::id(),
        };
        let file = |name: &str| {
            let mode = libc::S_IFREG | 0o644;
            fs.make_node(&caller, ROOT, OsStr::new(name), mode, 0, 0)
                .unwrap()
                .0
        };
        let victims = [
            ("unlink", file("victim")),
            ("rmdir", {
                let made = fs.make_directory(&caller, ROOT, OsStr::new("vdir"), 0o755, 0);
                made.unwrap().0
            }),
            ("rename", file("target")),
        ];
        file("source");
        let control = file("control");
        // Enough newer inodes that the sweep closes every victim's descriptor.
        for i in 0..100 {
            file(&format!("f{i}"));
        }
        for (op, inode) in &victims {
            assert!(
                inode.aim_swept_handle_at(decoy_fd.as_raw_fd()).unwrap(),
                "{op}: the victim's descriptor was not swept"
            );
        }
        let root = fs.inode(ROOT).unwrap();
        let before = tree(&backing);
        for (op, inode) in &victims {
            let result = match *op {
                "unlink" => fs.remove_file(&root, OsStr::new("victim")),
                "rmdir" => fs.remove_dir(&root, OsStr::new("vdir")),
                _ => fs.rename_entry(&root, OsStr::new("source"), &root, OsStr::new("target"), 0),
            };
            let err = result.expect_err(op);
            let failure = err.integrity_failure().map(|i| (i.what, i.ino));
            assert_eq!(failure, Some(("inode", inode.ino)), "{op}: {err}");
            // The adapter replies with `report`, which audits.
            let (errno, log) = logged(|| err.report());
            assert_eq!(errno, Errno::EIO, "{op}");
            let event = log
                .lines()
                .find(|l| l.contains("event=\"integrity_failure\""))
                .unwrap_or_else(|| panic!("{op}: no audit event in {log:?}"));
            assert!(
                event.contains(crate::audit::TARGET)
                    && event.contains("what=\"inode\"")
                    && event.contains(&format!("ino={}", inode.ino)),
                "{op}: {event}"
            );
            assert_eq!(tree(&backing), before, "{op} changed the store");
        }
        // The control: swept too, reopening to itself, and removed.
        assert!(control.is_swept(), "the control was not swept");
        fs.remove_file(&root, OsStr::new("control")).unwrap();
        assert_eq!(tree(&backing).len(), before.len() - 1);
    }

    #[test]
    fn symlink_length_formula_matches_the_codec() {
        let names = NameCipher::new(
            &crate::crypto::keys::SecretBytes::from_slice(&[1; 64]).unwrap(),
            &crate::crypto::keys::SecretBytes::from_slice(&[2; 32]).unwrap(),
        );
        for len in [1usize, 2, 3, 10, 100, 1000, 3000] {
            let enc = names.encrypt_symlink(&vec![b'a'; len]);
            assert_eq!(symlink_plain_len(enc.len() as u64), len as u64);
        }
    }
}
