//! Merkle trees of canonical REAPI `Directory` records.
//!
//! Canonical form: within a directory, files, subdirectories and symlinks are
//! each sorted by name bytes; a file records its digest and executable bit; a
//! symlink records its target verbatim (never followed). Equal trees therefore
//! have equal root digests, whatever order they were created in on disk.
//!
//! Trees of root file systems also keep POSIX metadata ([`Meta`]: full mode
//! including setuid and sticky bits, uid, gid) and device nodes, as REAPI
//! `NodeProperties`, so assembling a rootfs needs no root privileges. Trees
//! without metadata (the outputs of `run` steps) encode exactly as before.

mod capture;
mod edit;
mod materialize;
mod walk;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cas::Cas;
use crate::error::Result;
use crate::reapi;
use crate::{Digest, DigestFunction};

pub use capture::{MAX_DEPTH, capture, digest_on_disk, hash_file};
pub use edit::EditError;
pub use materialize::{Placement, materialize};
pub use walk::{Entry, first_missing, list, read_directory, walk};

/// Ownership and permission bits of a rootfs entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Meta {
    /// Permission bits, including setuid, setgid and sticky (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The kind of a special file kept as metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Char,
    Block,
    Fifo,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Char => "char",
            DeviceKind::Block => "block",
            DeviceKind::Fifo => "fifo",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceKind> {
        match s {
            "char" | "c" => Some(DeviceKind::Char),
            "block" | "b" => Some(DeviceKind::Block),
            "fifo" | "p" => Some(DeviceKind::Fifo),
            _ => None,
        }
    }
}

/// One entry of a tree being assembled in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File {
        digest: Digest,
        executable: bool,
        meta: Option<Meta>,
    },
    Symlink {
        target: String,
        meta: Option<Meta>,
    },
    /// A device node or FIFO: metadata only, never created on disk by Strata.
    Device {
        kind: DeviceKind,
        major: u32,
        minor: u32,
        meta: Option<Meta>,
    },
    /// A directory assembled entry by entry.
    Dir(TreeBuilder),
    /// A directory that already exists in the store, by root digest.
    Stored(Digest),
}

impl Node {
    /// A plain file (no rootfs metadata).
    pub fn file(digest: Digest, executable: bool) -> Node {
        Node::File {
            digest,
            executable,
            meta: None,
        }
    }
}

/// Assembles a tree from entries at relative paths, then encodes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeBuilder {
    entries: BTreeMap<String, Node>,
    meta: Option<Meta>,
}

/// A tree's encoded directories, root first, ready to be hashed or stored.
pub struct EncodedTree {
    pub root: Digest,
    /// Every directory assembled by the builder with its encoding (stored
    /// subtrees are referenced, not repeated).
    pub directories: Vec<(Digest, Vec<u8>)>,
}

/// A device node's kind, major and minor numbers.
pub(crate) type DeviceSpec = (DeviceKind, u32, u32);

/// Name of the node property holding a device's kind and numbers.
const DEVICE_PROPERTY: &str = "strata.device";

pub(crate) fn node_properties(
    meta: Option<Meta>,
    device: Option<DeviceSpec>,
) -> Option<reapi::NodeProperties> {
    if meta.is_none() && device.is_none() {
        return None;
    }
    let mut properties = Vec::new();
    if let Some(m) = meta {
        properties.push(reapi::NodeProperty {
            name: "gid".into(),
            value: m.gid.to_string(),
        });
    }
    if let Some((kind, major, minor)) = device {
        properties.push(reapi::NodeProperty {
            name: DEVICE_PROPERTY.into(),
            value: format!("{} {major}:{minor}", kind.name()),
        });
    }
    if let Some(m) = meta {
        properties.push(reapi::NodeProperty {
            name: "uid".into(),
            value: m.uid.to_string(),
        });
    }
    Some(reapi::NodeProperties {
        properties,
        mtime: None,
        unix_mode: meta.map(|m| reapi::UInt32Value { value: m.mode }),
    })
}

