//! How two output trees differ: which files, with both sizes and the first
//! differing byte, and for archives which entries.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};

use serde::Serialize;
use strata_formats::listing;
use strata_store::tree::{Entry, Meta, walk};
use strata_store::{Cas, Digest, StoreError};

use super::archive::{self, ArchiveDiff};

/// At most this many files, and entries of each archive, are described.
pub const LIMIT: usize = 50;

/// One path that differs between the reference and the rebuilt tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileDiff {
    pub path: String,
    /// `content`, `only-in-reference`, `only-in-rebuilt`, `kind`,
    /// `executable`, `symlink-target`, `device`, `metadata`.
    pub change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt_size: Option<u64>,
    /// For `content`: the offset of the first differing byte (the shorter
    /// size when one file is a prefix of the other).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<u64>,
    /// A short description for the other changes (`file -> folder`,
    /// `mode 0644 -> 0664`, link targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For an archive (tar, ar/.deb, cpio; compressed or not): its entries
    /// that differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveDiff>,
}

impl FileDiff {
    fn new(path: &str, change: &'static str) -> FileDiff {
        FileDiff {
            path: path.to_string(),
            change,
            reference_size: None,
            rebuilt_size: None,
            first_difference: None,
            detail: None,
            archive: None,
        }
    }
}

/// The differences of two trees, the first `LIMIT` of them described.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TreeDiff {
    pub files: Vec<FileDiff>,
    /// How many paths differ in all.
    pub total: usize,
}

fn kind(e: &Entry) -> &'static str {
    match e {
        Entry::File { .. } => "file",
        Entry::Dir { .. } => "folder",
        Entry::Symlink { .. } => "symlink",
        Entry::Device { .. } => "device",
    }
}

fn meta(e: &Entry) -> Option<Meta> {
    match e {
        Entry::File { meta, .. }
        | Entry::Dir { meta, .. }
        | Entry::Symlink { meta, .. }
        | Entry::Device { meta, .. } => *meta,
    }
}

fn show_meta(m: Option<Meta>) -> String {
    match m {
        Some(m) => format!("mode {:04o} owner {}:{}", m.mode, m.uid, m.gid),
        None => "no recorded mode or owner".into(),
    }
}

fn size(e: &Entry) -> Option<u64> {
    match e {
        Entry::File { digest, .. } => Some(digest.size_bytes),
        _ => None,
    }
}

/// Compares the stored trees `reference` and `rebuilt`.
pub fn trees(cas: &Cas, reference: &Digest, rebuilt: &Digest) -> Result<TreeDiff, StoreError> {
    let a: BTreeMap<String, Entry> = walk(cas, reference)?.into_iter().collect();
    let b: BTreeMap<String, Entry> = walk(cas, rebuilt)?.into_iter().collect();
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut out = TreeDiff::default();
    // Below a path present on one side only, everything is: name the top.
    let mut one_sided: Option<String> = None;
    for path in paths {
        if let Some(top) = &one_sided
            && path.starts_with(&format!("{top}/"))
        {
            continue;
        }
        let diff = match (a.get(path), b.get(path)) {
            (Some(x), None) => {
                one_sided = Some(path.clone());
                let mut d = FileDiff::new(path, "only-in-reference");
                d.reference_size = size(x);
                Some(d)
            }
            (None, Some(y)) => {
                one_sided = Some(path.clone());
                let mut d = FileDiff::new(path, "only-in-rebuilt");
                d.rebuilt_size = size(y);
                Some(d)
            }
            (Some(x), Some(y)) => entry_diff(cas, path, x, y, out.total < LIMIT)?,
            (None, None) => None,
        };
        if let Some(d) = diff {
            out.total += 1;
            if out.files.len() < LIMIT {
                out.files.push(d);
            }
        }
    }
    Ok(out)
}

