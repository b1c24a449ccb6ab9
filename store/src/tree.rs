//! Merkle trees of canonical REAPI `Directory` records.
//!
//! Canonical form: within a directory, files, subdirectories and symlinks are
//! each sorted by name bytes; a file records its digest and executable bit; a
//! symlink records its target verbatim (never followed). Equal trees therefore
//! have equal root digests, whatever order they were created in on disk.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::cas::Cas;
use crate::error::{Result, StoreError};
use crate::reapi;
use crate::{Digest, DigestFunction};

/// One entry of a tree being assembled in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File {
        digest: Digest,
        executable: bool,
    },
    Symlink {
        target: String,
    },
    /// A directory assembled entry by entry.
    Dir(TreeBuilder),
    /// A directory that already exists in the store, by root digest.
    Stored(Digest),
}

/// Assembles a tree from entries at relative paths, then encodes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeBuilder {
    entries: BTreeMap<String, Node>,
}

/// A tree's encoded directories, root first, ready to be hashed or stored.
pub struct EncodedTree {
    pub root: Digest,
    /// Every directory assembled by the builder with its encoding (stored
    /// subtrees are referenced, not repeated).
    pub directories: Vec<(Digest, Vec<u8>)>,
}

impl TreeBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Inserts `node` at the `/`-separated relative `path`, creating parent
    /// directories. Returns an error message if a parent is not a directory or
    /// the path is not a clean relative path.
    pub fn insert(&mut self, path: &str, node: Node) -> std::result::Result<(), String> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(format!("`{path}` is not a clean relative path"));
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

    /// Encodes every directory and computes the root digest.
    pub fn encode(&self, function: DigestFunction) -> EncodedTree {
        let mut directories = Vec::new();
        let root = self.encode_into(function, &mut directories);
        directories.reverse();
        EncodedTree { root, directories }
    }

    fn encode_into(&self, function: DigestFunction, out: &mut Vec<(Digest, Vec<u8>)>) -> Digest {
        let mut dir = reapi::Directory::default();
        for (name, node) in &self.entries {
            match node {
                Node::File { digest, executable } => dir.files.push(reapi::FileNode {
                    name: name.clone(),
                    digest: Some(digest.to_proto()),
                    is_executable: *executable,
                    node_properties: None,
                }),
                Node::Symlink { target } => dir.symlinks.push(reapi::SymlinkNode {
                    name: name.clone(),
                    target: target.clone(),
                    node_properties: None,
                }),
                Node::Dir(sub) => {
                    let digest = sub.encode_into(function, out);
                    dir.directories.push(reapi::DirectoryNode {
                        name: name.clone(),
                        digest: Some(digest.to_proto()),
                    });
                }
                Node::Stored(digest) => dir.directories.push(reapi::DirectoryNode {
                    name: name.clone(),
                    digest: Some(digest.to_proto()),
                }),
            }
        }
        let bytes = prost::Message::encode_to_vec(&dir);
        let digest = function.of_bytes(&bytes);
        out.push((digest, bytes));
        digest
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

/// An entry of a stored tree, as met while walking it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File { digest: Digest, executable: bool },
    Symlink { target: String },
    Dir { digest: Digest },
}

/// Reads a stored directory record.
pub fn read_directory(cas: &Cas, digest: &Digest) -> Result<reapi::Directory> {
    let dir: reapi::Directory = cas.get_message(digest, "a directory")?;
    validate_directory(&dir).map_err(|reason| StoreError::Decode {
        digest: *digest,
        what: "a canonical directory",
        reason,
    })?;
    Ok(dir)
}

/// Refuses records that could make a walk write outside its destination or
/// that are not canonical.
fn validate_directory(dir: &reapi::Directory) -> std::result::Result<(), String> {
    let mut names: Vec<&str> = Vec::new();
    names.extend(dir.files.iter().map(|f| f.name.as_str()));
    names.extend(dir.directories.iter().map(|d| d.name.as_str()));
    names.extend(dir.symlinks.iter().map(|s| s.name.as_str()));
    for name in &names {
        if name.is_empty()
            || *name == "."
            || *name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(format!("invalid entry name {name:?}"));
        }
    }
    let sorted = |v: Vec<&str>| v.windows(2).all(|w| w[0] < w[1]);
    if !sorted(dir.files.iter().map(|f| f.name.as_str()).collect())
        || !sorted(dir.directories.iter().map(|d| d.name.as_str()).collect())
        || !sorted(dir.symlinks.iter().map(|s| s.name.as_str()).collect())
    {
        return Err("entries are not sorted by name".into());
    }
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err("an entry name appears twice".into());
    }
    for digest in dir
        .files
        .iter()
        .map(|f| &f.digest)
        .chain(dir.directories.iter().map(|d| &d.digest))
    {
        match digest {
            Some(d) if Digest::from_proto(d).is_some() => {}
            _ => return Err("an entry has no valid digest".into()),
        }
    }
    Ok(())
}

