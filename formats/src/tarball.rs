//! A deterministic tar writer for stored trees: entries in canonical path
//! order, times from SOURCE_DATE_EPOCH, owners and modes from the tree's
//! metadata (root:root and 0755/0644 where there is none).
//!
//! Names are written exactly as given (the `tar` crate would drop a leading
//! `./`, which dpkg expects), with GNU long-name records for names and link
//! targets over 100 bytes.

use std::io::{self, Read, Write};

use strata_store::tree::{DeviceKind, Entry, Meta, walk};
use strata_store::{Cas, Digest};

use crate::FormatError;

/// How a tree is laid out in the archive.
#[derive(Clone, Debug, Default)]
pub struct TarOptions {
    /// Prefix every path with `./` and start with a `./` entry (as dpkg does).
    pub dot_prefix: bool,
    /// A folder every entry is placed under (no leading or trailing `/`).
    pub prefix: String,
    pub mtime: u64,
    /// Write `root` as the user and group name of id 0 (as dpkg-deb does);
    /// otherwise names are left empty and only numeric ids are written.
    pub owner_names: bool,
}

const BLOCK: usize = 512;

/// Writes `root` as a GNU tar stream into `out`.
pub fn write_tree<W: Write>(
    cas: &Cas,
    root: &Digest,
    out: W,
    opts: &TarOptions,
) -> Result<W, FormatError> {
    let mut tar = TarWriter { out, opts };
    let base = match (opts.dot_prefix, opts.prefix.is_empty()) {
        (true, true) => "./".to_string(),
        (true, false) => format!("./{}/", opts.prefix),
        (false, true) => String::new(),
        (false, false) => format!("{}/", opts.prefix),
    };
    if opts.dot_prefix {
        tar.entry(
            "./",
            tar::EntryType::Directory,
            None,
            0o755,
            None,
            None,
            io::empty(),
        )?;
    }
    if !opts.prefix.is_empty() {
        let mut path = String::new();
        for part in opts.prefix.split('/') {
            path = if path.is_empty() {
                part.to_string()
            } else {
                format!("{path}/{part}")
            };
            let shown = if opts.dot_prefix {
                format!("./{path}/")
            } else {
                format!("{path}/")
            };
            tar.entry(
                &shown,
                tar::EntryType::Directory,
                None,
                0o755,
                None,
                None,
                io::empty(),
            )?;
        }
    }
    for (path, entry) in walk(cas, root)? {
        let name = format!("{base}{path}");
        match entry {
            Entry::Dir { meta, .. } => {
                tar.entry(
                    &format!("{name}/"),
                    tar::EntryType::Directory,
                    meta,
                    0o755,
                    None,
                    None,
                    io::empty(),
                )?;
            }
            Entry::File {
                digest,
                executable,
                meta,
            } => {
                let blob = std::fs::File::open(cas.path(&digest))
                    .map_err(|_| strata_store::StoreError::Missing { digest })?;
                let mode = if executable { 0o755 } else { 0o644 };
                tar.entry(
                    &name,
                    tar::EntryType::Regular,
                    meta,
                    mode,
                    None,
                    Some(digest.size_bytes),
                    blob,
                )?;
            }
            Entry::Symlink { target, meta } => {
                tar.entry(
                    &name,
                    tar::EntryType::Symlink,
                    meta,
                    0o777,
                    Some(&target),
                    None,
                    io::empty(),
                )?;
            }
            Entry::Device {
                kind,
                major,
                minor,
                meta,
            } => {
                let t = match kind {
                    DeviceKind::Char => tar::EntryType::Char,
                    DeviceKind::Block => tar::EntryType::Block,
                    DeviceKind::Fifo => tar::EntryType::Fifo,
                };
                tar.entry(
                    &name,
                    t,
                    meta,
                    0o644,
                    None,
                    None,
                    DeviceNumbers(major, minor),
                )?;
            }
        }
    }
    tar.out.write_all(&[0u8; 2 * BLOCK])?;
    Ok(tar.out)
}

/// Carries a device's numbers to [`TarWriter::entry`] (its "data").
struct DeviceNumbers(u32, u32);

impl Read for DeviceNumbers {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

struct TarWriter<'a, W: Write> {
    out: W,
    opts: &'a TarOptions,
}

