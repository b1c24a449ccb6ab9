//! Reading stored trees: validated directory records and depth-first walks.

use crate::Digest;
use crate::cas::Cas;
use crate::error::{Result, StoreError};
use crate::reapi;

use super::{DeviceKind, Meta, parse_properties};

/// An entry of a stored tree, as met while walking it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        digest: Digest,
        executable: bool,
        meta: Option<Meta>,
    },
    Symlink {
        target: String,
        meta: Option<Meta>,
    },
    Device {
        kind: DeviceKind,
        major: u32,
        minor: u32,
        meta: Option<Meta>,
    },
    Dir {
        digest: Digest,
        meta: Option<Meta>,
    },
}

impl From<Entry> for super::Node {
    /// A walked entry as a node of a tree being assembled: the same entry,
    /// a folder by its stored digest.
    fn from(e: Entry) -> super::Node {
        use super::Node;
        match e {
            Entry::File {
                digest,
                executable,
                meta,
            } => Node::File {
                digest,
                executable,
                meta,
            },
            Entry::Symlink { target, meta } => Node::Symlink { target, meta },
            Entry::Device {
                kind,
                major,
                minor,
                meta,
            } => Node::Device {
                kind,
                major,
                minor,
                meta,
            },
            Entry::Dir { digest, .. } => Node::Stored(digest),
        }
    }
}

/// Reads a stored directory record and checks it is canonical and safe.
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
    for props in dir
        .files
        .iter()
        .map(|f| f.node_properties.as_ref())
        .chain(dir.symlinks.iter().map(|s| s.node_properties.as_ref()))
        .chain(std::iter::once(dir.node_properties.as_ref()))
    {
        parse_properties(props)?;
    }
    if dir.symlinks.iter().any(|s| s.target.contains('\0')) {
        return Err("a symlink target contains NUL".into());
    }
    Ok(())
}

/// Lists every entry of the stored tree `root`, depth first, with paths
/// relative to the root joined by `/`, in canonical order. Iterative, so a
/// deep (possibly hostile) tree costs heap, not stack; deeper than
/// `MAX_READ_DEPTH` is an error.
pub fn walk(cas: &Cas, root: &Digest) -> Result<Vec<(String, Entry)>> {
    type Level = std::vec::IntoIter<(String, Entry, Option<reapi::Directory>)>;
    let mut out = Vec::new();
    let dir = read_directory(cas, root)?;
    let mut items = Vec::new();
    walk_level(cas, root, &dir, &mut items)?;
    let mut stack: Vec<(String, Level)> = vec![(String::new(), items.into_iter())];
    while let Some((prefix, level)) = stack.last_mut() {
        let Some((name, entry, child)) = level.next() else {
            stack.pop();
            continue;
        };
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match (entry, child) {
            (Entry::Dir { digest, meta }, Some(child)) => {
                out.push((path.clone(), Entry::Dir { digest, meta }));
                if stack.len() > MAX_READ_DEPTH {
                    return Err(StoreError::Decode {
                        digest,
                        what: "a directory",
                        reason: "tree is nested too deeply".into(),
                    });
                }
                let mut sub = Vec::new();
                walk_level(cas, &digest, &child, &mut sub)?;
                stack.push((path, sub.into_iter()));
            }
            (entry, _) => out.push((path, entry)),
        }
    }
    Ok(out)
}

/// How deep a stored tree may be to be read. More than the [`super::MAX_DEPTH`]
/// of trees Strata captures itself: a remote cache may hold deeper ones.
const MAX_READ_DEPTH: usize = 4096;

/// The entries directly inside the stored folder `digest` (one level), with
/// their metadata, in name order.
pub fn list(cas: &Cas, digest: &Digest) -> Result<Vec<(String, Entry)>> {
    let dir = read_directory(cas, digest)?;
    let mut out = Vec::new();
    let mut one_level = Vec::new();
    walk_level(cas, digest, &dir, &mut one_level)?;
    for (name, entry, _) in one_level {
        out.push((name, entry));
    }
    Ok(out)
}

/// One folder's entries in name order, with each subfolder's record (read
/// anyway, for its metadata) so a walk can descend without reading it twice.
fn walk_level(
    cas: &Cas,
    digest: &Digest,
    dir: &reapi::Directory,
    items: &mut Vec<(String, Entry, Option<reapi::Directory>)>,
) -> Result<()> {
    let bad = |reason: String| StoreError::Decode {
        digest: *digest,
        what: "a directory",
        reason,
    };
    for f in &dir.files {
        let digest = Digest::from_proto(f.digest.as_ref().expect("validated")).expect("validated");
        let (meta, device) = parse_properties(f.node_properties.as_ref()).map_err(bad)?;
        let entry = match device {
            Some((kind, major, minor)) => Entry::Device {
                kind,
                major,
                minor,
                meta,
            },
            None => Entry::File {
                digest,
                executable: f.is_executable,
                meta,
            },
        };
        items.push((f.name.clone(), entry, None));
    }
    for s in &dir.symlinks {
        let (meta, _) = parse_properties(s.node_properties.as_ref()).map_err(bad)?;
        items.push((
            s.name.clone(),
            Entry::Symlink {
                target: s.target.clone(),
                meta,
            },
            None,
        ));
    }
    for d in &dir.directories {
        let child_digest =
            Digest::from_proto(d.digest.as_ref().expect("validated")).expect("validated");
        let child = read_directory(cas, &child_digest)?;
        let (meta, _) = parse_properties(child.node_properties.as_ref()).map_err(bad)?;
        items.push((
            d.name.clone(),
            Entry::Dir {
                digest: child_digest,
                meta,
            },
            Some(child),
        ));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(())
}

/// The first blob the tree references that the store does not hold, if any.
pub fn first_missing(cas: &Cas, root: &Digest) -> Option<Digest> {
    // Reading the root finds it missing or not whole: no `stat` first.
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
