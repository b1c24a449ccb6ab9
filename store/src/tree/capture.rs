//! Capturing folders on disk (a step's outputs) into the store.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
        let node = capture_node(cas, function, base, rel)?;
        builder
            .insert(rel, node)
            .map_err(|reason| StoreError::Unsupported {
                path: base.join(rel),
                reason,
            })?;
    }
    Ok(builder)
}

/// The deepest a folder captured from disk may lie below the capture's base
/// (`$OUT`): a folder at `a/b` is 2 levels deep. Deeper trees are refused
/// with [`StoreError::TooDeep`]: nothing useful nests that deep, REAPI
/// servers and tools walk trees recursively, and the whole path of such a
/// folder is longer than PATH_MAX.
pub const MAX_DEPTH: usize = 1024;

/// A folder being captured: its entries still to read, and what it holds so far.
struct Level {
    name: String,
    pending: Vec<(String, PathBuf)>,
    builder: TreeBuilder,
}

/// Captures `base/rel` as a node. Folders are walked in a loop with the
/// path on the heap, so depth costs no stack; deeper than [`MAX_DEPTH`]
/// below `base` is an error naming the path.
fn capture_node(
    cas: Option<&Cas>,
    function: DigestFunction,
    base: &Path,
    rel: &str,
) -> Result<Node> {
    let path = base.join(rel);
    let meta = fs::symlink_metadata(&path).map_err(|e| StoreError::io("cannot read", &path, e))?;
    if !meta.is_dir() {
        return leaf(cas, function, &path, &meta);
    }
    let base_depth = rel.split('/').filter(|p| !p.is_empty()).count();
    let mut levels = vec![Level {
        name: String::new(),
        pending: entries(&path)?,
        builder: TreeBuilder::new(),
    }];
    loop {
        let top = levels.last_mut().expect("the root level is popped last");
        if let Some((name, child)) = top.pending.pop() {
            let meta = fs::symlink_metadata(&child)
                .map_err(|e| StoreError::io("cannot read", &child, e))?;
            if !meta.is_dir() {
                let node = leaf(cas, function, &child, &meta)?;
                top.builder.insert_child(name, node);
            } else if base_depth + levels.len() > MAX_DEPTH {
                return Err(StoreError::TooDeep {
                    path: shown(rel, levels.iter().skip(1).map(|l| l.name.as_str())),
                    limit: MAX_DEPTH,
                });
            } else {
                levels.push(Level {
                    name,
                    pending: entries(&child)?,
                    builder: TreeBuilder::new(),
                });
            }
            continue;
        }
        let done = levels.pop().expect("not empty");
        let node = Node::Dir(done.builder);
        match levels.last_mut() {
            Some(parent) => parent.builder.insert_child(done.name, node),
            None => return Ok(node),
        }
    }
}

/// The first levels of a too deep path, enough to find it.
fn shown<'a>(rel: &'a str, below: impl Iterator<Item = &'a str>) -> String {
    const SHOWN: usize = 16;
    let parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty())
        .chain(below)
        .collect();
    let mut path = parts[..parts.len().min(SHOWN)].join("/");
    if parts.len() > SHOWN {
        path.push_str("/…");
    }
    path
}

/// The entries of the folder `path` with their UTF-8 names.
fn entries(path: &Path) -> Result<Vec<(String, PathBuf)>> {
    let rd = fs::read_dir(path).map_err(|e| StoreError::io("cannot list", path, e))?;
    let mut found = Vec::new();
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
        found.push((name, child));
    }
    Ok(found)
}

/// A file or symlink (anything but a folder) as a node; with `cas`, a
/// file's content is moved into the store.
fn leaf(
    cas: Option<&Cas>,
    function: DigestFunction,
    path: &Path,
    meta: &fs::Metadata,
) -> Result<Node> {
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
