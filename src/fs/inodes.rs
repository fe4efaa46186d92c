//! The inode table: one entry per inode the kernel knows, keyed by a stable inode number taken
//! from the backing store, with lookup counts honoured on forget and a bounded set of descriptors.

use super::files::Content;
use crate::fs::Error;
use crate::sys;
use dashmap::DashMap;
use fuser::{FileAttr, FileType, INodeNo};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ROOT: u64 = 1;

/// How many backing descriptors the inode table keeps open unless the mount says otherwise:
/// well under the soft limit of 1024 that shells and systemd services get.
pub const DEFAULT_FD_BOUND: usize = 512;

pub struct Inode {
    pub ino: u64,
    pub kind: FileType,
    /// The O_PATH|O_NOFOLLOW descriptor all operations go through, or the backing object's file
    /// handle while the descriptor is closed to stay within the bound.
    slot: parking_lot::Mutex<Slot>,
    /// Set at every use, cleared by the eviction sweep: an inode used since the last sweep
    /// gets a second chance (the CLOCK approximation of least recently used).
    used: AtomicBool,
    /// Open file and directory handles: an inode with any keeps its descriptor, because an
    /// unlinked object lives only as long as someone holds it open.
    opens: AtomicU32,
    /// Unlinked (or about to be) through this mount: closing the last descriptor could free
    /// it, so it is not swept while it has no link left.
    kept: AtomicBool,
    /// On another filesystem than the store root (a mount inside the store), where its file
    /// handle would not resolve: never swept.
    foreign: bool,
    pool: Arc<FdPool>,
    me: Weak<Inode>,
    lookups: AtomicU64,
    /// Directories only: the random id that binds child names to this directory.
    pub dir_id: OnceLock<[u8; 16]>,
    /// Regular files only: header, cipher, size and block locks, created at first use.
    pub content: parking_lot::Mutex<Option<Arc<Content>>>,
    /// Regular files only: the backing file as the last release of a handle left it.
    pub stamp: parking_lot::Mutex<Option<Stamp>>,
    /// Regular files only: whether the backing file may hold a `security.capability`, which
    /// every write, truncate and fallocate must remove (CAPS_UNKNOWN until first checked).
    pub caps: AtomicU8,
    /// Which ACLs the object is known not to have, and a change counter (`acl.rs`).
    pub acls: AtomicU32,
}

pub const CAPS_UNKNOWN: u8 = 0;
pub const CAPS_NONE: u8 = 1;
pub const CAPS_MAYBE: u8 = 2;

enum Slot {
    Open(Arc<OwnedFd>),
    /// Closed by the sweep; reopened by handle at the next use.
    Closed(sys::FileHandle),
}

/// An inode's backing descriptor, held open for as long as the caller keeps this.
pub struct PathFd(Arc<OwnedFd>);

impl PathFd {
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
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
    /// The backing descriptor, reopened by file handle if the sweep closed it. The handle
    /// names the very object this inode was opened on (never a path that may since name
    /// another), and the reopened object must still have this inode's number and type.
    pub fn fd(&self) -> Result<PathFd, Error> {
        // Read first: a store on every call would bounce this cache line between the cores
        // that serve one busy inode, while the bit is nearly always set already.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        let mut slot = self.slot.lock();
        let handle = match &*slot {
            Slot::Open(fd) => return Ok(PathFd(Arc::clone(fd))),
            Slot::Closed(handle) => handle,
        };
        let fd = Arc::new(self.pool.reopen(handle, self.ino, self.kind)?);
        *slot = Slot::Open(Arc::clone(&fd));
        drop(slot);
        self.pool.opened(self.me.clone());
        Ok(PathFd(fd))
    }

    /// `fd`, just opened on the object this inode's number names, becomes its descriptor if the
    /// sweep had closed it (true: one more is open). The object must be the one the inode was
    /// opened on: the store may have freed it behind our back and reused its number.
    fn adopt(&self, fd: OwnedFd, st: &libc::stat) -> Result<bool, Error> {
        let mut slot = self.slot.lock();
        let reused = match &*slot {
            _ if file_type(st.st_mode) != self.kind => true,
            Slot::Open(_) => return Ok(false),
            Slot::Closed(handle) => sys::handle_of(fd.as_raw_fd())? != *handle,
        };
        if reused {
            return Err(Error::integrity(
                "inode",
                self.ino,
                "inode number reused by another object behind the filesystem's back",
            ));
        }
        *slot = Slot::Open(Arc::new(fd));
        Ok(true)
    }

