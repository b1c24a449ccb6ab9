//! Writing stored trees to disk. Every write goes through a cap-std `Dir`
//! handle of the destination, so whatever a tree holds (it may come from an
//! untrusted archive or cache) nothing is written outside it.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, Permissions};

use crate::Digest;
use crate::cas::Cas;
use crate::error::{Result, StoreError};

use super::walk::{Entry, walk};

/// How files are placed when a tree is written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Hard-link read-only blobs where possible (executables are copied, as
    /// their mode differs from the blob's).
    HardLink,
    /// Always copy.
    Copy,
}

/// Writes the stored tree `root` into the existing empty folder `dest`.
/// Files are read-only (0444, or 0555 when executable); folders are 0755.
/// Ownership, special mode bits and device nodes stay metadata: writing them
/// would need privileges, and steps read them from the tree, not the disk.
pub fn materialize(cas: &Cas, root: &Digest, dest: &Path, placement: Placement) -> Result<()> {
    let io_err = |what: &'static str, p: &str, e: io::Error| StoreError::io(what, dest.join(p), e);
    let out = Dir::open_ambient_dir(dest, ambient_authority())
        .map_err(|e| io_err("cannot open", "", e))?;
    let mut shards: HashMap<String, Dir> = HashMap::new();
    for (path, entry) in walk(cas, root)? {
        match entry {
            Entry::Dir { .. } => out
                .create_dir(&path)
                .map_err(|e| io_err("cannot create folder", &path, e))?,
            // A link's target is data, whatever it says (rootfs links are
            // absolute); the link itself is still created inside `out`.
            Entry::Symlink { target, .. } => out
                .symlink_contents(&target, &path)
                .map_err(|e| io_err("cannot create symlink", &path, e))?,
            Entry::Device { .. } => {}
            Entry::File {
                digest, executable, ..
            } => {
                let blob = cas.path(&digest);
                let (Some(shard_path), Some(name)) = (blob.parent(), blob.file_name()) else {
                    return Err(StoreError::Missing { digest });
                };
                let key = shard_path.to_string_lossy().into_owned();
                if !shards.contains_key(&key) {
                    let shard = Dir::open_ambient_dir(shard_path, ambient_authority())
                        .map_err(|_| StoreError::Missing { digest })?;
                    shards.insert(key.clone(), shard);
                }
                let shard = &shards[&key];
                let linked = placement == Placement::HardLink
                    && !executable
                    && shard.hard_link(name, &out, &path).is_ok();
                if !linked {
                    shard.copy(name, &out, &path).map_err(|e| {
                        if e.kind() == io::ErrorKind::NotFound {
                            StoreError::Missing { digest }
                        } else {
                            io_err("cannot copy from the store", &path, e)
                        }
                    })?;
                    let mode = if executable { 0o555 } else { 0o444 };
                    out.set_permissions(
                        &path,
                        Permissions::from_std(std::fs::Permissions::from_mode(mode)),
                    )
                    .map_err(|e| io_err("cannot set permissions", &path, e))?;
                }
            }
        }
    }
    Ok(())
}