/// Lists every entry of the stored tree `root`, depth first, with paths
/// relative to the root joined by `/`, in canonical order.
pub fn walk(cas: &Cas, root: &Digest) -> Result<Vec<(String, Entry)>> {
    let mut out = Vec::new();
    walk_into(cas, root, "", &mut out, 0)?;
    Ok(out)
}

const MAX_DEPTH: usize = 4096;

fn walk_into(
    cas: &Cas,
    digest: &Digest,
    prefix: &str,
    out: &mut Vec<(String, Entry)>,
    depth: usize,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(StoreError::Decode {
            digest: *digest,
            what: "a directory",
            reason: "tree is nested too deeply".into(),
        });
    }
    let dir = read_directory(cas, digest)?;
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        }
    };
    // Merge the three sorted lists so the walk is in name order.
    let mut items: Vec<(String, Entry)> = Vec::new();
    for f in &dir.files {
        let digest = Digest::from_proto(f.digest.as_ref().expect("validated")).expect("validated");
        items.push((
            f.name.clone(),
            Entry::File {
                digest,
                executable: f.is_executable,
            },
        ));
    }
    for s in &dir.symlinks {
        items.push((
            s.name.clone(),
            Entry::Symlink {
                target: s.target.clone(),
            },
        ));
    }
    for d in &dir.directories {
        let digest = Digest::from_proto(d.digest.as_ref().expect("validated")).expect("validated");
        items.push((d.name.clone(), Entry::Dir { digest }));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, entry) in items {
        let path = join(&name);
        if let Entry::Dir { digest } = &entry {
            let digest = *digest;
            out.push((path.clone(), entry));
            walk_into(cas, &digest, &path, out, depth + 1)?;
        } else {
            out.push((path, entry));
        }
    }
    Ok(())
}

/// The first blob the tree references that the store does not hold, if any.
pub fn first_missing(cas: &Cas, root: &Digest) -> Option<Digest> {
    if !cas.contains(root) {
        return Some(*root);
    }
    let entries = match walk(cas, root) {
        Ok(e) => e,
        Err(StoreError::Missing { digest }) => return Some(digest),
        Err(_) => return Some(*root),
    };
    entries.into_iter().find_map(|(_, e)| match e {
        Entry::File { digest, .. } if !cas.contains(&digest) => Some(digest),
        _ => None,
    })
}

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
pub fn materialize(cas: &Cas, root: &Digest, dest: &Path, placement: Placement) -> Result<()> {
    for (path, entry) in walk(cas, root)? {
        let target = dest.join(&path);
        match entry {
            Entry::Dir { .. } => fs::create_dir(&target)
                .map_err(|e| StoreError::io("cannot create folder", &target, e))?,
            Entry::Symlink { target: link } => std::os::unix::fs::symlink(&link, &target)
                .map_err(|e| StoreError::io("cannot create symlink", &target, e))?,
            Entry::File { digest, executable } => {
                place_file(cas, &digest, executable, &target, placement)?
            }
        }
    }
    Ok(())
}

