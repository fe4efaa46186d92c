//! The inode table: one O_PATH descriptor per inode the kernel knows, keyed by a stable inode
//! number taken from the backing store, with lookup counts honoured on forget.

use super::files::Content;
use super::sys;
use dashmap::DashMap;
use fuser::{FileAttr, FileType, INodeNo};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ROOT: u64 = 1;

pub struct Inode {
    pub ino: u64,
    pub kind: FileType,
    /// O_PATH|O_NOFOLLOW descriptor of the backing object; all operations go through it.
    pub fd: OwnedFd,
    lookups: AtomicU64,
    /// Directories only: the random id that binds child names to this directory.
    pub dir_id: OnceLock<[u8; 16]>,
    /// Regular files only: header, cipher, size and block locks, created at first use.
    pub content: parking_lot::Mutex<Option<Arc<Content>>>,
    /// Regular files only: the backing file as the last release of a handle left it.
    pub stamp: parking_lot::Mutex<Option<Stamp>>,
}

/// What changes whenever a backing file's contents do: its times and size.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stamp([i64; 5]);

impl Stamp {
    pub fn of(st: &libc::stat) -> Self {
        Self([
            st.st_mtime,
            st.st_mtime_nsec,
            st.st_ctime,
            st.st_ctime_nsec,
            st.st_size,
        ])
    }
}

impl Inode {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Maps backing inode numbers to FUSE numbers: the backing root becomes 1, and whatever backing
/// object had number 1 takes the root's old number, so the mapping stays a bijection.
#[derive(Clone, Copy)]
pub struct InoMap {
    pub root_backing: u64,
}

impl InoMap {
    pub fn to_fuse(&self, backing: u64) -> u64 {
        if backing == self.root_backing {
            ROOT
        } else if backing == ROOT {
            self.root_backing
        } else {
            backing
        }
    }
}

pub struct InodeTable {
    map: DashMap<u64, Arc<Inode>>,
    pub inos: InoMap,
}

pub fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

pub fn dirent_type(d_type: u8) -> FileType {
    match d_type {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

/// Converts a backing stat to the attributes the kernel sees; `size` is the plaintext size.
pub fn attr_from_stat(ino: u64, st: &libc::stat, size: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: crate::crypto::content::BLOCK_SIZE as u32,
        flags: 0,
    }
}

impl InodeTable {
    pub fn new(root_fd: OwnedFd, root_dir_id: [u8; 16]) -> std::io::Result<Self> {
        let st = sys::fstat(root_fd.as_raw_fd())?;
        let root = Inode {
            ino: ROOT,
            kind: FileType::Directory,
            fd: root_fd,
            // The kernel never forgets the root.
            lookups: AtomicU64::new(1),
            dir_id: OnceLock::from(root_dir_id),
            content: parking_lot::Mutex::new(None),
            stamp: parking_lot::Mutex::new(None),
        };
        let map = DashMap::new();
        map.insert(ROOT, Arc::new(root));
        Ok(Self {
            map,
            inos: InoMap {
                root_backing: st.st_ino,
            },
        })
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        self.map.get(&ino).map(|i| Arc::clone(&i))
    }

    /// Registers one more kernel reference to the object behind `fd` (a fresh O_PATH fd) and
    /// returns its inode; an inode already known keeps its descriptor and `fd` is dropped.
    pub fn remember(&self, fd: OwnedFd, st: &libc::stat) -> Arc<Inode> {
        let ino = self.inos.to_fuse(st.st_ino);
        let entry = self.map.entry(ino).or_insert_with(|| {
            Arc::new(Inode {
                ino,
                kind: file_type(st.st_mode),
                fd,
                lookups: AtomicU64::new(0),
                dir_id: OnceLock::new(),
                content: parking_lot::Mutex::new(None),
                stamp: parking_lot::Mutex::new(None),
            })
        });
        entry.lookups.fetch_add(1, Ordering::SeqCst);
        Arc::clone(&entry)
    }

    /// One more kernel reference to an inode already in the table, if it is (then the
    /// caller needs no descriptor of its own). Under the map's entry lock, like `forget`, so
    /// an inode cannot be dropped between the check and the count.
    pub fn remember_known(&self, st: &libc::stat) -> Option<Arc<Inode>> {
        match self.map.entry(self.inos.to_fuse(st.st_ino)) {
            dashmap::Entry::Occupied(e) if e.get().kind == file_type(st.st_mode) => {
                e.get().lookups.fetch_add(1, Ordering::SeqCst);
                Some(Arc::clone(e.get()))
            }
            _ => None,
        }
    }

    /// Drops `n` kernel references; the inode (and its descriptor) goes when none remain.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        self.map.remove_if(&ino, |_, inode| {
            let before = inode.lookups.fetch_sub(
                n.min(inode.lookups.load(Ordering::SeqCst)),
                Ordering::SeqCst,
            );
            before <= n
        });
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ino_map_is_a_bijection_around_the_root() {
        let m = InoMap { root_backing: 500 };
        assert_eq!(m.to_fuse(500), ROOT);
        assert_eq!(m.to_fuse(1), 500);
        assert_eq!(m.to_fuse(77), 77);
    }

    #[test]
    fn lookups_are_counted_and_forget_frees_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let open = |p: &std::path::Path| {
            sys::openat(
                libc::AT_FDCWD,
                &sys::cstring(p.as_os_str().as_encoded_bytes()).unwrap(),
                libc::O_PATH,
                0,
            )
            .unwrap()
        };
        let table = InodeTable::new(open(dir.path()), [0; 16]).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let st = sys::fstat(open(&file).as_raw_fd()).unwrap();
        let a = table.remember(open(&file), &st);
        let b = table.remember(open(&file), &st);
        assert_eq!(a.ino, b.ino);
        table.forget(a.ino, 1);
        assert!(table.get(a.ino).is_some());
        table.forget(a.ino, 1);
        assert!(table.get(a.ino).is_none());
        table.forget(ROOT, 10);
        assert!(table.get(ROOT).is_some());
    }
}
