//! Where an encrypted symlink target is stored: inline as the backing symlink's target, or, when
//! its encoding is longer than a backing target may be, a marked head inline and the tail in a
//! `trusted.` xattr of the same symlink (FORMAT.md §7). Shared by the daemon and fsck.

use super::layout::TEMP_PREFIX;
use crate::store::confined::hostile;
use crate::sys;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// The longest backing symlink target (PATH_MAX less its NUL).
const INLINE_MAX: usize = 4095;
/// The long form's inline part: a mark, then this many characters of the encoding. Its length,
/// 3,001, is one more than a multiple of four, which unpadded base64url never is, so the size
/// of the backing symlink alone tells the two forms apart.
const HEAD: usize = 3000;
const LONG_MARK: u8 = b'.';
const LONG_LEN: u64 = HEAD as u64 + 1;
/// The tail of the longest legal target (4,095 bytes: 5,482 characters encoded) is 2,482.
const MAX_TAIL: usize = 4096;
const TAIL_XATTR: &CStr = c"trusted.secretfs.target";

/// Creates the symlink `name` in `dir` holding the encoded target, crash-safely: a long one is
/// made under a temporary name with its tail set, then renamed into place.
pub fn create(dir: RawFd, name: &CStr, encoded: &[u8]) -> io::Result<()> {
    if encoded.len() <= INLINE_MAX {
        return sys::symlinkat(&sys::cstring(encoded)?, dir, name);
    }
    let mut head = vec![LONG_MARK];
    head.extend_from_slice(&encoded[..HEAD]);
    let tmp = super::temp_name(TEMP_PREFIX)?;
    sys::symlinkat(&sys::cstring(&head)?, dir, &tmp)?;
    let result = (|| {
        let link = sys::openat(dir, &tmp, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        sys::setxattr(
            link.as_raw_fd(),
            TAIL_XATTR,
            &encoded[HEAD..],
            libc::XATTR_CREATE,
        )?;
        sys::renameat2(dir, &tmp, dir, name, libc::RENAME_NOREPLACE)
    })();
    if result.is_err() {
        let _ = sys::unlinkat(dir, &tmp, 0);
    }
    result
}

/// The encoded target of the symlink behind `fd` (an O_PATH descriptor), reassembled; a long
/// form without its tail, or with one longer than any legal target has, is hostile.
pub fn read(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut stored = sys::readlink_fd(fd)?;
    if stored.len() as u64 != LONG_LEN {
        return Ok(stored);
    }
    if stored.first() != Some(&LONG_MARK) {
        return Err(hostile("a long symlink target without its mark"));
    }
    let mut tail = vec![0u8; MAX_TAIL + 1];
    let n = sys::getxattr(fd, TAIL_XATTR, &mut tail)
        .map_err(|e| hostile(format!("the tail of a long symlink target: {e}")))?;
    if n > MAX_TAIL {
        return Err(hostile("the tail of a long symlink target is too long"));
    }
    stored.remove(0);
    stored.extend_from_slice(&tail[..n]);
    Ok(stored)
}

/// The length of the encoded target, from the backing symlink's size (and, for the long form
/// only, its tail's size): what the plaintext length is computed from.
pub fn encoded_len(fd: RawFd, backing_size: u64) -> u64 {
    if backing_size != LONG_LEN {
        return backing_size;
    }
    let tail = sys::getxattr(fd, TAIL_XATTR, &mut [])
        .unwrap_or(0)
        .min(MAX_TAIL);
    HEAD as u64 + tail as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_targets_round_trip_through_the_head_and_the_tail() {
        if !crate::testing::root_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = crate::store::confined::open_root(dir.path()).unwrap();
        for len in [10usize, 4095, 4096, 5482] {
            let encoded: Vec<u8> = (0..len).map(|i| b'A' + (i % 26) as u8).collect();
            let name = sys::cstring(format!("l{len}").as_bytes()).unwrap();
            create(d.as_raw_fd(), &name, &encoded).unwrap();
            let link =
                sys::openat(d.as_raw_fd(), &name, libc::O_PATH | libc::O_NOFOLLOW, 0).unwrap();
            assert_eq!(read(link.as_raw_fd()).unwrap(), encoded, "{len}");
            let st = sys::fstat(link.as_raw_fd()).unwrap();
            assert_eq!(encoded_len(link.as_raw_fd(), st.st_size as u64), len as u64);
        }
        // Only the symlinks are left: no temporary.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
        // A long form whose tail was removed is hostile, not a shorter target.
        let link =
            sys::openat(d.as_raw_fd(), c"l5482", libc::O_PATH | libc::O_NOFOLLOW, 0).unwrap();
        sys::removexattr(link.as_raw_fd(), TAIL_XATTR).unwrap();
        assert!(crate::store::confined::is_hostile(
            &read(link.as_raw_fd()).unwrap_err()
        ));
    }
}