/// Reads back what [`node_properties`] wrote; `Err` on anything else.
pub(crate) fn parse_properties(
    p: Option<&reapi::NodeProperties>,
) -> std::result::Result<(Option<Meta>, Option<DeviceSpec>), String> {
    let Some(p) = p else { return Ok((None, None)) };
    let mut uid = None;
    let mut gid = None;
    let mut device = None;
    for prop in &p.properties {
        match prop.name.as_str() {
            "uid" => {
                uid = Some(
                    prop.value
                        .parse::<u32>()
                        .map_err(|_| format!("bad uid {:?}", prop.value))?,
                )
            }
            "gid" => {
                gid = Some(
                    prop.value
                        .parse::<u32>()
                        .map_err(|_| format!("bad gid {:?}", prop.value))?,
                )
            }
            DEVICE_PROPERTY => {
                let (kind, numbers) = prop.value.split_once(' ').ok_or("bad device property")?;
                let (major, minor) = numbers.split_once(':').ok_or("bad device numbers")?;
                device = Some((
                    DeviceKind::parse(kind).ok_or("bad device kind")?,
                    major.parse().map_err(|_| "bad major number")?,
                    minor.parse().map_err(|_| "bad minor number")?,
                ));
            }
            other => return Err(format!("unknown node property {other:?}")),
        }
    }
    let meta = match (p.unix_mode.as_ref(), uid, gid) {
        (Some(mode), Some(uid), Some(gid)) if mode.value <= 0o7777 => Some(Meta {
            mode: mode.value,
            uid,
            gid,
        }),
        (None, None, None) => None,
        _ => return Err("incomplete or invalid mode, uid and gid".into()),
    };
    Ok((meta, device))
}

impl TreeBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets the metadata of this directory itself.
    pub fn set_meta(&mut self, meta: Option<Meta>) {
        self.meta = meta;
    }

    pub fn meta(&self) -> Option<Meta> {
        self.meta
    }

    /// Inserts `node` at the `/`-separated relative `path`, creating parent
    /// directories. Returns an error message if a parent is not an assembled
    /// directory or the path is not a clean relative path. (To edit inside
    /// stored subtrees, see [`TreeBuilder::insert_at`].) A path of more than
    /// [`MAX_DEPTH`] components is refused, as [`capture`] refuses such folders.
    pub fn insert(&mut self, path: &str, node: Node) -> std::result::Result<(), String> {
        let parts = clean_parts(path)?;
        if parts.len() > MAX_DEPTH {
            return Err(format!(
                "`{}/…` is nested more than {MAX_DEPTH} levels deep; Strata stores trees at most {MAX_DEPTH} levels deep",
                parts[..16].join("/")
            ));
        }
        let (last, parents) = parts.split_last().expect("non-empty");
        let mut dir = self;
        for part in parents {
            let entry = dir
                .entries
                .entry((*part).to_string())
                .or_insert_with(|| Node::Dir(TreeBuilder::new()));
            dir = match entry {
                Node::Dir(d) => d,
                _ => return Err(format!("`{part}` in `{path}` is not a directory")),
            };
        }
        dir.entries.insert((*last).to_string(), node);
        Ok(())
    }

    /// Encodes every directory and computes the root digest. A loop with
    /// the path on the heap: a tree built from an archive or captured from
    /// disk may be deeper than a worker thread's stack allows recursion.
    pub fn encode(&self, function: DigestFunction) -> EncodedTree {
        let mut directories = Vec::new();
        let mut levels = vec![EncodingLevel::new("", self)];
        let root = loop {
            let top = levels.last_mut().expect("the root level is popped last");
            match top.entries.next() {
                Some((name, Node::Dir(sub))) => levels.push(EncodingLevel::new(name, sub)),
                Some((name, node)) => add_entry(&mut top.dir, name, node, function),
                None => {
                    let done = levels.pop().expect("not empty");
                    let bytes = prost::Message::encode_to_vec(&done.dir);
                    let digest = function.of_bytes(&bytes);
                    directories.push((digest, bytes));
                    match levels.last_mut() {
                        Some(parent) => parent.dir.directories.push(reapi::DirectoryNode {
                            name: done.name.to_string(),
                            digest: Some(digest.to_proto()),
                        }),
                        None => break digest,
                    }
                }
            }
        };
        directories.reverse();
        EncodedTree { root, directories }
    }

    /// Encodes the tree and stores every directory record in `cas`.
    pub fn store(&self, cas: &Cas) -> Result<Digest> {
        let encoded = self.encode(cas.function());
        for (digest, bytes) in &encoded.directories {
            if !cas.contains(digest) {
                cas.put_bytes(bytes)?;
            }
        }
        Ok(encoded.root)
    }
}