    /// Drops the content state (cipher, size, locks: most of an inode's memory) once no handle
    /// or request holds it, to be loaded again from the header at the next I/O. Under the
    /// slot's lock, which every user takes to get it, so two states never coexist.
    pub fn release_content(&self) {
        let mut slot = self.content.lock();
        if slot.as_ref().is_some_and(|c| Arc::strong_count(c) == 1) {
            *slot = None;
        }
    }

    /// Counts an open handle (kept until `closed`), which holds the descriptor open.
    pub fn opened(&self) {
        self.opens.fetch_add(1, Ordering::SeqCst);
    }

    pub fn closed(&self) {
        self.opens.fetch_sub(1, Ordering::SeqCst);
    }

    /// Closes the descriptor if nothing needs it now; keeps the file handle to reopen it.
    fn try_evict(&self) -> Eviction {
        if self.opens.load(Ordering::SeqCst) > 0 {
            return Eviction::Busy;
        }
        let Some(mut slot) = self.slot.try_lock() else {
            return Eviction::Busy;
        };
        let Slot::Open(fd) = &*slot else {
            return Eviction::Never;
        };
        if Arc::strong_count(fd) > 1 {
            return Eviction::Busy;
        }
        if self.foreign {
            return Eviction::Never;
        }
        if self.kept.load(Ordering::Relaxed) {
            // Unlinked through this mount: evictable only if another link still holds it. With
            // no link left no handle can reopen it and none can come back, so it leaves the ring
            // instead of costing an fstat at every sweep until the kernel forgets it.
            match sys::fstat(fd.as_raw_fd()) {
                Ok(st) if st.st_nlink > 0 => self.kept.store(false, Ordering::Relaxed),
                Ok(_) => return Eviction::Never,
                Err(_) => return Eviction::Busy,
            }
        }
        match sys::handle_of(fd.as_raw_fd()) {
            Ok(handle) => {
                *slot = Slot::Closed(handle);
                self.pool.open.fetch_sub(1, Ordering::SeqCst);
                self.pool.evictions.fetch_add(1, Ordering::Relaxed);
                Eviction::Done
            }
            Err(e) => {
                self.pool.no_handles(&e);
                Eviction::Never
            }
        }
    }
}

/// Test seam for the refusals of a swept descriptor that reopens to another object: ext4 and
/// tmpfs handles carry a generation and never decode to another object, but a store whose
/// handles do (a FUSE or network filesystem answering as it likes) gives exactly this state.
#[cfg(test)]
impl Inode {
    pub(crate) fn is_swept(&self) -> bool {
        matches!(&*self.slot.lock(), Slot::Closed(_))
    }

