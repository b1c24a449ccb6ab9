//! Two archives compared entry by entry, to say which entries differ
//! rather than where the first differing byte of a compressed stream is.
//! Reading the archives is `strata_formats::listing`'s.

use std::collections::BTreeMap;

use serde::Serialize;
use strata_formats::listing::{EntryInfo, Listing};

/// How one entry differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryDiff {
    pub name: String,
    /// `changed`, `only-in-reference` or `only-in-rebuilt`.
    pub change: &'static str,
    /// For `changed`: which of `kind`, `size`, `content`, `mode`, `mtime`,
    /// `owner`, `link` differ.
    pub fields: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<EntryInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<EntryInfo>,
}

/// How two archives differ entry by entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArchiveDiff {
    /// `tar+gzip`, `ar`, `cpio+zstd`...; `a -> b` if the formats differ.
    pub format: String,
    /// The differing entries, at most `limit` of them.
    pub entries: Vec<EntryDiff>,
    /// How many entries differ in all.
    pub total: usize,
    /// Same entries, other order: the first name out of place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_differs_at: Option<String>,
}

fn fields(a: &EntryInfo, b: &EntryInfo) -> Vec<&'static str> {
    let mut f = Vec::new();
    if a.kind != b.kind {
        f.push("kind");
    }
    if a.size != b.size {
        f.push("size");
    }
    if a.content != b.content {
        f.push("content");
    }
    if a.mode != b.mode {
        f.push("mode");
    }
    if a.mtime != b.mtime {
        f.push("mtime");
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        f.push("owner");
    }
    if a.link != b.link {
        f.push("link");
    }
    f
}

/// Entry by entry: names paired in order of appearance (a name may repeat
/// in a tar).
pub fn diff(reference: &Listing, rebuilt: &Listing, limit: usize) -> ArchiveDiff {
    type Key = (String, usize);
    let keyed = |l: &Listing| -> Vec<(Key, EntryInfo)> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        l.entries
            .iter()
            .map(|e| {
                let n = seen.entry(e.name.clone()).or_default();
                *n += 1;
                ((e.name.clone(), *n), e.clone())
            })
            .collect()
    };
    let (a, b) = (keyed(reference), keyed(rebuilt));
    let (in_a, in_b): (BTreeMap<&Key, &EntryInfo>, BTreeMap<&Key, &EntryInfo>) = (
        a.iter().map(|(k, e)| (k, e)).collect(),
        b.iter().map(|(k, e)| (k, e)).collect(),
    );
    let entry =
        |name: &str, change, fields, reference: Option<&EntryInfo>, rebuilt: Option<&EntryInfo>| {
            EntryDiff {
                name: name.to_string(),
                change,
                fields,
                reference: reference.cloned(),
                rebuilt: rebuilt.cloned(),
            }
        };
    // In the reference's order, then what only the rebuild has.
    let mut diffs = Vec::new();
    for (k, x) in &a {
        match in_b.get(k) {
            Some(y) => {
                let f = fields(x, y);
                if !f.is_empty() {
                    diffs.push(entry(&k.0, "changed", f, Some(x), Some(y)));
                }
            }
            None => diffs.push(entry(&k.0, "only-in-reference", Vec::new(), Some(x), None)),
        }
    }
    for (k, y) in &b {
        if !in_a.contains_key(k) {
            diffs.push(entry(&k.0, "only-in-rebuilt", Vec::new(), None, Some(y)));
        }
    }
    let total = diffs.len();
    diffs.truncate(limit);
    let mut names_a: Vec<&Key> = in_a.keys().copied().collect();
    let mut names_b: Vec<&Key> = in_b.keys().copied().collect();
    names_a.sort();
    names_b.sort();
    let order_differs_at = (names_a == names_b)
        .then(|| {
            a.iter()
                .zip(&b)
                .find(|(x, y)| x.0 != y.0)
                .map(|(x, _)| x.0.0.clone())
        })
        .flatten();
    let format = if reference.format == rebuilt.format {
        reference.format.clone()
    } else {
        format!("{} -> {}", reference.format, rebuilt.format)
    };
    ArchiveDiff {
        format,
        entries: diffs,
        total,
        order_differs_at,
    }
}