fn place_file(
    cas: &Cas,
    digest: &Digest,
    executable: bool,
    target: &Path,
    placement: Placement,
) -> Result<()> {
    let blob = cas.path(digest);
    if placement == Placement::HardLink && !executable {
        match fs::hard_link(&blob, target) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { digest: *digest });
            }
            // Other file system or link limits: copy instead.
            Err(_) => {}
        }
    }
    fs::copy(&blob, target).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound && !blob.exists() {
            StoreError::Missing { digest: *digest }
        } else {
            StoreError::io("cannot copy from the store", target, e)
        }
    })?;
    let mode = if executable { 0o555 } else { 0o444 };
    fs::set_permissions(target, fs::Permissions::from_mode(mode))
        .map_err(|e| StoreError::io("cannot set permissions", target, e))
}

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
        Ok(Node::Symlink { target })
    } else if ft.is_file() {
        let executable = meta.mode() & 0o111 != 0;
        let digest = match cas {
            Some(cas) => cas.put_file_move(path)?,
            None => {
                hash_file(function, path).map_err(|e| StoreError::io("cannot read", path, e))?
            }
        };
        Ok(Node::File { digest, executable })
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
            builder.entries.insert(name, node);
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

/// Relative path helper used by callers that join store paths.
pub fn rel_join(base: &Path, rel: &str) -> PathBuf {
    rel.split('/')
        .filter(|p| !p.is_empty())
        .fold(base.to_path_buf(), |p, c| p.join(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn store() -> (tempfile::TempDir, crate::Store) {
        let d = tempfile::tempdir().unwrap();
        let s = crate::Store::open(&d.path().join("s"), DigestFunction::Blake3).unwrap();
        (d, s)
    }

    fn write(base: &Path, rel: &str, content: &str) {
        let p = base.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    #[test]
    fn creation_order_does_not_change_the_digest() {
        let (d, s) = store();
        let a = d.path().join("a");
        let b = d.path().join("b");
        for (rel, c) in [
            ("x/1", "one"),
            ("x/2", "two"),
            ("y", "why"),
            ("z/deep/f", "f"),
        ] {
            write(&a, rel, c);
        }
        for (rel, c) in [
            ("z/deep/f", "f"),
            ("y", "why"),
            ("x/2", "two"),
            ("x/1", "one"),
        ] {
            write(&b, rel, c);
        }
        let paths = ["x".to_string(), "y".to_string(), "z".to_string()];
        let da = digest_on_disk(s.function(), &a, &paths).unwrap();
        let db = digest_on_disk(s.function(), &b, &paths).unwrap();
        assert_eq!(da, db);
        // Capturing stores the same tree it hashed.
        assert_eq!(capture(s.cas(), &a, &paths).unwrap(), da);
    }

    #[test]
    fn symlinks_are_kept_verbatim_and_never_followed() {
        let (d, s) = store();
        let base = d.path().join("t");
        write(&base, "file", "content");
        symlink("/etc/passwd", base.join("abs")).unwrap();
        symlink("../../outside", base.join("rel")).unwrap();
        symlink("missing", base.join("dangling")).unwrap();
        let names: Vec<String> = ["abs", "dangling", "file", "rel"]
            .map(String::from)
            .to_vec();
        let root = capture(s.cas(), &base, &names).unwrap();
        let entries = walk(s.cas(), &root).unwrap();
        assert_eq!(
            entries[0],
            (
                "abs".to_string(),
                Entry::Symlink {
                    target: "/etc/passwd".into()
                }
            )
        );
        assert_eq!(
            entries[3],
            (
                "rel".to_string(),
                Entry::Symlink {
                    target: "../../outside".into()
                }
            )
        );
        // Changing only a link target changes the digest.
        let other = d.path().join("u");
        write(&other, "file", "content");
        symlink("/etc/shadow", other.join("abs")).unwrap();
        symlink("../../outside", other.join("rel")).unwrap();
        symlink("missing", other.join("dangling")).unwrap();
        assert_ne!(digest_on_disk(s.function(), &other, &names).unwrap(), root);
    }

    #[test]
    fn the_executable_bit_is_part_of_the_digest() {
        let (d, s) = store();
        let base = d.path().join("t");
        write(&base, "tool", "#!/bin/sh\n");
        let names = ["tool".to_string()];
        let plain = digest_on_disk(s.function(), &base, &names).unwrap();
        fs::set_permissions(base.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let exec = digest_on_disk(s.function(), &base, &names).unwrap();
        assert_ne!(plain, exec);
        // Other mode bits (group write) do not matter for `run` outputs.
        fs::set_permissions(base.join("tool"), fs::Permissions::from_mode(0o775)).unwrap();
        assert_eq!(digest_on_disk(s.function(), &base, &names).unwrap(), exec);
    }

    #[test]
    fn materialize_round_trips_a_tree() {
        let (d, s) = store();
        let base = d.path().join("t");
        write(&base, "a/b.txt", "b");
        fs::create_dir_all(base.join("a/empty")).unwrap();
        symlink("b.txt", base.join("a/link")).unwrap();
        let root = capture(s.cas(), &base, &["a".to_string()]).unwrap();
        let dest = d.path().join("m");
        fs::create_dir(&dest).unwrap();
        materialize(s.cas(), &root, &dest, Placement::HardLink).unwrap();
        assert_eq!(fs::read_to_string(dest.join("a/b.txt")).unwrap(), "b");
        assert!(dest.join("a/empty").is_dir());
        assert_eq!(
            digest_on_disk(s.function(), &dest, &["a".to_string()]).unwrap(),
            root
        );
    }

    #[test]
    fn malformed_directory_records_are_refused() {
        let (_d, s) = store();
        let evil = reapi::Directory {
            files: vec![reapi::FileNode {
                name: "../escape".into(),
                digest: Some(s.function().of_bytes(b"").to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let digest = s.cas().put_message(&evil).unwrap();
        assert!(matches!(
            walk(s.cas(), &digest),
            Err(StoreError::Decode { .. })
        ));
        let unsorted = reapi::Directory {
            symlinks: vec![
                reapi::SymlinkNode {
                    name: "b".into(),
                    target: "x".into(),
                    node_properties: None,
                },
                reapi::SymlinkNode {
                    name: "a".into(),
                    target: "x".into(),
                    node_properties: None,
                },
            ],
            ..Default::default()
        };
        let digest = s.cas().put_message(&unsorted).unwrap();
        assert!(matches!(
            walk(s.cas(), &digest),
            Err(StoreError::Decode { .. })
        ));
    }

    #[test]
    fn a_flipped_byte_is_detected_on_read_and_by_verify() {
        let (_d, s) = store();
        let digest = s.cas().put_bytes(b"precious").unwrap();
        let path = s.cas().path(&digest);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"pRecious").unwrap();
        assert!(matches!(
            s.cas().read(&digest),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(s.verify().len(), 1);
    }
}