    /// Makes the file handle of a swept inode name the object `other` is open on. False if the
    /// descriptor is open (not swept), so a test can tell it set up what it meant to.
    pub(crate) fn aim_swept_handle_at(&self, other: RawFd) -> io::Result<bool> {
        match &mut *self.slot.lock() {
            Slot::Open(_) => Ok(false),
            Slot::Closed(handle) => {
                *handle = sys::handle_of(other)?;
                Ok(true)
            }
        }
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        if matches!(&*self.slot.get_mut(), Slot::Open(_)) {
            self.pool.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

enum Eviction {
    Done,
    /// In use now: try again at a later sweep.
    Busy,
    /// Cannot be reopened by handle: stays open and leaves the sweep.
    Never,
}

/// The bounded set of open backing descriptors. Every inode that opens one joins the ring;
/// when more than `bound` are open, the sweep closes those not used since it last passed.
pub struct FdPool {
    /// A readable descriptor of the backing root: open_by_handle_at needs one (not O_PATH) on
    /// the filesystem the handles belong to.
    mount: OwnedFd,
    dev: u64,
    inos: InoMap,
    bound: usize,
    open: AtomicUsize,
    ring: parking_lot::Mutex<VecDeque<Weak<Inode>>>,
    evictions: AtomicU64,
    reopens: AtomicU64,
    warned: AtomicBool,
}

/// How the descriptor bound is holding, for status and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdStats {
    pub bound: usize,
    pub open: usize,
    pub evictions: u64,
    pub reopens: u64,
}

impl FdPool {
    fn reopen(&self, handle: &sys::FileHandle, ino: u64, kind: FileType) -> Result<OwnedFd, Error> {
        let fd = sys::open_handle(
            self.mount.as_raw_fd(),
            handle,
            libc::O_PATH | libc::O_NOFOLLOW,
        )?;
        let st = sys::fstat(fd.as_raw_fd())?;
        if st.st_dev != self.dev
            || self.inos.to_fuse(st.st_ino) != ino
            || file_type(st.st_mode) != kind
        {
            return Err(Error::integrity(
                "inode",
                ino,
                "file handle reopened a different object",
            ));
        }
        self.reopens.fetch_add(1, Ordering::Relaxed);
        Ok(fd)
    }

    /// One more descriptor is open (held by `inode`): sweeps if that is one too many.
    fn opened(&self, inode: Weak<Inode>) {
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        if self.bound == usize::MAX {
            return;
        }
        let mut ring = self.ring.lock();
        ring.push_back(inode);
        if open > self.bound {
            self.sweep(&mut ring);
        } else if ring.len() > 2 * open + 64 {
            // Forgotten inodes leave dead entries behind; drop them before they pile up.
            ring.retain(|w| w.strong_count() > 0);
        }
    }

    fn sweep(&self, ring: &mut VecDeque<Weak<Inode>>) {
        // Twice round the ring at most: the first pass may only clear `used` bits.
        let mut budget = 2 * ring.len() + 1;
        while self.open.load(Ordering::SeqCst) > self.bound && budget > 0 {
            budget -= 1;
            let Some(weak) = ring.pop_front() else {
                break;
            };
            let Some(inode) = weak.upgrade() else {
                continue;
            };
            if inode.used.swap(false, Ordering::Relaxed) {
                ring.push_back(weak);
                continue;
            }
            match inode.try_evict() {
                Eviction::Done | Eviction::Never => {}
                Eviction::Busy => ring.push_back(weak),
            }
        }
    }

    fn no_handles(&self, e: &io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "backing store gives no file handles ({e}): descriptors of its inodes stay open, \
                 so more than {} may be open",
                self.bound
            );
        }
    }

