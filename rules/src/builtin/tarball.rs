//! A deterministic tar writer for stored trees: entries in canonical path
//! order, times from SOURCE_DATE_EPOCH, owners and modes from the tree's
//! metadata (root:root and 0755/0644 where there is none), no user names.

use std::io::{self, Write};

use strata_store::tree::{DeviceKind, Entry, Meta, walk};
use strata_store::{Cas, Digest};

use super::BuiltinError;

/// How a tree is laid out in the archive.
#[derive(Clone, Debug)]
pub struct TarOptions {
    /// Prefix every path with `./` and start with a `./` entry (as dpkg does).
    pub dot_prefix: bool,
    /// A folder every entry is placed under (no leading or trailing `/`).
    pub prefix: String,
    pub mtime: u64,
}

/// Writes `root` as a GNU tar stream into `out`.
pub fn write_tree<W: Write>(
    cas: &Cas,
    root: &Digest,
    out: W,
    opts: &TarOptions,
) -> Result<W, BuiltinError> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let base = match (opts.dot_prefix, opts.prefix.is_empty()) {
        (true, true) => "./".to_string(),
        (true, false) => format!("./{}/", opts.prefix),
        (false, true) => String::new(),
        (false, false) => format!("{}/", opts.prefix),
    };
    if opts.dot_prefix {
        let mut h = header(tar::EntryType::Directory, None, 0o755, opts.mtime);
        tar.append_data(&mut h, "./", io::empty())?;
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
            let mut h = header(tar::EntryType::Directory, None, 0o755, opts.mtime);
            tar.append_data(&mut h, shown, io::empty())?;
        }
    }
    for (path, entry) in walk(cas, root)? {
        let name = format!("{base}{path}");
        match entry {
            Entry::Dir { meta, .. } => {
                let mut h = header(tar::EntryType::Directory, meta, 0o755, opts.mtime);
                tar.append_data(&mut h, format!("{name}/"), io::empty())?;
            }
            Entry::File {
                digest,
                executable,
                meta,
            } => {
                let mut h = header(
                    tar::EntryType::Regular,
                    meta,
                    if executable { 0o755 } else { 0o644 },
                    opts.mtime,
                );
                h.set_size(digest.size_bytes);
                let blob = std::fs::File::open(cas.path(&digest))
                    .map_err(|_| strata_store::StoreError::Missing { digest })?;
                tar.append_data(&mut h, &name, blob)?;
            }
            Entry::Symlink { target, meta } => {
                let mut h = header(tar::EntryType::Symlink, meta, 0o777, opts.mtime);
                tar.append_link(&mut h, &name, &target)?;
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
                let mut h = header(t, meta, 0o644, opts.mtime);
                h.set_device_major(major)?;
                h.set_device_minor(minor)?;
                tar.append_data(&mut h, &name, io::empty())?;
            }
        }
    }
    Ok(tar.into_inner()?)
}

fn header(kind: tar::EntryType, meta: Option<Meta>, default_mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    let m = meta.unwrap_or(Meta {
        mode: default_mode,
        uid: 0,
        gid: 0,
    });
    h.set_mode(m.mode);
    h.set_uid(m.uid as u64);
    h.set_gid(m.gid as u64);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}
