//! Encrypted file contents on the data path: per-inode cipher and size, block-range locks so
//! writes to different blocks of one file run in parallel, read-modify-write of partial blocks,
//! and the crypto of one large request split across cores.

use crate::crypto::content::{
    block_count, block_offset, plain_size, stored_size, FileCipher, FileHeader, BLOCK_OVERHEAD,
    BLOCK_SIZE, HEADER_LEN, STORED_BLOCK_SIZE,
};
use crate::crypto::keys::KeyRing;
use crate::crypto::Codec;
use crate::fs::Error;
use crate::sys;
use arc_swap::ArcSwap;
use fuser::Errno;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::cell::RefCell;
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Block locks are striped: block b takes stripe b % STRIPES, always in ascending order.
const STRIPES: usize = 32;
const BS: u64 = BLOCK_SIZE as u64;
/// The crypto of one request is split across cores in parts of at least this many blocks:
/// below that, handing a part to another thread (a few µs) costs more than the AES it saves.
const MIN_BLOCKS_PER_PART: usize = 16;

/// Runs `work` on every job and returns the results in job order: the first job on the calling
/// thread (it would only wait otherwise), the others on the crypto threads.
fn on_all_cores<J: Send, R: Send>(jobs: Vec<J>, work: impl Fn(J) -> R + Sync) -> Vec<R> {
    let mut results: Vec<Option<R>> = jobs.iter().map(|_| None).collect();
    rayon::in_place_scope(|scope| {
        let work = &work;
        let mut here = None;
        for (job, slot) in jobs.into_iter().zip(results.iter_mut()) {
            if here.is_none() {
                here = Some((job, slot));
            } else {
                scope.spawn(move |_| *slot = Some(work(job)));
            }
        }
        if let Some((job, slot)) = here {
            *slot = Some(work(job));
        }
    });
    // The scope returns only once every job has run (a panic in one is re-raised here).
    results.into_iter().flatten().collect()
}

/// Into how many parts to split the crypto of `blocks` blocks: at most one per core, since the
/// calling thread does one part itself and each crypto thread one more.
fn parts_for(blocks: usize) -> usize {
    (blocks / MIN_BLOCKS_PER_PART).clamp(1, rayon::current_num_threads())
}

/// The open state of one regular file, shared by all its handles and hard links.
pub struct Content {
    ino: u64,
    /// Replaced (new file id, new key) when the file is truncated to empty, so blocks of the
    /// old contents can never be spliced into the new ones. Swapped under the size write lock;
    /// every user holds the size lock, so a request sees one cipher throughout.
    cipher: ArcSwap<FileCipher>,
    codec: Codec,
    /// Plaintext size. Readers and in-place writers share it; extending writers and truncate
    /// take it exclusively, because they move the final block.
    size: RwLock<u64>,
    /// Lock-free copy of `size` for getattr.
    size_hint: AtomicU64,
    /// The backing file may have holes (unallocated ranges inside it): then even in-place
    /// writes reserve space first. Set when a hole may appear; cleared only when fallocate
    /// has just allocated the gap an extension leaves.
    sparse: AtomicBool,
    stripes: [RwLock<()>; STRIPES],
}

fn io(e: std::io::Error) -> Error {
    Error::from(e)
}

/// One write as sealing sees it: `data` at `offset`, the file going from `old` to `new` bytes
/// (equal for in-place writes).
#[derive(Clone, Copy)]
struct Patch<'a> {
    old: u64,
    new: u64,
    offset: u64,
    data: &'a [u8],
}

/// The stored bytes of one block at a backing offset (kept to undo a failed write).
struct Segment {
    offset: u64,
    bytes: Vec<u8>,
}

thread_local! {
    /// Per-thread scratch space for the data path: a request borrows it instead of allocating
    /// (and zeroing) up to 1 MiB twice per read or write. Never returned to the caller unread:
    /// every byte handed out is first overwritten by pread or decryption.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { stored: Vec::new(), plain: Vec::new() }) };
}

struct Scratch {
    stored: Vec<u8>,
    plain: Vec<u8>,
}

/// The first `n` bytes of `v`, growing it if needed (old contents may remain: callers overwrite).
fn take(v: &mut Vec<u8>, n: usize) -> &mut [u8] {
    if v.len() < n {
        v.resize(n, 0);
    }
    &mut v[..n]
}