    fn stats(&self) -> FdStats {
        FdStats {
            bound: self.bound,
            open: self.open.load(Ordering::SeqCst),
            evictions: self.evictions.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
        }
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
    pool: Arc<FdPool>,
    /// Entries now, and how many were dropped since memory was last given back.
    live: AtomicUsize,
    freed: AtomicUsize,
}

/// Below this many cached inodes the memory to give back is not worth a malloc_trim.
const TRIM_AFTER: usize = 4096;

impl Inode {
    fn new(ino: u64, st: &libc::stat, fd: OwnedFd, lookups: u64, pool: Arc<FdPool>) -> Arc<Self> {
        let kind = file_type(st.st_mode);
        Arc::new_cyclic(|me| Inode {
            ino,
            kind,
            slot: parking_lot::Mutex::new(Slot::Open(Arc::new(fd))),
            used: AtomicBool::new(true),
            opens: AtomicU32::new(0),
            kept: AtomicBool::new(false),
            foreign: st.st_dev != pool.dev,
            pool,
            me: me.clone(),
            lookups: AtomicU64::new(lookups),
            dir_id: OnceLock::new(),
            content: parking_lot::Mutex::new(None),
            stamp: parking_lot::Mutex::new(None),
            caps: AtomicU8::new(CAPS_UNKNOWN),
            acls: AtomicU32::new(0),
        })
    }
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
    /// `bound`: how many descriptors of inodes may stay open (the root's always is).
    pub fn new(root_fd: OwnedFd, root_dir_id: [u8; 16], bound: usize) -> io::Result<Self> {
        let st = sys::fstat(root_fd.as_raw_fd())?;
        let inos = InoMap {
            root_backing: st.st_ino,
        };
        let mount = sys::reopen(root_fd.as_raw_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
        // Without file handles (a filesystem that has none, or no CAP_DAC_READ_SEARCH) nothing
        // closed could be reopened: then every descriptor stays open, as the log says.
        let handles = sys::handle_of(root_fd.as_raw_fd())
            .and_then(|h| sys::open_handle(mount.as_raw_fd(), &h, libc::O_PATH));
        let bound = match handles {
            Ok(_) => bound.max(1),
            Err(e) => {
                tracing::warn!(
                    "backing store cannot be reopened by file handle ({e}): the daemon keeps one \
                     descriptor per inode the kernel caches, with no bound"
                );
                usize::MAX
            }
        };
        let pool = Arc::new(FdPool {
            mount,
            dev: st.st_dev,
            inos,
            bound,
            open: AtomicUsize::new(1),
            ring: parking_lot::Mutex::new(VecDeque::new()),
            evictions: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        });
        // The kernel never forgets the root, and the root never joins the ring.
        let root = Inode::new(ROOT, &st, root_fd, 1, pool.clone());
        let _ = root.dir_id.set(root_dir_id);
        let map = DashMap::new();
        map.insert(ROOT, root);
        Ok(Self {
            map,
            inos,
            pool,
            live: AtomicUsize::new(1),
            freed: AtomicUsize::new(0),
        })
    }

    pub fn fd_stats(&self) -> FdStats {
        self.pool.stats()
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        self.map.get(&ino).map(|i| Arc::clone(&i))
    }

    /// Registers one more kernel reference to the object behind `fd` (a fresh O_PATH fd) and
    /// returns its inode; an inode already known keeps its descriptor and `fd` is dropped (or
    /// becomes its descriptor, if the sweep had closed it and `fd` is the same object).
    pub fn remember(&self, fd: OwnedFd, st: &libc::stat) -> Result<Arc<Inode>, Error> {
        let ino = self.inos.to_fuse(st.st_ino);
        let (inode, opened) = match self.map.entry(ino) {
            dashmap::Entry::Occupied(e) => {
                let inode = Arc::clone(e.get());
                let adopted = inode.adopt(fd, st)?;
                inode.lookups.fetch_add(1, Ordering::SeqCst);
                (inode, adopted)
            }
            dashmap::Entry::Vacant(e) => {
                let inode = Inode::new(ino, st, fd, 1, self.pool.clone());
                e.insert(Arc::clone(&inode));
                self.grew();
                (inode, true)
            }
        };
        // Outside the map's entry lock, which need not be held while sweeping.
        if opened {
            self.pool.opened(Arc::downgrade(&inode));
        }
        Ok(inode)
    }

    /// Makes sure the object `st` describes, if the kernel knows it, stays alive while the
    /// returned descriptor is held and afterwards: it is about to be unlinked through this mount,
    /// and a freed inode number could be reused by the next object created, which the table
    /// would take for the old one. Such an inode is not swept while it has no link left, so it
    /// lives until forgotten. A swept descriptor that reopens to another object is an
    /// integrity failure, returned so that nothing is unlinked under a name that no longer
    /// names what the kernel knows.
    pub fn keep_alive(&self, st: &libc::stat) -> Result<Option<PathFd>, Error> {
        let Some(inode) = self.get(self.inos.to_fuse(st.st_ino)) else {
            return Ok(None);
        };
        if inode.kind != file_type(st.st_mode) {
            return Ok(None);
        }
        // Before the descriptor is taken, so that no sweep closes it in between.
        inode.kept.store(true, Ordering::Relaxed);
        match inode.fd() {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.integrity_failure().is_some() => Err(e),
            // Gone behind our back (ESTALE): nothing to keep alive.
            Err(_) => Ok(None),
        }
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
        let removed = self.map.remove_if(&ino, |_, inode| {
            let before = inode.lookups.fetch_sub(
                n.min(inode.lookups.load(Ordering::SeqCst)),
                Ordering::SeqCst,
            );
            before <= n
        });
        if let Some((_, inode)) = removed {
            drop(inode);
            self.shrank();
        }
    }

    /// One inode fewer. Once as many inodes were dropped since the last time as are left (and
    /// a few thousand at least), the allocator is asked to give the freed memory back: glibc
    /// keeps it in its arenas otherwise, and a daemon that once cached a million inodes would
    /// stay that large after the kernel forgot them.
    fn shrank(&self) {
        let now = self.live.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        let freed = self.freed.fetch_add(1, Ordering::Relaxed) + 1;
        if freed >= TRIM_AFTER.max(now)
            && self
                .freed
                .compare_exchange(freed, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.map.shrink_to_fit();
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only returns free memory to the system.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    fn grew(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
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
        let table = InodeTable::new(open(dir.path()), [0; 16], 8).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let st = sys::fstat(open(&file).as_raw_fd()).unwrap();
        let a = table.remember(open(&file), &st).unwrap();
        let b = table.remember(open(&file), &st).unwrap();
        assert_eq!(a.ino, b.ino);
        table.forget(a.ino, 1);
        assert!(table.get(a.ino).is_some());
        table.forget(a.ino, 1);
        assert!(table.get(a.ino).is_none());
        table.forget(ROOT, 10);
        assert!(table.get(ROOT).is_some());
    }

    fn path_fd(p: &std::path::Path) -> OwnedFd {
        let name = sys::cstring(p.as_os_str().as_encoded_bytes()).unwrap();
        sys::openat(libc::AT_FDCWD, &name, libc::O_PATH | libc::O_NOFOLLOW, 0).unwrap()
    }

    #[test]
    fn an_unlinked_kept_inode_leaves_the_sweep_and_a_still_linked_one_is_evicted() {
        if !crate::testing::root_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let table = InodeTable::new(path_fd(dir.path()), [0; 16], 8).unwrap();
        let remember = |name: &str| {
            let file = dir.path().join(name);
            let fd = path_fd(&file);
            let st = sys::fstat(fd.as_raw_fd()).unwrap();
            (table.remember(fd, &st).unwrap(), st)
        };
        std::fs::write(dir.path().join("gone"), b"x").unwrap();
        std::fs::write(dir.path().join("linked"), b"y").unwrap();
        std::fs::hard_link(dir.path().join("linked"), dir.path().join("other")).unwrap();
        let (gone, gone_st) = remember("gone");
        let (linked, linked_st) = remember("linked");
        // Unlinked through the mount, as remove_file does: kept alive first, then unlinked.
        drop(table.keep_alive(&gone_st));
        drop(table.keep_alive(&linked_st));
        std::fs::remove_file(dir.path().join("gone")).unwrap();
        std::fs::remove_file(dir.path().join("linked")).unwrap();
        assert!(matches!(gone.try_evict(), Eviction::Never));
        assert!(matches!(linked.try_evict(), Eviction::Done));
        // The evicted one reopens by handle through its remaining link.
        assert_eq!(
            sys::fstat(linked.fd().unwrap().raw()).unwrap().st_ino,
            linked_st.st_ino
        );
        assert_eq!(sys::fstat(gone.fd().unwrap().raw()).unwrap().st_nlink, 0);
    }

    #[test]
    fn descriptors_stay_within_the_bound_and_evicted_inodes_reopen_as_themselves() {
        if !crate::testing::root_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let table = InodeTable::new(path_fd(dir.path()), [0; 16], 8).unwrap();
        let mut inodes = Vec::new();
        for i in 0..100 {
            let file = dir.path().join(format!("f{i}"));
            std::fs::write(&file, i.to_string()).unwrap();
            let fd = path_fd(&file);
            let st = sys::fstat(fd.as_raw_fd()).unwrap();
            inodes.push((table.remember(fd, &st).unwrap(), st.st_ino));
            assert!(table.fd_stats().open <= 8, "{:?}", table.fd_stats());
        }
        assert!(table.fd_stats().evictions >= 92, "{:?}", table.fd_stats());
        // Renamed behind the table's back: the handle still finds it.
        std::fs::rename(dir.path().join("f3"), dir.path().join("moved")).unwrap();
        for (i, (inode, backing_ino)) in inodes.iter().enumerate() {
            let fd = inode.fd().unwrap();
            assert_eq!(sys::fstat(fd.raw()).unwrap().st_ino, *backing_ino);
            let rd = sys::reopen(fd.raw(), libc::O_RDONLY).unwrap();
            let mut buf = [0u8; 8];
            let n = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            assert_eq!(&buf[..n as usize], i.to_string().as_bytes());
            drop(fd);
            assert!(table.fd_stats().open <= 8, "{:?}", table.fd_stats());
        }
        assert!(table.fd_stats().reopens >= 92, "{:?}", table.fd_stats());
        // Forgotten inodes give their descriptors back.
        for (inode, _) in &inodes {
            table.forget(inode.ino, 1);
        }
        let open_now = table.fd_stats().open;
        drop(inodes);
        assert!(table.fd_stats().open < open_now || open_now == 1);
        assert_eq!(
            table.fd_stats().open,
            1,
            "only the root's descriptor is left"
        );
    }

    #[test]
    fn an_inode_with_open_handles_or_no_links_keeps_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let table = InodeTable::new(path_fd(dir.path()), [0; 16], 16).unwrap();
        let keep = dir.path().join("open");
        std::fs::write(&keep, b"x").unwrap();
        let fd = path_fd(&keep);
        let st = sys::fstat(fd.as_raw_fd()).unwrap();
        let open = table.remember(fd, &st).unwrap();
        open.opened();
        let gone = dir.path().join("unlinked");
        std::fs::write(&gone, b"y").unwrap();
        let fd = path_fd(&gone);
        let st = sys::fstat(fd.as_raw_fd()).unwrap();
        let unlinked = table.remember(fd, &st).unwrap();
        let alive = table.keep_alive(&st).unwrap();
        std::fs::remove_file(&gone).unwrap();
        drop(alive);
        for i in 0..200 {
            let file = dir.path().join(format!("f{i}"));
            std::fs::write(&file, b"").unwrap();
            let fd = path_fd(&file);
            let st = sys::fstat(fd.as_raw_fd()).unwrap();
            table.remember(fd, &st).unwrap();
        }
        assert!(matches!(&*open.slot.lock(), Slot::Open(_)));
        assert!(matches!(&*unlinked.slot.lock(), Slot::Open(_)));
        assert_eq!(
            sys::fstat(unlinked.fd().unwrap().raw()).unwrap().st_nlink,
            0
        );
        open.closed();
    }

    #[test]
    fn a_reused_number_is_refused_not_taken_for_the_old_object() {
        if !crate::testing::root_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let table = InodeTable::new(path_fd(dir.path()), [0; 16], 16).unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"a").unwrap();
        let fd = path_fd(&a);
        let st_a = sys::fstat(fd.as_raw_fd()).unwrap();
        let inode = table.remember(fd, &st_a).unwrap();
        for i in 0..100 {
            let file = dir.path().join(format!("f{i}"));
            std::fs::write(&file, b"").unwrap();
            let fd = path_fd(&file);
            let st = sys::fstat(fd.as_raw_fd()).unwrap();
            table.remember(fd, &st).unwrap();
        }
        assert!(
            matches!(&*inode.slot.lock(), Slot::Closed(_)),
            "a was swept"
        );
        // Another object arriving under a's number (as after a reuse) is not a.
        let b = dir.path().join("b");
        std::fs::write(&b, b"b").unwrap();
        let refused = table.remember(path_fd(&b), &st_a).err();
        assert_eq!(refused.as_ref().map(Error::errno), Some(fuser::Errno::EIO));
        assert_eq!(
            refused.and_then(|e| e.integrity_failure().map(|i| i.what)),
            Some("inode"),
            "a reused number is an integrity failure, audited at the boundary"
        );
        // a itself is adopted back without a reopen.
        let reopens = table.fd_stats().reopens;
        table.remember(path_fd(&a), &st_a).unwrap();
        assert!(matches!(&*inode.slot.lock(), Slot::Open(_)));
        assert_eq!(table.fd_stats().reopens, reopens);
    }
}
