//! Capturing folders on disk (a step's outputs) into the store.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::cas::Cas;
use crate::error::{Result, StoreError};
use crate::{Digest, DigestFunction};

use super::{Node, TreeBuilder};

/// Captures the on-disk entries `paths` (relative to `base`) into the store and
/// returns the tree holding exactly them. Regular files are moved into the
/// store, so `base` must be on the store's file system and is consumed.
/// Symlinks are recorded verbatim. Other file types and names that are not
/// UTF-8 are refused, naming the path.
pub fn capture(cas: &Cas, base: &Path, paths: &[String]) -> Result<Digest> {
    builder_of(Some(cas), cas.function(), base, paths)?.store(cas)
}

/// The root digest [`capture`] would return, computed without storing or
/// moving anything.
pub fn digest_on_disk(function: DigestFunction, base: &Path, paths: &[String]) -> Result<Digest> {
    Ok(builder_of(None, function, base, paths)?
        .encode(function)
        .root)
}

fn builder_of(
    cas: Option<&Cas>,
    function: DigestFunction,
    base: &Path,
    paths: &[String],
) -> Result<TreeBuilder> {
    let mut builder = TreeBuilder::new();
    for rel in paths {
        let node = capture_node(cas, function, &base.join(rel))?;
        builder
            .insert(rel, node)
            .map_err(|reason| StoreError::Unsupported {
                path: base.join(rel),
                reason,
            })?;
    }
    Ok(builder)
}

fn capture_node(cas: Option<&Cas>, function: DigestFunction, path: &Path) -> Result<Node> {
    let meta = fs::symlink_metadata(path).map_err(|e| StoreError::io("cannot read", path, e))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target =
            fs::read_link(path).map_err(|e| StoreError::io("cannot read symlink", path, e))?;
        let target =
            target
                .into_os_string()
                .into_string()
                .map_err(|_| StoreError::Unsupported {
                    path: path.to_path_buf(),
                    reason: "symlink target is not valid UTF-8".into(),
                })?;
        Ok(Node::Symlink { target, meta: None })
    } else if ft.is_file() {
        let executable = meta.mode() & 0o111 != 0;
        let digest = match cas {
            Some(cas) => cas.put_file_move(path)?,
            None => {
                hash_file(function, path).map_err(|e| StoreError::io("cannot read", path, e))?
            }
        };
        Ok(Node::File {
            digest,
            executable,
            meta: None,
        })
    } else if ft.is_dir() {
        let mut builder = TreeBuilder::new();
        let rd = fs::read_dir(path).map_err(|e| StoreError::io("cannot list", path, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| StoreError::io("cannot list", path, e))?;
            let child = entry.path();
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| StoreError::Unsupported {
                    path: child.clone(),
                    reason: "file name is not valid UTF-8".into(),
                })?;
            let node = capture_node(cas, function, &child)?;
            builder.insert_child(name, node);
        }
        Ok(Node::Dir(builder))
    } else {
        Err(StoreError::Unsupported {
            path: path.to_path_buf(),
            reason: "only regular files, folders and symlinks can be outputs".into(),
        })
    }
}

/// Hashes a file on disk without storing it.
pub fn hash_file(function: DigestFunction, path: &Path) -> io::Result<Digest> {
    function.of_reader(fs::File::open(path)?)
}
