//! Encrypted file contents on the data path: per-inode cipher and size, block-range locks so
//! writes to different blocks of one file run in parallel, read-modify-write of partial blocks.

use super::sys;
use crate::audit;
use crate::crypto::content::{
    block_count, block_offset, plain_size, stored_size, FileCipher, FileHeader, BLOCK_OVERHEAD,
    BLOCK_SIZE, HEADER_LEN, STORED_BLOCK_SIZE,
};
use crate::crypto::keys::KeyRing;
use crate::crypto::Codec;
use fuser::Errno;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// Block locks are striped: block b takes stripe b % STRIPES, always in ascending order.
const STRIPES: usize = 32;
const BS: u64 = BLOCK_SIZE as u64;

/// The open state of one regular file, shared by all its handles and hard links.
pub struct Content {
    ino: u64,
    cipher: FileCipher,
    /// Plaintext size. Readers and in-place writers share it; extending writers and truncate
    /// take it exclusively, because they move the final block.
    size: RwLock<u64>,
    /// Lock-free copy of `size` for getattr.
    size_hint: AtomicU64,
    stripes: [RwLock<()>; STRIPES],
}

fn eio() -> Errno {
    Errno::EIO
}

fn io(e: std::io::Error) -> Errno {
    Errno::from(e)
}

/// One contiguous run of bytes to put at a backing offset.
struct Segment {
    offset: u64,
    bytes: Vec<u8>,
}

impl Content {
    /// Reads the header of the backing file behind `fd` (or makes a new one for an empty file).
    pub fn load(ino: u64, fd: RawFd, keys: &KeyRing, codec: Codec) -> Result<Self, Errno> {
        let st = sys::fstat(fd).map_err(io)?;
        let stored = st.st_size as u64;
        let (header, size) = if stored == 0 {
            (FileHeader::new_random(), 0)
        } else {
            let mut raw = [0u8; HEADER_LEN];
            let n = sys::pread(fd, &mut raw, 0).map_err(io)?;
            let header = FileHeader::decode(&raw[..n]).map_err(|e| {
                audit::integrity_failure("header", ino, &e.to_string());
                eio()
            })?;
            let size = plain_size(stored).map_err(|e| {
                audit::integrity_failure("size", ino, &e.to_string());
                eio()
            })?;
            (header, size)
        };
        Ok(Self {
            ino,
            cipher: codec.file_cipher(keys, &header),
            size: RwLock::new(size),
            size_hint: AtomicU64::new(size),
            stripes: std::array::from_fn(|_| RwLock::new(())),
        })
    }

    pub fn size(&self) -> u64 {
        self.size_hint.load(Ordering::Acquire)
    }

    fn stripe_ids(b0: u64, b1: u64) -> Vec<usize> {
        if b1 - b0 + 1 >= STRIPES as u64 {
            return (0..STRIPES).collect();
        }
        let mut ids: Vec<usize> = (b0..=b1).map(|b| (b % STRIPES as u64) as usize).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn read_lock(&self, b0: u64, b1: u64) -> Vec<RwLockReadGuard<'_, ()>> {
        Self::stripe_ids(b0, b1)
            .into_iter()
            .map(|i| self.stripes[i].read())
            .collect()
    }

