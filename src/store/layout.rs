//! The internal objects of a backing directory: its id file and the side files of long names,
//! read bounded and checked, written crash-safely beside and renamed into place.

use super::confined;
use crate::crypto::names::{
    long_name_side_file, NameCipher, DIRID_FILE, DIR_ID_LEN, MAX_SIDE_FILE_LEN, TEMP_PREFIX,
};
use crate::sys;
use std::io;

/// Reads a directory's id: a regular file of exactly `DIR_ID_LEN` bytes, or a hostile error.
pub fn read_dir_id(dir_fd: i32) -> io::Result<[u8; DIR_ID_LEN]> {
    let name = sys::cstring(DIRID_FILE.as_bytes())?;
    let bytes = confined::read_bounded(dir_fd, &name, DIR_ID_LEN)?;
    <[u8; DIR_ID_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| confined::hostile(format!("directory id file holds {} bytes", bytes.len())))
}

/// Writes a directory's id file crash-safely (gocryptfs lost directories whose id file was empty
/// after a crash): a fsync'd temporary renamed into place without replacing anything, so two
/// racing repairs cannot both write one, then the directory fsync'd.
pub fn write_dir_id(dir_fd: i32, id: &[u8; DIR_ID_LEN]) -> io::Result<()> {
    let name = sys::cstring(DIRID_FILE.as_bytes())?;
    confined::put_file(
        dir_fd,
        &name,
        id,
        0o400,
        TEMP_PREFIX,
        confined::Existing::Keep,
    )
}

/// The full encoding of the long name `hashed` from its side file; a hostile error when the
/// side file is not a bounded regular file or does not hash to `hashed`.
pub fn read_long_name(dir_fd: i32, hashed: &str) -> io::Result<Vec<u8>> {
    let side = sys::cstring(long_name_side_file(hashed).as_bytes())?;
    let full = confined::read_bounded(dir_fd, &side, MAX_SIDE_FILE_LEN)?;
    if NameCipher::long_name_matches(hashed, &full) {
        Ok(full)
    } else {
        Err(confined::hostile(
            "the side file does not belong to this entry",
        ))
    }
}