/// How one path present on both sides differs; `describe` asks for the
/// costly parts (first differing byte, archive entries).
fn entry_diff(
    cas: &Cas,
    path: &str,
    x: &Entry,
    y: &Entry,
    describe: bool,
) -> Result<Option<FileDiff>, StoreError> {
    if kind(x) != kind(y) {
        let mut d = FileDiff::new(path, "kind");
        d.detail = Some(format!("{} -> {}", kind(x), kind(y)));
        d.reference_size = size(x);
        d.rebuilt_size = size(y);
        return Ok(Some(d));
    }
    let d = match (x, y) {
        (
            Entry::File {
                digest: da,
                executable: ea,
                ..
            },
            Entry::File {
                digest: db,
                executable: eb,
                ..
            },
        ) => {
            if da != db {
                let mut d = FileDiff::new(path, "content");
                d.reference_size = Some(da.size_bytes);
                d.rebuilt_size = Some(db.size_bytes);
                if describe {
                    d.first_difference = Some(first_difference(cas, da, db)?);
                    d.archive = archive_diff(cas, da, db);
                }
                Some(d)
            } else if ea != eb {
                let mut d = FileDiff::new(path, "executable");
                d.detail = Some(format!("executable {ea} -> {eb}"));
                Some(d)
            } else {
                None
            }
        }
        (Entry::Symlink { target: ta, .. }, Entry::Symlink { target: tb, .. }) if ta != tb => {
            let mut d = FileDiff::new(path, "symlink-target");
            d.detail = Some(format!("{ta:?} -> {tb:?}"));
            Some(d)
        }
        (
            Entry::Device {
                kind: ka,
                major: ma,
                minor: na,
                ..
            },
            Entry::Device {
                kind: kb,
                major: mb,
                minor: nb,
                ..
            },
        ) if (ka, ma, na) != (kb, mb, nb) => {
            let mut d = FileDiff::new(path, "device");
            d.detail = Some(format!(
                "{} {ma},{na} -> {} {mb},{nb}",
                ka.name(),
                kb.name()
            ));
            Some(d)
        }
        _ => None,
    };
    if d.is_some() {
        return Ok(d);
    }
    // Same content: the recorded mode or owner may still differ.
    Ok((meta(x) != meta(y)).then(|| {
        let mut d = FileDiff::new(path, "metadata");
        d.detail = Some(format!("{} -> {}", show_meta(meta(x)), show_meta(meta(y))));
        d
    }))
}

fn open(cas: &Cas, d: &Digest) -> Result<File, StoreError> {
    File::open(cas.path(d)).map_err(|_| StoreError::Missing { digest: *d })
}

/// The offset of the first byte where two blobs differ.
fn first_difference(cas: &Cas, a: &Digest, b: &Digest) -> Result<u64, StoreError> {
    let io_err = |d: &Digest, source: io::Error| StoreError::Io {
        context: "cannot read",
        path: cas.path(d),
        source,
    };
    let (mut fa, mut fb) = (open(cas, a)?, open(cas, b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut offset = 0u64;
    loop {
        let na = read_up_to(&mut fa, &mut ba).map_err(|e| io_err(a, e))?;
        let nb = read_up_to(&mut fb, &mut bb).map_err(|e| io_err(b, e))?;
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(offset + i as u64);
        }
        if na != nb || n == 0 {
            return Ok(offset + n as u64);
        }
        offset += n as u64;
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Entry by entry, if both blobs are archives this module reads.
fn archive_diff(cas: &Cas, a: &Digest, b: &Digest) -> Option<ArchiveDiff> {
    let la = listing::list(open(cas, a).ok()?)?;
    let lb = listing::list(open(cas, b).ok()?)?;
    Some(archive::diff(&la, &lb, LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::tree::{Node, TreeBuilder};
    use strata_store::{DigestFunction, Store};

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&t.path().join("s"), DigestFunction::Blake3).unwrap();
        (t, s)
    }

    fn tree(s: &Store, files: &[(&str, &[u8])]) -> Digest {
        let mut b = TreeBuilder::new();
        for (path, data) in files {
            let d = s.cas().put_bytes(data).unwrap();
            b.insert(path, Node::file(d, false)).unwrap();
        }
        b.store(s.cas()).unwrap()
    }

    #[test]
    fn names_files_sizes_and_the_first_differing_byte() {
        let (_t, s) = store();
        let a = tree(
            &s,
            &[
                ("same", b"x"),
                ("t.txt", b"time 1700000000"),
                ("old/a", b""),
            ],
        );
        let b = tree(
            &s,
            &[
                ("same", b"x"),
                ("t.txt", b"time 1700000042!"),
                ("new/b", b"1"),
            ],
        );
        let d = trees(s.cas(), &a, &b).unwrap();
        assert_eq!(d.total, 3);
        let by: BTreeMap<&str, &FileDiff> = d.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let t = by["t.txt"];
        assert_eq!(t.change, "content");
        assert_eq!((t.reference_size, t.rebuilt_size), (Some(15), Some(16)));
        assert_eq!(t.first_difference, Some(13));
        assert_eq!(by["old"].change, "only-in-reference");
        assert_eq!(by["new"].change, "only-in-rebuilt");
        assert!(!by.contains_key("new/b"));
    }

    #[test]
    fn a_prefix_differs_at_its_end() {
        let (_t, s) = store();
        let a = tree(&s, &[("f", b"abc")]);
        let b = tree(&s, &[("f", b"abcdef")]);
        let d = trees(s.cas(), &a, &b).unwrap();
        assert_eq!(d.files[0].first_difference, Some(3));
        assert_eq!(trees(s.cas(), &a, &a).unwrap().total, 0);
    }
}
