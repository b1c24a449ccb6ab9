//! Crash-safe publication of files: write to a temporary file in the same
//! file system, fsync, then rename. A reader (or a crash) sees either no file
//! or the whole file, never a prefix.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Result, StoreError};

/// Publishes `bytes` at `dest` atomically with the given mode.
/// `tmp_dir` must be on the same file system as `dest`.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(tmp_dir)
        .map_err(|e| StoreError::io("cannot create a temporary file", tmp_dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| StoreError::io("cannot write", tmp.path(), e))?;
    publish(tmp, dest, mode)
}

/// Renames a fully written temporary file into place with `mode`.
pub fn publish(tmp: tempfile::NamedTempFile, dest: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
        .map_err(|e| StoreError::io("cannot set permissions", tmp.path(), e))?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| StoreError::io("cannot create folder", parent, e))?;
    }
    tmp.persist(dest)
        .map_err(|e| StoreError::io("cannot rename into place", dest, e.error))?;
    Ok(())
}