/// Runs `f` with the calling thread's scratch buffers. Only the public entry points call this,
/// never each other, so the RefCell is never borrowed twice.
fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> T) -> T {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

impl Content {
    /// Reads the header of the backing file behind `fd` (or makes a new one for an empty file).
    pub fn load(ino: u64, fd: RawFd, keys: &KeyRing, codec: Codec) -> Result<Self, Error> {
        let st = sys::fstat(fd).map_err(io)?;
        let stored = st.st_size as u64;
        let (header, size) = if stored == 0 {
            (FileHeader::new_random(), 0)
        } else {
            let mut raw = [0u8; HEADER_LEN];
            let n = sys::pread(fd, &mut raw, 0).map_err(io)?;
            let header = FileHeader::decode(&raw[..n])
                .map_err(|e| Error::integrity("header", ino, e.to_string()))?;
            let size =
                plain_size(stored).map_err(|e| Error::integrity("size", ino, e.to_string()))?;
            (header, size)
        };
        // Holes (found by SEEK_HOLE, or fewer allocated bytes than the size on a filesystem
        // without it, or one that compresses): in-place writes must then reserve first.
        let sparse = stored > 0
            && ((st.st_blocks as u64) * 512 < stored
                || sys::lseek(fd, 0, libc::SEEK_HOLE).map_or(true, |hole| hole < stored));
        Ok(Self {
            ino,
            cipher: ArcSwap::from_pointee(codec.file_cipher(keys, &header)),
            codec,
            size: RwLock::new(size),
            size_hint: AtomicU64::new(size),
            sparse: AtomicBool::new(sparse),
            stripes: std::array::from_fn(|_| RwLock::new(())),
        })
    }

    pub fn size(&self) -> u64 {
        self.size_hint.load(Ordering::Acquire)
    }

    /// Stripe `b % STRIPES` for every block of `b0..=b1`, ascending and without duplicates.
    fn stripe_ids(b0: u64, b1: u64) -> impl Iterator<Item = usize> {
        let all = b1 - b0 + 1 >= STRIPES as u64;
        let (s0, s1) = (
            (b0 % STRIPES as u64) as usize,
            (b1 % STRIPES as u64) as usize,
        );
        (0..STRIPES).filter(move |&i| {
            all || (s0 <= s1 && i >= s0 && i <= s1) || (s0 > s1 && (i >= s0 || i <= s1))
        })
    }

    fn read_lock(&self, b0: u64, b1: u64) -> Vec<RwLockReadGuard<'_, ()>> {
        Self::stripe_ids(b0, b1)
            .map(|i| self.stripes[i].read())
            .collect()
    }

    fn write_lock(&self, b0: u64, b1: u64) -> Vec<RwLockWriteGuard<'_, ()>> {
        Self::stripe_ids(b0, b1)
            .map(|i| self.stripes[i].write())
            .collect()
    }

    fn block_len(size: u64, b: u64) -> usize {
        (size - b * BS).min(BS) as usize
    }

    /// Decrypts blocks `b0..=b1` of a file of `size` bytes into `out` (block-aligned), reading
    /// the ciphertext into `stored`.
    fn open_blocks(
        &self,
        fd: RawFd,
        b0: u64,
        b1: u64,
        size: u64,
        stored: &mut Vec<u8>,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let last = block_count(size) - 1;
        let start = block_offset(b0);
        let end = block_offset(b1 + 1).min(stored_size(size));
        let stored = take(stored, (end - start) as usize);
        let n = sys::pread(fd, stored, start).map_err(io)?;
        if n != stored.len() {
            return Err(self.too_short());
        }
        let blocks = stored.len().div_ceil(STORED_BLOCK_SIZE);
        let parts = parts_for(blocks);
        if parts == 1 {
            return self.open_run(b0, last, stored, out);
        }
        // A 1 MiB read is ~300 µs of AES on one core: the parts run side by side, so the reply
        // leaves about as soon as the FUSE-only path would.
        let per = blocks.div_ceil(parts);
        let jobs = stored
            .chunks(per * STORED_BLOCK_SIZE)
            .zip(out.chunks_mut(per * BLOCK_SIZE))
            .enumerate()
            .map(|(i, (stored, out))| (b0 + (i * per) as u64, stored, out))
            .collect();
        on_all_cores(jobs, |(b, stored, out)| self.open_run(b, last, stored, out))
            .into_iter()
            .collect()
    }

    /// Decrypts the consecutive stored blocks in `stored`, the first being block `b0`, into
    /// `out`; `last` is the index of the file's final block.
    fn open_run(&self, b0: u64, last: u64, stored: &[u8], out: &mut [u8]) -> Result<(), Error> {
        let cipher = self.cipher.load();
        for (i, chunk) in stored.chunks(STORED_BLOCK_SIZE).enumerate() {
            let b = b0 + i as u64;
            let dst = &mut out[i * BLOCK_SIZE..];
            if let Err(e) = cipher.open_block(b, b == last, chunk, dst) {
                return Err(Error::integrity(
                    "block",
                    self.ino,
                    format!("block {b}: {e}"),
                ));
            }
        }
        Ok(())
    }

    /// Decrypts one block into `out` without touching the scratch buffers (for read-modify-write
    /// of the partial blocks at the edges of a write).
    fn too_short(&self) -> Error {
        Error::integrity("block", self.ino, "backing file is shorter than its blocks")
    }

    fn open_one(&self, fd: RawFd, b: u64, size: u64, out: &mut [u8]) -> Result<(), Error> {
        let len = Self::block_len(size, b) + BLOCK_OVERHEAD;
        let mut stored = [0u8; STORED_BLOCK_SIZE];
        let stored = &mut stored[..len];
        if sys::pread(fd, stored, block_offset(b)).map_err(io)? != len {
            return Err(self.too_short());
        }
        let last = block_count(size) - 1;
        if let Err(e) = self.cipher.load().open_block(b, b == last, stored, out) {
            return Err(Error::integrity(
                "block",
                self.ino,
                format!("block {b}: {e}"),
            ));
        }
        Ok(())
    }

    /// `seal_range` with the blocks split across cores when there are enough of them. Every
    /// block but the file's final one is whole, so each part but the last fills exactly
    /// `STORED_BLOCK_SIZE` bytes per block of `out`.
    fn seal_blocks(
        &self,
        fd: RawFd,
        b0: u64,
        b1: u64,
        patch: Patch,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let blocks = (b1 - b0 + 1) as usize;
        let parts = parts_for(blocks);
        if parts == 1 {
            return self.seal_range(fd, b0, b1, patch, out);
        }
        let per = blocks.div_ceil(parts) as u64;
        let mut jobs = Vec::with_capacity(parts);
        let mut rest = out;
        let mut p0 = b0;
        while p0 <= b1 {
            let p1 = (p0 + per - 1).min(b1);
            let (mine, tail) = if p1 < b1 {
                std::mem::take(&mut rest).split_at_mut((p1 - p0 + 1) as usize * STORED_BLOCK_SIZE)
            } else {
                (std::mem::take(&mut rest), &mut [][..])
            };
            jobs.push((p0, p1, mine));
            rest = tail;
            p0 = p1 + 1;
        }
        on_all_cores(jobs, |(p0, p1, out)| {
            self.seal_range(fd, p0, p1, patch, out)
        })
        .into_iter()
        .sum()
    }

    /// Seals blocks `b0..=b1` of the file as it will be after `patch`. Blocks that its data
    /// covers entirely are sealed straight from it; the others are assembled from their old
    /// plaintext (if any), zeros and the part of the data they hold. Appends to `out`.
    fn seal_range(
        &self,
        fd: RawFd,
        b0: u64,
        b1: u64,
        patch: Patch,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let Patch {
            old,
            new,
            offset,
            data,
        } = patch;
        let end = offset + data.len() as u64;
        let last = block_count(new) - 1;
        let mut pos = 0;
        let cipher = self.cipher.load();
        let mut sealer = cipher.sealer(b1 - b0 + 1);
        for b in b0..=b1 {
            let start = b * BS;
            let len = Self::block_len(new, b);
            let dst = &mut out[pos..pos + len + BLOCK_OVERHEAD];
            let (ws, we) = (offset.max(start), end.min(start + len as u64));
            if ws == start && we == start + len as u64 {
                let src = &data[(ws - offset) as usize..(we - offset) as usize];
                sealer.seal(b, b == last, src, dst);
            } else {
                let mut block = [0u8; BLOCK_SIZE];
                if start < old {
                    let old_len = Self::block_len(old, b);
                    self.open_one(fd, b, old, &mut block[..old_len])?;
                }
                if ws < we {
                    block[(ws - start) as usize..(we - start) as usize]
                        .copy_from_slice(&data[(ws - offset) as usize..(we - offset) as usize]);
                } else if b != last && block[..len].iter().all(|x| *x == 0) {
                    // An old final block of zeros (a file made longer by truncate) that is no
                    // longer final: stored as a hole, so it stays one for SEEK_HOLE, as on ext4.
                    dst.fill(0);
                    pos += len + BLOCK_OVERHEAD;
                    continue;
                }
                sealer.seal(b, b == last, &block[..len], dst);
            }
            pos += len + BLOCK_OVERHEAD;
        }
        Ok(pos)
    }

    /// Reads up to `len` bytes at `offset` and hands them to `reply` (borrowed, not copied).
    pub fn read(
        &self,
        fd: RawFd,
        offset: u64,
        len: u32,
        reply: impl FnOnce(&[u8]),
    ) -> Result<(), Error> {
        let size = self.size.read();
        if offset >= *size || len == 0 {
            reply(&[]);
            return Ok(());
        }
        let end = (offset + len as u64).min(*size);
        let (b0, b1) = (offset / BS, (end - 1) / BS);
        let _locks = self.read_lock(b0, b1);
        with_scratch(|s| {
            let plain = take(&mut s.plain, ((b1 - b0 + 1) * BS) as usize);
            self.open_blocks(fd, b0, b1, *size, &mut s.stored, plain)?;
            reply(&plain[(offset - b0 * BS) as usize..(end - b0 * BS) as usize]);
            Ok(())
        })
    }

    pub fn write(&self, fd: RawFd, offset: u64, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let end = within_max_size(offset.checked_add(data.len() as u64))?;
        {
            let size = self.size.read();
            if end <= *size {
                let _locks = self.write_lock(offset / BS, (end - 1) / BS);
                return self.write_within(fd, offset, data, *size);
            }
        }
        let mut size = self.size.write();
        if end <= *size {
            return self.write_within(fd, offset, data, *size);
        }
        self.write_extending(fd, offset, data, &mut size)
    }

    /// A write that ends inside the file: only its own blocks change, the final flag does not.
    fn write_within(&self, fd: RawFd, offset: u64, data: &[u8], size: u64) -> Result<(), Error> {
        let end = offset + data.len() as u64;
        let (b0, b1) = (offset / BS, (end - 1) / BS);
        let stored_len = (block_offset(b1) - block_offset(b0)) as usize
            + Self::block_len(size, b1)
            + BLOCK_OVERHEAD;
        with_scratch(|s| {
            let out = take(&mut s.stored, stored_len);
            let patch = Patch {
                old: size,
                new: size,
                offset,
                data,
            };
            let n = self.seal_blocks(fd, b0, b1, patch, out)?;
            // Rewriting allocated blocks cannot run out of space; holes can, so a file that
            // may have holes reserves first and a full disk fails the write before any byte
            // of a block is torn.
            if self.sparse.load(Ordering::Acquire) {
                reserve(fd, block_offset(b0), n as u64)?;
            }
            sys::pwrite_all(fd, &out[..n], block_offset(b0)).map_err(io)
        })
    }

    /// A write past the end: the old final block loses its flag, the header appears if the
    /// file was empty, and the new space is reserved first so a full disk fails cleanly.
    fn write_extending(
        &self,
        fd: RawFd,
        offset: u64,
        data: &[u8],
        size: &mut u64,
    ) -> Result<(), Error> {
        let old = *size;
        let end = offset + data.len() as u64;
        let (b0, b1) = (offset / BS, (end - 1) / BS);
        let old_last = (old > 0).then(|| block_count(old) - 1);
        // Stored bytes of the old final block, to restore it if the write fails half-way.
        let undo = match old_last {
            Some(l) => Some(self.stored_block(fd, l, old)?),
            None => None,
        };
        // The blocks to write: the old final block when it lies before the write (it only
        // loses its final flag and may grow), then the blocks of the write itself. Blocks
        // between the two stay holes.
        let lone_old_last = old_last.filter(|l| *l < b0);
        let gap = match lone_old_last {
            Some(l) => b0 > l + 1,
            None => old == 0 && b0 > 0,
        };
        let old_stored = stored_size(old);
        let mut old_last_hole = false;
        let patch = Patch {
            old,
            new: end,
            offset,
            data,
        };
        with_scratch(|s| {
            let header = if old == 0 { HEADER_LEN } else { 0 };
            let blocks = b1 - b0 + 1 + u64::from(lone_old_last.is_some());
            let out = take(&mut s.stored, header + blocks as usize * STORED_BLOCK_SIZE);
            // (backing offset, range of `out`) per contiguous run.
            let mut runs: Vec<(u64, Range<usize>)> = Vec::with_capacity(3);
            let mut pos = 0;
            if old == 0 {
                out[..HEADER_LEN].copy_from_slice(self.cipher.load().header_bytes());
                runs.push((0, 0..HEADER_LEN));
                pos = HEADER_LEN;
            }
            if let Some(l) = lone_old_last {
                let n = self.seal_range(fd, l, l, patch, &mut out[pos..])?;
                old_last_hole = out[pos..pos + n].iter().all(|x| *x == 0);
                runs.push((block_offset(l), pos..pos + n));
                pos += n;
            }
            let n = self.seal_blocks(fd, b0, b1, patch, &mut out[pos..])?;
            runs.push((block_offset(b0), pos..pos + n));
            let runs = coalesce(runs);

            // Only bytes past the old end can hit a full disk: everything before is allocated,
            // unless the file has holes, and then it is reserved here first. So the new bytes
            // go first; if they fail, truncating back leaves the file exactly as it was, and
            // no block already in the file has been touched. (A fallocate before every
            // extending write cost ~15% of the daemon's CPU on sequential writes.)
            if self.sparse.load(Ordering::Acquire) {
                for (at, r) in runs.iter().filter(|(at, _)| *at < old_stored) {
                    let len = (r.len() as u64).min(old_stored - at);
                    reserve(fd, *at, len)?;
                }
            }
            let split = |(at, r): &(u64, Range<usize>)| {
                let cut = (old_stored.saturating_sub(*at) as usize).min(r.len());
                let (head, tail) = (r.start..r.start + cut, r.start + cut..r.end);
                ((*at, head), (*at + cut as u64, tail))
            };
            let (heads, tails): (Vec<_>, Vec<_>) = runs.iter().map(split).unzip();
            for (at, r) in tails.iter().chain(heads.iter()) {
                if r.is_empty() {
                    continue;
                }
                if let Err(e) = sys::pwrite_all(fd, &out[r.clone()], *at) {
                    self.restore(fd, old_stored, undo.as_ref());
                    return Err(io(e));
                }
            }
            Ok(())
        })?;
        if old_last_hole {
            // Its zeros are written (the run stays one pwrite), then given back, so that the
            // backing store reports a hole there too (best effort: the zeros alone are valid).
            self.sparse.store(true, Ordering::Release);
            if let Some(l) = lone_old_last {
                let hole = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                let _ = sys::fallocate(fd, hole, block_offset(l), STORED_BLOCK_SIZE as u64);
            }
        }
        if gap {
            self.sparse.store(true, Ordering::Release);
        }
        *size = end;
        self.size_hint.store(end, Ordering::Release);
        Ok(())
    }

    fn stored_block(&self, fd: RawFd, b: u64, size: u64) -> Result<Segment, Error> {
        let offset = block_offset(b);
        let len = Self::block_len(size, b) + BLOCK_OVERHEAD;
        let mut bytes = vec![0u8; len];
        if sys::pread(fd, &mut bytes, offset).map_err(io)? != len {
            return Err(Errno::EIO.into());
        }
        Ok(Segment { offset, bytes })
    }

    /// Best effort after a failed write: back to the old length and the old final block.
    fn restore(&self, fd: RawFd, old_stored: u64, undo: Option<&Segment>) {
        let _ = sys::ftruncate(fd, old_stored);
        if let Some(s) = undo {
            let _ = sys::pwrite_all(fd, &s.bytes, s.offset);
        }
    }

    pub fn truncate(&self, fd: RawFd, new: u64, keys: &KeyRing) -> Result<(), Error> {
        within_max_size(Some(new))?;
        let mut size = self.size.write();
        let old = *size;
        if new > old {
            // The final block of the longer file holds zeros; everything between is a hole.
            return self.write_extending(fd, new - 1, &[0], &mut size);
        }
        if new < old && new > 0 {
            let last = block_count(new) - 1;
            let mut block = [0u8; BLOCK_SIZE];
            self.open_one(fd, last, old, &mut block[..Self::block_len(old, last)])?;
            let keep = Self::block_len(new, last);
            let mut sealed = [0u8; STORED_BLOCK_SIZE];
            let sealed = &mut sealed[..keep + BLOCK_OVERHEAD];
            self.cipher
                .load()
                .seal_block(last, true, &block[..keep], sealed);
            sys::ftruncate(fd, stored_size(new)).map_err(io)?;
            sys::pwrite_all(fd, sealed, block_offset(last)).map_err(io)?;
        } else {
            sys::ftruncate(fd, stored_size(new)).map_err(io)?;
            if new == 0 && old > 0 {
                // Emptied: what is written next gets a new file id (header and key).
                let fresh = self.codec.file_cipher(keys, &FileHeader::new_random());
                self.cipher.store(Arc::new(fresh));
            }
        }
        *size = new;
        self.size_hint.store(new, Ordering::Release);
        Ok(())
    }

    /// fallocate(2): allocate (optionally extending), punch a hole or zero a range.
    pub fn fallocate(&self, fd: RawFd, offset: u64, len: u64, mode: i32) -> Result<(), Error> {
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        if mode & !(PUNCH | ZERO | KEEP) != 0 || (mode & PUNCH != 0 && mode & KEEP == 0) {
            return Err(Errno::EOPNOTSUPP.into());
        }
        let end = within_max_size(offset.checked_add(len))?;
        if mode & (PUNCH | ZERO) != 0 {
            self.zero_range(fd, offset, end)?;
            if mode & KEEP == 0 && end > self.size() {
                let mut size = self.size.write();
                if end > *size {
                    self.write_extending(fd, end - 1, &[0], &mut size)?;
                }
            }
            return Ok(());
        }
        // Held across both steps, so nothing can free what was allocated in between.
        let mut size = self.size.write();
        let from = stored_size(offset.min(*size));
        let allocated = match sys::fallocate(fd, KEEP, from, stored_size(end).saturating_sub(from))
        {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => false,
            Err(e) => return Err(io(e)),
        };
        if mode & KEEP == 0 && end > *size {
            let sparse = self.sparse.load(Ordering::Acquire);
            self.write_extending(fd, end - 1, &[0], &mut size)?;
            // The gap that write leaves was allocated just above: it is no hole (fio and
            // posix_fallocate users would otherwise pay a reserve on every later write).
            if allocated && !sparse {
                self.sparse.store(false, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Zeroes [offset, end) within the file: whole inner blocks become backing holes (which
    /// read as zeros), partial and final blocks are rewritten with zeros.
    fn zero_range(&self, fd: RawFd, offset: u64, end: u64) -> Result<(), Error> {
        let size = self.size.write();
        let end = end.min(*size);
        if offset >= end {
            return Ok(());
        }
        let last = block_count(*size) - 1;
        let first_whole = offset.div_ceil(BS);
        let end_whole = (end / BS).min(last);
        if first_whole < end_whole {
            self.sparse.store(true, Ordering::Release);
            let from = block_offset(first_whole);
            let to = block_offset(end_whole);
            match sys::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                from,
                to - from,
            ) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    self.write_zeros(fd, first_whole * BS, end_whole * BS, *size)?
                }
                Err(e) => return Err(io(e)),
            }
            self.write_zeros(fd, offset, first_whole * BS, *size)?;
            self.write_zeros(fd, end_whole * BS, end, *size)?;
        } else {
            self.write_zeros(fd, offset, end, *size)?;
        }
        Ok(())
    }

    fn write_zeros(&self, fd: RawFd, from: u64, to: u64, size: u64) -> Result<(), Error> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(CHUNK);
            self.write_within(fd, at, &zeros[..n as usize], size)?;
            at += n;
        }
        Ok(())
    }

    fn stored_block_is_zero(&self, fd: RawFd, b: u64, size: u64) -> Result<bool, Error> {
        let stored = self.stored_block(fd, b, size)?;
        Ok(stored.bytes.iter().all(|x| *x == 0))
    }

    /// As `stored_block_is_zero`, read through `direct` (the backing file opened O_DIRECT)
    /// when there is one: a buffered read caches the block's pages, and ext4 then reports the
    /// preallocated (unwritten) ranges among them as data, so the next SEEK_HOLE would answer
    /// differently from this one (xfstests generic/436).
    fn block_is_zero_uncached(
        &self,
        direct: Option<&OwnedFd>,
        fd: RawFd,
        b: u64,
        size: u64,
    ) -> Result<bool, Error> {
        let Some(direct) = direct else {
            return self.stored_block_is_zero(fd, b, size);
        };
        const PAGE: u64 = 4096;
        let start = block_offset(b);
        let end = start + (Self::block_len(size, b) + BLOCK_OVERHEAD) as u64;
        let (from, to) = (start / PAGE * PAGE, end.div_ceil(PAGE) * PAGE);
        // An aligned window inside a slightly larger buffer: O_DIRECT wants both aligned.
        let mut buf = vec![0u8; (to - from + PAGE) as usize];
        let skew = buf.as_ptr().align_offset(PAGE as usize);
        let window = &mut buf[skew..skew + (to - from) as usize];
        match sys::pread(direct.as_raw_fd(), window, from) {
            Ok(n) if n as u64 >= end - from => Ok(window
                [(start - from) as usize..(end - from) as usize]
                .iter()
                .all(|x| *x == 0)),
            _ => self.stored_block_is_zero(fd, b, size),
        }
    }

    /// The final block is always stored (it carries the file's end), so it is judged by its
    /// plaintext: all zeros, as a file made longer by truncate leaves it, is a hole (as on
    /// ext4). One that fails to open counts as data, and reading it reports the damage.
    fn final_block_is_zero(&self, fd: RawFd, size: u64) -> Result<bool, Error> {
        let last = block_count(size) - 1;
        let _guard = self.read_lock(last, last);
        let mut plain = [0u8; BS as usize];
        let plain = &mut plain[..Self::block_len(size, last)];
        Ok(self.open_one(fd, last, size, plain).is_ok() && plain.iter().all(|x| *x == 0))
    }

    /// SEEK_DATA / SEEK_HOLE in plaintext offsets. A plaintext block is a hole exactly when its
    /// stored bytes are all zeros (the hole rule of the format), or when it is the final block
    /// and its plaintext is all zeros; the backing file's own SEEK_DATA / SEEK_HOLE only say
    /// where to look next, since stored blocks are not aligned to its pages.
    pub fn seek(&self, fd: RawFd, offset: u64, whence: i32) -> Result<u64, Error> {
        let size = *self.size.read();
        if offset >= size {
            return Err(Errno::ENXIO.into());
        }
        let block_of =
            |stored: u64| stored.saturating_sub(HEADER_LEN as u64) / STORED_BLOCK_SIZE as u64;
        let last = block_count(size) - 1;
        let first = offset / BS;
        let at = |b: u64| (b * BS).max(offset);
        // Without O_DIRECT (a backing filesystem that refuses it) the buffered read is used.
        let direct = sys::reopen(fd, libc::O_RDONLY | libc::O_DIRECT).ok();
        let is_zero = |b: u64| self.block_is_zero_uncached(direct.as_ref(), fd, b, size);
        match whence {
            libc::SEEK_DATA => {
                let mut b = first;
                while b <= last {
                    let data = match sys::lseek(fd, block_offset(b), libc::SEEK_DATA) {
                        Ok(d) => d,
                        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
                        Err(e) => return Err(io(e)),
                    };
                    let k = block_of(data).max(b);
                    if k > last {
                        break;
                    }
                    if k == last {
                        if self.final_block_is_zero(fd, size)? {
                            break;
                        }
                        return Ok(at(k));
                    }
                    if !is_zero(k)? {
                        return Ok(at(k));
                    }
                    b = k + 1;
                }
                Err(Errno::ENXIO.into())
            }
            libc::SEEK_HOLE => {
                let mut b = first;
                while b < last {
                    let hole = sys::lseek(fd, block_offset(b), libc::SEEK_HOLE).map_err(io)?;
                    let k = block_of(hole).max(b);
                    if k >= last {
                        break;
                    }
                    // The backing hole starts in block k: k, or else k+1, may be all zeros.
                    if is_zero(k)? {
                        return Ok(at(k));
                    }
                    if k + 1 < last && is_zero(k + 1)? {
                        return Ok(at(k + 1));
                    }
                    b = k + 2;
                }
                // No hole before the final block: it starts one if it holds only zeros.
                if self.final_block_is_zero(fd, size)? {
                    return Ok(at(last));
                }
                Ok(size)
            }
            _ => Err(Errno::EINVAL.into()),
        }
    }
}

