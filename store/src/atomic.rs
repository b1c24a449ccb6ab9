//! Crash-safe publication of files: write to a temporary file in the same
//! file system, make it durable, then rename. A reader (or a crash) sees
//! either no file or the whole file, never a prefix.
//!
//! [`write_atomic`] makes each file durable with its own fsync: for files a
//! build writes a few of (records, the stat cache, `out/`'s state). The
//! store's objects instead go through [`write_temporary`] and [`publish`]
//! with no fsync, and `durability` orders them before what names them.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Result, StoreError};

/// Publishes `bytes` at `dest` atomically with the given mode, synced
/// before the rename. `tmp_dir` must be on the same file system as `dest`.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = write_temporary(tmp_dir, bytes)?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| StoreError::io("cannot write", tmp.path(), e))?;
    publish(tmp, dest, mode)
}

/// `bytes` in a new temporary file in `tmp_dir`, not synced.
pub(crate) fn write_temporary(tmp_dir: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(tmp_dir)
        .map_err(|e| StoreError::io("cannot create a temporary file", tmp_dir, e))?;
    tmp.write_all(bytes)
        .map_err(|e| StoreError::io("cannot write", tmp.path(), e))?;
    Ok(tmp)
}

/// Renames a fully written temporary file into place with `mode`. Durable
/// or not is the caller's business.
pub fn publish(tmp: tempfile::NamedTempFile, dest: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
        .map_err(|e| StoreError::io("cannot set permissions", tmp.path(), e))?;
    let tmp = match tmp.persist(dest) {
        Ok(_) => return Ok(()),
        Err(e) if e.error.kind() == io::ErrorKind::NotFound => e.file,
        Err(e) => return Err(StoreError::io("cannot rename into place", dest, e.error)),
    };
    // The first object of its folder: make the folder, then try again.
    create_parent(dest)?;
    tmp.persist(dest)
        .map_err(|e| StoreError::io("cannot rename into place", dest, e.error))?;
    Ok(())
}

/// Creates the folder `dest` goes in.
pub(crate) fn create_parent(dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| StoreError::io("cannot create folder", parent, e))?;
    }
    Ok(())
}