    fn write_lock(&self, b0: u64, b1: u64) -> Vec<RwLockWriteGuard<'_, ()>> {
        Self::stripe_ids(b0, b1)
            .into_iter()
            .map(|i| self.stripes[i].write())
            .collect()
    }

    fn block_len(size: u64, b: u64) -> usize {
        (size - b * BS).min(BS) as usize
    }

    /// Decrypts blocks `b0..=b1` of a file of `size` bytes into `out` (block-aligned).
    fn open_blocks(
        &self,
        fd: RawFd,
        b0: u64,
        b1: u64,
        size: u64,
        out: &mut [u8],
    ) -> Result<(), Errno> {
        let last = block_count(size) - 1;
        let start = block_offset(b0);
        let end = block_offset(b1 + 1).min(stored_size(size));
        let mut stored = vec![0u8; (end - start) as usize];
        let n = sys::pread(fd, &mut stored, start).map_err(io)?;
        if n != stored.len() {
            audit::integrity_failure("block", self.ino, "backing file is shorter than its blocks");
            return Err(eio());
        }
        for (i, chunk) in stored.chunks(STORED_BLOCK_SIZE).enumerate() {
            let b = b0 + i as u64;
            let dst = &mut out[i * BLOCK_SIZE..];
            if let Err(e) = self.cipher.open_block(b, b == last, chunk, dst) {
                audit::integrity_failure("block", self.ino, &format!("block {b}: {e}"));
                return Err(eio());
            }
        }
        Ok(())
    }

    /// Seals plaintext blocks starting at `b0` (each BLOCK_SIZE except possibly the last).
    fn seal_blocks(&self, b0: u64, plain: &[u8], final_block: Option<u64>) -> Vec<u8> {
        let nblocks = plain.len().div_ceil(BLOCK_SIZE);
        let mut out = vec![0u8; plain.len() + nblocks * BLOCK_OVERHEAD];
        let mut pos = 0;
        for (i, chunk) in plain.chunks(BLOCK_SIZE).enumerate() {
            let b = b0 + i as u64;
            let len = chunk.len() + BLOCK_OVERHEAD;
            self.cipher
                .seal_block(b, Some(b) == final_block, chunk, &mut out[pos..pos + len]);
            pos += len;
        }
        out
    }

    pub fn read(&self, fd: RawFd, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let size = self.size.read();
        if offset >= *size || len == 0 {
            return Ok(Vec::new());
        }
        let end = (offset + len as u64).min(*size);
        let (b0, b1) = (offset / BS, (end - 1) / BS);
        let _locks = self.read_lock(b0, b1);
        let mut plain = vec![0u8; ((b1 - b0 + 1) * BS) as usize];
        self.open_blocks(fd, b0, b1, *size, &mut plain)?;
        let from = (offset - b0 * BS) as usize;
        plain.truncate((end - b0 * BS) as usize);
        plain.drain(..from);
        Ok(plain)
    }

    pub fn write(&self, fd: RawFd, offset: u64, data: &[u8]) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
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
    fn write_within(&self, fd: RawFd, offset: u64, data: &[u8], size: u64) -> Result<(), Errno> {
        let end = offset + data.len() as u64;
        let (b0, b1) = (offset / BS, (end - 1) / BS);
        let last = block_count(size) - 1;
        let span_end = ((b1 + 1) * BS).min(size);
        let mut plain = vec![0u8; (span_end - b0 * BS) as usize];
        if offset > b0 * BS || (b0 == b1 && end < span_end) {
            self.open_blocks(fd, b0, b0, size, &mut plain)?;
        }
        if b1 != b0 && end < span_end {
            let at = ((b1 - b0) * BS) as usize;
            self.open_blocks(fd, b1, b1, size, &mut plain[at..])?;
        }
        let from = (offset - b0 * BS) as usize;
        plain[from..from + data.len()].copy_from_slice(data);
        let sealed = self.seal_blocks(b0, &plain, Some(last));
        // The blocks may be holes in the backing file: reserve first, so a full disk fails the
        // write cleanly instead of tearing a block half-way.
        reserve(fd, block_offset(b0), sealed.len() as u64)?;
        sys::pwrite_all(fd, &sealed, block_offset(b0)).map_err(io)
    }

    /// A write past the end: the old final block loses its flag, the header appears if the
    /// file was empty, and the space is reserved first so a full disk fails cleanly.
    fn write_extending(
        &self,
        fd: RawFd,
        offset: u64,
        data: &[u8],
        size: &mut u64,
    ) -> Result<(), Errno> {
        let old = *size;
        let end = offset + data.len() as u64;
        let (b0, b1) = (offset / BS, (end - 1) / BS);
        let old_last = (old > 0).then(|| block_count(old) - 1);
        let mut segments = Vec::new();
        if old == 0 {
            segments.push(Segment {
                offset: 0,
                bytes: self.cipher.header_bytes().to_vec(),
            });
        }
        // Stored bytes of the old final block, to restore it if the write fails half-way.
        let mut undo: Option<Segment> = None;
        let first = match old_last {
            Some(l) if l < b0 => {
                let mut block = vec![0u8; BLOCK_SIZE];
                self.open_blocks(fd, l, l, old, &mut block)?;
                undo = Some(self.stored_block(fd, l, old)?);
                segments.push(Segment {
                    offset: block_offset(l),
                    bytes: self.seal_blocks(l, &block, None),
                });
                b0
            }
            Some(l) => {
                // The write rewrites blocks b0..=l in place, including the old final block.
                undo = Some(self.stored_block(fd, l, old)?);
                b0
            }
            None => b0,
        };
        let mut plain = vec![0u8; (end - first * BS) as usize];
        if offset > first * BS && old_last.is_some_and(|l| l >= first) {
            // Only the first block's prefix survives; it may be the old final block.
            let keep = Self::block_len(old, first);
            let mut block = vec![0u8; BLOCK_SIZE];
            self.open_blocks(fd, first, first, old, &mut block)?;
            plain[..keep].copy_from_slice(&block[..keep]);
        }
        let from = (offset - first * BS) as usize;
        plain[from..].copy_from_slice(data);
        segments.push(Segment {
            offset: block_offset(first),
            bytes: self.seal_blocks(first, &plain, Some(b1)),
        });
        let segments = coalesce(segments);

        let old_stored = stored_size(old);
        for s in &segments {
            reserve(fd, s.offset, s.bytes.len() as u64)?;
        }
        for s in &segments {
            if let Err(e) = sys::pwrite_all(fd, &s.bytes, s.offset) {
                self.restore(fd, old_stored, undo.as_ref());
                return Err(io(e));
            }
        }
        *size = end;
        self.size_hint.store(end, Ordering::Release);
        Ok(())
    }

    fn stored_block(&self, fd: RawFd, b: u64, size: u64) -> Result<Segment, Errno> {
        let offset = block_offset(b);
        let len = Self::block_len(size, b) + BLOCK_OVERHEAD;
        let mut bytes = vec![0u8; len];
        if sys::pread(fd, &mut bytes, offset).map_err(io)? != len {
            return Err(eio());
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

    pub fn truncate(&self, fd: RawFd, new: u64) -> Result<(), Errno> {
        let mut size = self.size.write();
        let old = *size;
        if new > old {
            // The final block of the longer file holds zeros; everything between is a hole.
            return self.write_extending(fd, new - 1, &[0], &mut size);
        }
        if new < old && new > 0 {
            let last = block_count(new) - 1;
            let mut block = vec![0u8; BLOCK_SIZE];
            self.open_blocks(fd, last, last, old, &mut block)?;
            let keep = Self::block_len(new, last);
            let sealed = self.seal_blocks(last, &block[..keep], Some(last));
            sys::ftruncate(fd, stored_size(new)).map_err(io)?;
            sys::pwrite_all(fd, &sealed, block_offset(last)).map_err(io)?;
        } else {
            sys::ftruncate(fd, stored_size(new)).map_err(io)?;
        }
        *size = new;
        self.size_hint.store(new, Ordering::Release);
        Ok(())
    }

    /// fallocate(2): allocate (optionally extending), punch a hole or zero a range.
    pub fn fallocate(&self, fd: RawFd, offset: u64, len: u64, mode: i32) -> Result<(), Errno> {
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        if mode & !(PUNCH | ZERO | KEEP) != 0 || (mode & PUNCH != 0 && mode & KEEP == 0) {
            return Err(Errno::EOPNOTSUPP);
        }
        let end = offset.checked_add(len).ok_or(Errno::EFBIG)?;
        if mode & (PUNCH | ZERO) != 0 {
            self.zero_range(fd, offset, end)?;
        } else {
            let from = stored_size(offset.min(self.size()));
            match sys::fallocate(fd, KEEP, from, stored_size(end).saturating_sub(from)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => return Err(io(e)),
            }
        }
        if mode & KEEP == 0 && end > self.size() {
            let mut size = self.size.write();
            if end > *size {
                self.write_extending(fd, end - 1, &[0], &mut size)?;
            }
        }
        Ok(())
    }

    /// Zeroes [offset, end) within the file: whole inner blocks become backing holes (which
    /// read as zeros), partial and final blocks are rewritten with zeros.
    fn zero_range(&self, fd: RawFd, offset: u64, end: u64) -> Result<(), Errno> {
        let size = self.size.write();
        let end = end.min(*size);
        if offset >= end {
            return Ok(());
        }
        let last = block_count(*size) - 1;
        let first_whole = offset.div_ceil(BS);
        let end_whole = (end / BS).min(last);
        if first_whole < end_whole {
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

    fn write_zeros(&self, fd: RawFd, from: u64, to: u64, size: u64) -> Result<(), Errno> {
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

    fn stored_block_is_zero(&self, fd: RawFd, b: u64, size: u64) -> Result<bool, Errno> {
        let stored = self.stored_block(fd, b, size)?;
        Ok(stored.bytes.iter().all(|x| *x == 0))
    }

    /// SEEK_DATA / SEEK_HOLE in plaintext offsets, from the backing file's holes. Reporting
    /// data where there are zeros is always allowed, so rounding favours data.
    pub fn seek(&self, fd: RawFd, offset: u64, whence: i32) -> Result<u64, Errno> {
        let size = *self.size.read();
        if offset >= size {
            return Err(Errno::ENXIO);
        }
        let block_of =
            |stored: u64| stored.saturating_sub(HEADER_LEN as u64) / STORED_BLOCK_SIZE as u64;
        let start = block_offset(offset / BS);
        match whence {
            libc::SEEK_DATA => {
                let data = sys::lseek(fd, start, libc::SEEK_DATA).map_err(io)?;
                Ok((block_of(data) * BS).max(offset).min(size))
            }
            libc::SEEK_HOLE => {
                let hole = sys::lseek(fd, start, libc::SEEK_HOLE).map_err(io)?;
                let last = block_count(size) - 1;
                // The backing hole starts inside block k. Block k is a hole only if it is all
                // zeros (its head may lie in an allocated page); otherwise k+1 is, since a data
                // block never contains a page-sized run of zeros.
                let mut k = block_of(hole);
                if k < last && !self.stored_block_is_zero(fd, k, size)? {
                    k += 1;
                }
                Ok(if k >= last {
                    size
                } else {
                    (k * BS).max(offset)
                })
            }
            _ => Err(Errno::EINVAL),
        }
    }
}

/// Allocates backing space without changing the size; a filesystem without fallocate gets
/// the old behaviour (ENOSPC may then surface from the write itself).
fn reserve(fd: RawFd, offset: u64, len: u64) -> Result<(), Errno> {
    match sys::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, offset, len) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// Merges segments that touch, so the common case is one pwrite.
fn coalesce(segments: Vec<Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
    for s in segments {
        match out.last_mut() {
            Some(prev) if prev.offset + prev.bytes.len() as u64 == s.offset => {
                prev.bytes.extend_from_slice(&s.bytes)
            }
            _ => out.push(s),
        }
    }
    out
}