/// The largest plaintext size whose stored size still fits a file offset (`off_t`); anything
/// larger is EFBIG, as a write or truncate past any filesystem's maximum size is (it used to
/// wrap into a negative length: EINVAL).
fn within_max_size(end: Option<u64>) -> Result<u64, Error> {
    // Below 2^63 the stored size cannot overflow u64 (4,124 stored bytes per 4,096).
    end.filter(|&e| e < 1 << 63 && stored_size(e) <= i64::MAX as u64)
        .ok_or(Error::new(Errno::EFBIG))
}

/// Allocates backing space without changing the size; a filesystem without fallocate gets
/// the old behaviour (ENOSPC may then surface from the write itself).
fn reserve(fd: RawFd, offset: u64, len: u64) -> Result<(), Error> {
    match sys::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, offset, len) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// Merges runs that touch on the backing file (they are laid out back to back in the buffer
/// too), so the common case is one pwrite.
fn coalesce(runs: Vec<(u64, Range<usize>)>) -> Vec<(u64, Range<usize>)> {
    let mut out: Vec<(u64, Range<usize>)> = Vec::with_capacity(runs.len());
    for (at, r) in runs {
        match out.last_mut() {
            Some((prev_at, prev)) if *prev_at + prev.len() as u64 == at && prev.end == r.start => {
                prev.end = r.end
            }
            _ => out.push((at, r)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    //! The content layer on a temporary file, no FUSE: read-modify-write of partial blocks,
    //! the block locks under concurrent writers, and one request's crypto split across cores.
    use super::*;
    use crate::crypto::content::stored_size;
    use crate::crypto::keys::MasterKey;
    use rand::{Rng, SeedableRng};

    struct Fixture {
        _file: tempfile::NamedTempFile,
        fd: OwnedFd,
        keys: KeyRing,
    }

    impl Fixture {
        fn new() -> Self {
            let file = tempfile::NamedTempFile::new().expect("temp file");
            let fd = OwnedFd::from(file.reopen().expect("reopen"));
            let keys = KeyRing::new(&MasterKey::random(), &[9; 16]);
            Fixture {
                _file: file,
                fd,
                keys,
            }
        }

        fn fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }

        /// The state a new mount would load from the same backing file.
        fn load(&self) -> Content {
            Content::load(7, self.fd(), &self.keys, Codec::default()).expect("load")
        }

        fn stored_len(&self) -> u64 {
            sys::fstat(self.fd()).expect("fstat").st_size as u64
        }
    }

    fn read(content: &Content, fd: RawFd, offset: u64, len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        content
            .read(fd, offset, len, |d| out.extend_from_slice(d))
            .expect("read");
        out
    }

    fn seed() -> u64 {
        std::env::var("SECRETFS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random)
    }

    #[test]
    fn partial_block_writes_and_truncates_match_a_byte_model_and_survive_a_reload() {
        for seed in [1, seed()] {
            let fx = Fixture::new();
            let content = fx.load();
            let mut model: Vec<u8> = Vec::new();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for step in 0..300 {
                if rng.gen_ratio(1, 8) {
                    let size = rng.gen_range(0..5 * BS);
                    content.truncate(fx.fd(), size, &fx.keys).expect("truncate");
                    model.resize(size as usize, 0);
                } else {
                    let offset = rng.gen_range(0..5 * BS);
                    let len = rng.gen_range(1..3 * BLOCK_SIZE);
                    let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                    content.write(fx.fd(), offset, &data).expect("write");
                    let end = offset as usize + len;
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[offset as usize..end].copy_from_slice(&data);
                }
                let whole = read(&content, fx.fd(), 0, u32::MAX);
                assert!(whole == model, "seed {seed} step {step}: contents differ");
                assert_eq!(
                    content.size(),
                    model.len() as u64,
                    "seed {seed} step {step}"
                );
                assert_eq!(
                    fx.stored_len(),
                    stored_size(model.len() as u64),
                    "seed {seed}"
                );
            }
            let reloaded = fx.load();
            assert!(
                read(&reloaded, fx.fd(), 0, u32::MAX) == model,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn one_large_unaligned_write_split_across_cores_reads_back_whole_and_in_pieces() {
        let fx = Fixture::new();
        let content = fx.load();
        let (offset, len) = (777u64, 3 * 1024 * 1024 + 123usize);
        let blocks = len.div_ceil(BLOCK_SIZE) + 1;
        if rayon::current_num_threads() > 1 {
            assert!(
                parts_for(blocks) > 1,
                "the crypto of {blocks} blocks is not split"
            );
        }
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        content.write(fx.fd(), offset, &data).expect("write");
        let mut want = vec![0u8; offset as usize];
        want.extend_from_slice(&data);
        assert!(read(&content, fx.fd(), 0, u32::MAX) == want);
        // Small unaligned reads open each block on its own.
        let mut at = 0u64;
        while at < want.len() as u64 {
            let piece = read(&content, fx.fd(), at, 5000);
            assert!(
                piece[..] == want[at as usize..(at as usize + piece.len())],
                "at {at}"
            );
            at += 5000;
        }
        assert!(read(&fx.load(), fx.fd(), 0, u32::MAX) == want);
    }

    #[test]
    fn concurrent_writers_sharing_blocks_lose_no_update() {
        const THREADS: usize = 8;
        const SPAN: usize = 1000;
        const ROUNDS: usize = 40;
        let fx = Fixture::new();
        let content = fx.load();
        let total = THREADS * SPAN * 16;
        content
            .write(fx.fd(), 0, &vec![0u8; total])
            .expect("preallocate");
        // Thread t owns bytes [k*THREADS*SPAN + t*SPAN, +SPAN): spans of four or five threads
        // share every block, so each write is a read-modify-write of blocks others write too.
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (content, fx) = (&content, &fx);
                s.spawn(move || {
                    for round in 0..ROUNDS {
                        let byte = (t * ROUNDS + round) as u8 | 1;
                        for k in 0..16 {
                            let offset = (k * THREADS * SPAN + t * SPAN) as u64;
                            content
                                .write(fx.fd(), offset, &[byte; SPAN])
                                .expect("write");
                        }
                    }
                });
            }
        });
        let whole = read(&content, fx.fd(), 0, u32::MAX);
        for t in 0..THREADS {
            let last = (t * ROUNDS + ROUNDS - 1) as u8 | 1;
            for k in 0..16 {
                let at = k * THREADS * SPAN + t * SPAN;
                assert!(
                    whole[at..at + SPAN].iter().all(|&b| b == last),
                    "thread {t}'s span {k} lost its last write"
                );
            }
        }
    }
}