impl<W: Write> TarWriter<'_, W> {
    #[allow(clippy::too_many_arguments)]
    fn entry<R: Read + 'static>(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        meta: Option<Meta>,
        default_mode: u32,
        link: Option<&str>,
        size: Option<u64>,
        mut data: R,
    ) -> io::Result<()> {
        if name.len() > 100 {
            self.long_record(tar::EntryType::GNULongName, name.as_bytes())?;
        }
        if let Some(link) = link.filter(|l| l.len() > 100) {
            self.long_record(tar::EntryType::GNULongLink, link.as_bytes())?;
        }
        let m = meta.unwrap_or(Meta {
            mode: default_mode,
            uid: 0,
            gid: 0,
        });
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode);
        h.set_uid(m.uid as u64);
        h.set_gid(m.gid as u64);
        h.set_mtime(self.opts.mtime);
        h.set_size(size.unwrap_or(0));
        if self.opts.owner_names {
            let gnu = h.as_gnu_mut().expect("a GNU header");
            if m.uid == 0 {
                gnu.uname[..4].copy_from_slice(b"root");
            }
            if m.gid == 0 {
                gnu.gname[..4].copy_from_slice(b"root");
            }
        }
        {
            let gnu = h.as_gnu_mut().expect("a GNU header");
            let n = name.as_bytes();
            gnu.name[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
            if let Some(link) = link {
                let l = link.as_bytes();
                gnu.linkname[..l.len().min(100)].copy_from_slice(&l[..l.len().min(100)]);
            }
        }
        if let Some(dev) = (&data as &dyn std::any::Any).downcast_ref::<DeviceNumbers>() {
            h.set_device_major(dev.0)?;
            h.set_device_minor(dev.1)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        let written = io::copy(&mut data, &mut self.out)?;
        if written != size.unwrap_or(0) {
            return Err(io::Error::other(format!(
                "`{name}`: expected {} bytes, read {written}",
                size.unwrap_or(0)
            )));
        }
        self.pad(written)
    }

    /// A GNU `././@LongLink` record carrying a name over 100 bytes.
    fn long_record(&mut self, kind: tar::EntryType, bytes: &[u8]) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.as_gnu_mut().expect("a GNU header").name[..13].copy_from_slice(b"././@LongLink");
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(bytes.len() as u64 + 1);
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(bytes)?;
        self.out.write_all(&[0])?;
        self.pad(bytes.len() as u64 + 1)
    }

    fn pad(&mut self, written: u64) -> io::Result<()> {
        let rest = (BLOCK - (written as usize % BLOCK)) % BLOCK;
        self.out.write_all(&vec![0u8; rest])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::tree::{Node, TreeBuilder};

    #[test]
    fn names_keep_dot_prefixes_long_names_and_root_owners() {
        let d = tempfile::tempdir().unwrap();
        let s = strata_store::Store::open(d.path(), strata_store::DigestFunction::Blake3).unwrap();
        let blob = s.cas().put_bytes(b"data").unwrap();
        let long = format!("{}/file.txt", "deep".repeat(40));
        let mut b = TreeBuilder::new();
        b.insert("etc/a", Node::file(blob, false)).unwrap();
        b.insert(&long, Node::file(blob, true)).unwrap();
        b.insert(
            "l",
            Node::Symlink {
                target: "x".repeat(150),
                meta: None,
            },
        )
        .unwrap();
        let root = b.store(s.cas()).unwrap();
        let opts = TarOptions {
            dot_prefix: true,
            mtime: 1_700_000_000,
            owner_names: true,
            ..Default::default()
        };
        let bytes = write_tree(s.cas(), &root, Vec::new(), &opts).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let raw_name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            assert_eq!(e.header().username().unwrap(), Some("root"));
            assert_eq!(e.header().mtime().unwrap(), 1_700_000_000);
            if raw_name == "./l" {
                assert_eq!(
                    e.link_name().unwrap().unwrap().to_str().unwrap(),
                    "x".repeat(150)
                );
            }
            seen.push(raw_name);
        }
        assert_eq!(seen[0], "./");
        assert!(seen.contains(&"./etc/a".to_string()), "{seen:?}");
        assert!(seen.contains(&format!("./{long}")), "{seen:?}");
        assert!(seen.iter().all(|n| n.starts_with("./")));
    }
}
