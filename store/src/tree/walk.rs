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
/// relative to the root joined by `/`, in canonical order.
pub fn walk(cas: &Cas, root: &Digest) -> Result<Vec<(String, Entry)>> {
    let mut out = Vec::new();
    let dir = read_directory(cas, root)?;
    walk_into(cas, root, &dir, "", &mut out, 0)?;
    Ok(out)
}

const MAX_DEPTH: usize = 4096;

fn walk_into(
    cas: &Cas,
    digest: &Digest,
    dir: &reapi::Directory,
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
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        }
    };
    let bad = |reason: String| StoreError::Decode {
        digest: *digest,
        what: "a directory",
        reason,
    };
    // Merge the three sorted lists so the walk is in name order.
    let mut items: Vec<(&str, Entry, Option<reapi::Directory>)> = Vec::new();
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
        items.push((&f.name, entry, None));
    }
    for s in &dir.symlinks {
        let (meta, _) = parse_properties(s.node_properties.as_ref()).map_err(bad)?;
        items.push((
            &s.name,
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
            &d.name,
            Entry::Dir {
                digest: child_digest,
                meta,
            },
            Some(child),
        ));
    }
    items.sort_by(|a, b| a.0.cmp(b.0));
    for (name, entry, child) in items {
        let path = join(name);
        match (entry, child) {
            (Entry::Dir { digest, meta }, Some(child)) => {
                out.push((path.clone(), Entry::Dir { digest, meta }));
                walk_into(cas, &digest, &child, &path, out, depth + 1)?;
            }
            (entry, _) => out.push((path, entry)),
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