impl Drop for TreeBuilder {
    /// Takes nested folders apart in a loop: the derived drop recurses once
    /// per level and overflows a worker thread's stack on a deep tree.
    fn drop(&mut self) {
        let mut pending = vec![std::mem::take(&mut self.entries)];
        while let Some(entries) = pending.pop() {
            for (_, node) in entries {
                if let Node::Dir(mut sub) = node {
                    pending.push(std::mem::take(&mut sub.entries));
                }
            }
        }
    }
}

/// A folder being encoded: the entries still to add, and its record.
struct EncodingLevel<'a> {
    name: &'a str,
    entries: std::collections::btree_map::Iter<'a, String, Node>,
    dir: reapi::Directory,
}

impl<'a> EncodingLevel<'a> {
    fn new(name: &'a str, builder: &'a TreeBuilder) -> Self {
        EncodingLevel {
            name,
            entries: builder.entries.iter(),
            dir: reapi::Directory {
                node_properties: node_properties(builder.meta, None),
                ..Default::default()
            },
        }
    }
}

/// Adds an entry that is not an assembled folder to its folder's record.
/// Entries come in name order, so each list of the record stays sorted.
fn add_entry(dir: &mut reapi::Directory, name: &str, node: &Node, function: DigestFunction) {
    let name = name.to_string();
    match node {
        Node::File {
            digest,
            executable,
            meta,
        } => dir.files.push(reapi::FileNode {
            name,
            digest: Some(digest.to_proto()),
            is_executable: *executable,
            node_properties: node_properties(*meta, None),
        }),
        Node::Device {
            kind,
            major,
            minor,
            meta,
        } => dir.files.push(reapi::FileNode {
            name,
            digest: Some(function.of_bytes(b"").to_proto()),
            is_executable: false,
            node_properties: node_properties(*meta, Some((*kind, *major, *minor))),
        }),
        Node::Symlink { target, meta } => dir.symlinks.push(reapi::SymlinkNode {
            name,
            target: target.clone(),
            node_properties: node_properties(*meta, None),
        }),
        Node::Stored(digest) => dir.directories.push(reapi::DirectoryNode {
            name,
            digest: Some(digest.to_proto()),
        }),
        Node::Dir(_) => unreachable!("assembled folders are encoded as levels of their own"),
    }
}

/// The components of a clean relative path (`a/b`, no `.`, `..` or empties
/// between separators; leading and trailing `/` are ignored).
pub(crate) fn clean_parts(path: &str) -> std::result::Result<Vec<&str>, String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty()
        || parts
            .iter()
            .any(|p| *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err(format!("`{path}` is not a clean relative path"));
    }
    Ok(parts)
}

/// Joins a `/`-separated relative path onto `base`.
pub fn rel_join(base: &Path, rel: &str) -> PathBuf {
    rel.split('/')
        .filter(|p| !p.is_empty())
        .fold(base.to_path_buf(), |p, c| p.join(c))
}