#[cfg(test)]
mod tests {
    use strata_formats::listing::list;

    use super::*;

    fn tar_of(files: &[(&str, &[u8], u64)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, mtime) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(*mtime);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    #[test]
    fn compressed_tars_are_listed_and_diffed_by_entry() {
        let a = tar_of(&[("x", b"same", 0), ("y", b"one", 0)]);
        let b = tar_of(&[("x", b"same", 0), ("y", b"two!", 5), ("z", b"", 0)]);
        let (la, lb) = (list(&zstd(&a)[..]).unwrap(), list(&zstd(&b)[..]).unwrap());
        assert_eq!(la.format, "tar+zstd");
        let d = diff(&la, &lb, 10);
        assert_eq!(d.total, 2);
        assert_eq!(d.entries[0].name, "y");
        assert_eq!(d.entries[0].fields, ["size", "content", "mtime"]);
        assert_eq!(d.entries[1].name, "z");
        assert_eq!(d.entries[1].change, "only-in-rebuilt");
        assert_eq!(d.order_differs_at, None);
    }

    #[test]
    fn reordered_entries_are_an_order_difference_only() {
        let a = tar_of(&[("x", b"1", 0), ("y", b"2", 0)]);
        let b = tar_of(&[("y", b"2", 0), ("x", b"1", 0)]);
        let d = diff(&list(&a[..]).unwrap(), &list(&b[..]).unwrap(), 10);
        assert_eq!(d.total, 0);
        assert_eq!(d.order_differs_at.as_deref(), Some("x"));
    }

    fn ar_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, data) in members {
            out.extend(
                format!(
                    "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    name,
                    0,
                    0,
                    0,
                    "100644",
                    data.len()
                )
                .as_bytes(),
            );
            out.extend(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn a_deb_lists_its_members_and_their_tars() {
        let deb = |content: &[u8]| {
            ar_of(&[
                ("debian-binary", b"2.0\n".to_vec()),
                ("control.tar.zst", zstd(&tar_of(&[("control", b"P", 0)]))),
                ("data.tar.zst", zstd(&tar_of(&[("hello", content, 0)]))),
            ])
        };
        let (a, b) = (
            list(&deb(b"hi")[..]).unwrap(),
            list(&deb(b"ho")[..]).unwrap(),
        );
        assert_eq!(a.format, "ar");
        let names: Vec<&str> = a.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "debian-binary",
                "control.tar.zst",
                "control.tar.zst:control",
                "data.tar.zst",
                "data.tar.zst:hello"
            ]
        );
        let d = diff(&a, &b, 10);
        let changed: Vec<&str> = d.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(changed, ["data.tar.zst", "data.tar.zst:hello"]);
    }

    fn cpio_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut entry = |name: &str, data: &[u8], mode: u32, mtime: u32| {
            let header = format!(
                "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                1,
                mode,
                0,
                0,
                1,
                mtime,
                data.len(),
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            );
            out.extend(header.as_bytes());
            out.extend(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (name, data, mtime) in files {
            entry(name, data, 0o100644, *mtime);
        }
        entry("TRAILER!!!", b"", 0, 0);
        out
    }

    #[test]
    fn cpio_entries_with_their_mtimes() {
        let a = cpio_of(&[("init", b"#!/bin/sh\n", 0), ("etc", b"x", 0)]);
        let b = cpio_of(&[("init", b"#!/bin/sh\n", 7), ("etc", b"x", 0)]);
        let gz = |d: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, d).unwrap();
            e.finish().unwrap()
        };
        let (la, lb) = (list(&gz(&a)[..]).unwrap(), list(&gz(&b)[..]).unwrap());
        assert_eq!(la.format, "cpio+gzip");
        assert_eq!(la.entries.len(), 2);
        let d = diff(&la, &lb, 10);
        assert_eq!(d.total, 1);
        assert_eq!(d.entries[0].name, "init");
        assert_eq!(d.entries[0].fields, ["mtime"]);
    }
}
