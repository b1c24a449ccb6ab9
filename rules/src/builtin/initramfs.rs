//! `initramfs`: a cpio (newc) archive of a tree, compressed, as the kernel
//! loads it: owners and modes from the tree's metadata, device nodes
//! included, inode numbers assigned in path order.
//!
//! ```yaml
//! ramdisk:
//!   rule: initramfs
//!   from: rootfs
//!   compression: gzip        # gzip (default) | zstd | none
//!   level: 9
//!   name: tinyipa.gz         # default initramfs.cpio.gz / .zst
//! ```
//!
//! The archive is what the kernel's `init/initramfs.c` unpacks (and what
//! `usr/gen_init_cpio` writes): "070701" headers, entries in the tree's
//! canonical order with parents before children, names without `./` and
//! without a `.` entry, inode numbers 1, 2, 3... in that order, nlink 2 for
//! folders and 1 otherwise (no hard links), every mtime SOURCE_DATE_EPOCH,
//! owners and modes from the tree's metadata (else root, 0755 for folders and
//! executables, 0644 for other files, 0777 for symlinks), symlink targets as
//! data, device nodes and FIFOs with their numbers, and the `TRAILER!!!`
//! entry. Header and name are padded to 4 bytes, and so is each file's data.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use strata_formats::compress::Compression;
use strata_store::tree::{DeviceKind, Entry, Meta, Node, TreeBuilder, walk};
use strata_store::{Cas, Digest};

use super::{Builtin, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, check_file_name, check_level, key};
use crate::table::{Field, Parse, Rule};

/// `initramfs`: a tree packed as a newc cpio archive.
pub const RULE: Rule = Rule {
    name: "initramfs",
    doc: "packs a tree as a reproducible newc cpio archive for the kernel",
    fields: &[
        Field::value("from", "the tree to pack"),
        Field::value(
            "compression",
            "gzip, zstd or none (default gzip; xz is refused)",
        ),
        Field::value("level", "the compression level, within the codec's range"),
        Field::value(
            "name",
            "the archive's file name (default `initramfs.cpio[.ext]`)",
        ),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Initramfs(from_fields(f)?))),
    image_output: false,
    contains_inputs: true,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub from: From,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub level: Option<i32>,
    #[serde(default)]
    pub name: Option<String>,
}

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        if self.compression == Compression::Xz {
            // liblzma's default CRC64 check is one the kernel's xz decoder
            // refuses on many versions; offer only what every kernel reads.
            return Err(ParamError::new(
                "compression",
                "an initramfs is compressed with gzip, zstd or none (xz archives \
                          need a CRC32 check that this rule does not write)",
            ));
        }
        check_level(self.compression, self.level)?;
        if let Some(name) = &self.name {
            check_file_name("name", name)?;
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        self.from.named(key("from"))
    }

    /// The output file name.
    pub fn file_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("initramfs.cpio{}", self.compression.extension()))
    }
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<Digest, BuiltinError> {
    let tree = ctx.tree(&p.from)?;
    let level = p.level.unwrap_or(p.compression.default_level());
    let writer = ctx.cas.writer()?;
    let mut result = Ok(());
    let writer = p.compression.encode(level, writer, |w| {
        result = write_cpio(ctx.cas, &tree, ctx.source_date_epoch, w);
        Ok(())
    })?;
    result?;
    let blob = writer.finish()?;
    let mut out = TreeBuilder::new();
    out.insert(&p.file_name(), Node::file(blob, false))
        .map_err(BuiltinError::Format)?;
    Ok(out.store(ctx.cas)?)
}

const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// The fields of one newc header that vary between entries.
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

/// Writes `root` as an uncompressed newc cpio archive into `out`.
pub fn write_cpio(
    cas: &Cas,
    root: &Digest,
    source_date_epoch: u64,
    out: &mut dyn Write,
) -> Result<(), BuiltinError> {
    let mtime = u32::try_from(source_date_epoch).map_err(|_| {
        BuiltinError::Format(format!(
            "SOURCE_DATE_EPOCH {source_date_epoch} does not fit in a cpio header (at most {})",
            u32::MAX
        ))
    })?;
    let mut out = io::BufWriter::with_capacity(256 * 1024, out);
    let mut ino: u32 = 0;
    for (path, entry) in walk(cas, root)? {
        ino = ino
            .checked_add(1)
            .ok_or_else(|| BuiltinError::Format("too many entries for a cpio archive".into()))?;
        let perms = |meta: Option<Meta>, default: u32| -> (u32, u32, u32) {
            let m = meta.unwrap_or(Meta {
                mode: default,
                uid: 0,
                gid: 0,
            });
            (m.mode & 0o7777, m.uid, m.gid)
        };
        let mut h = Header {
            ino,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime,
            size: 0,
            rdev_major: 0,
            rdev_minor: 0,
        };
        match entry {
            Entry::Dir { meta, .. } => {
                let (mode, uid, gid) = perms(meta, 0o755);
                (h.mode, h.uid, h.gid, h.nlink) = (S_IFDIR | mode, uid, gid, 2);
                write_header(&mut out, &h, &path)?;
            }
            Entry::File {
                digest,
                executable,
                meta,
            } => {
                let (mode, uid, gid) = perms(meta, if executable { 0o755 } else { 0o644 });
                (h.mode, h.uid, h.gid) = (S_IFREG | mode, uid, gid);
                h.size = u32::try_from(digest.size_bytes).map_err(|_| BuiltinError::Refused {
                    entry: path.clone(),
                    reason: format!(
                        "{} bytes is more than a cpio (newc) archive can hold in one file (4 GiB)",
                        digest.size_bytes
                    ),
                })?;
                write_header(&mut out, &h, &path)?;
                let mut blob = std::fs::File::open(cas.path(&digest))
                    .map_err(|_| strata_store::StoreError::Missing { digest })?;
                let copied = io::copy(&mut blob, &mut out)?;
                if copied != digest.size_bytes {
                    return Err(BuiltinError::Format(format!(
                        "stored blob {} has {copied} bytes, expected {}",
                        digest.hex(),
                        digest.size_bytes
                    )));
                }
                pad(&mut out, digest.size_bytes as usize)?;
            }
            Entry::Symlink { target, meta } => {
                let (mode, uid, gid) = perms(meta, 0o777);
                (h.mode, h.uid, h.gid) = (S_IFLNK | mode, uid, gid);
                h.size = u32::try_from(target.len()).map_err(|_| BuiltinError::Refused {
                    entry: path.clone(),
                    reason: "symlink target too long".into(),
                })?;
                write_header(&mut out, &h, &path)?;
                out.write_all(target.as_bytes())?;
                pad(&mut out, target.len())?;
            }
            Entry::Device {
                kind,
                major,
                minor,
                meta,
            } => {
                let (mode, uid, gid) = perms(meta, 0o644);
                let t = match kind {
                    DeviceKind::Char => S_IFCHR,
                    DeviceKind::Block => S_IFBLK,
                    DeviceKind::Fifo => S_IFIFO,
                };
                (h.mode, h.uid, h.gid) = (t | mode, uid, gid);
                if kind != DeviceKind::Fifo {
                    (h.rdev_major, h.rdev_minor) = (major, minor);
                }
                write_header(&mut out, &h, &path)?;
            }
        }
    }
    let trailer = Header {
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        mtime: 0,
        size: 0,
        rdev_major: 0,
        rdev_minor: 0,
    };
    write_header(&mut out, &trailer, "TRAILER!!!")?;
    out.flush()?;
    Ok(())
}

/// Writes a header and its NUL-terminated name, padded to 4 bytes.
fn write_header(out: &mut impl Write, h: &Header, name: &str) -> io::Result<()> {
    let namesize = name.len() + 1;
    let fields = [
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.size,
        0, // devmajor: the device the file is on
        0, // devminor
        h.rdev_major,
        h.rdev_minor,
        namesize as u32,
        0, // check: only used by the "070702" format
    ];
    let mut buf = Vec::with_capacity(110 + namesize + 3);
    buf.extend_from_slice(b"070701");
    for f in fields {
        write!(buf, "{f:08X}")?;
    }
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
    out.write_all(&buf)
}

/// Pads data of `len` bytes to a multiple of 4.
fn pad(out: &mut impl Write, len: usize) -> io::Result<()> {
    let n = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..n])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;

    use strata_formats::compress::decoder;
    use strata_store::tree::{DeviceKind, Meta, Node, TreeBuilder};

    use super::*;

    /// One parsed cpio entry.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Parsed {
        name: String,
        ino: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        nlink: u32,
        mtime: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    /// A strict newc reader: checks magic, alignment and the trailer.
    fn parse(bytes: &[u8]) -> Vec<Parsed> {
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            assert_eq!(at % 4, 0, "entry at {at} is not aligned");
            assert_eq!(&bytes[at..at + 6], b"070701", "magic at {at}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&bytes[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
                assert!(s.bytes().all(|b| b.is_ascii_hexdigit()), "{s}");
                u32::from_str_radix(s, 16).unwrap()
            };
            let (ino, mode, uid, gid, nlink, mtime, size) = (
                field(0),
                field(1),
                field(2),
                field(3),
                field(4),
                field(5),
                field(6),
            );
            assert_eq!((field(7), field(8)), (0, 0), "devmajor/devminor");
            let rdev = (field(9), field(10));
            let namesize = field(11) as usize;
            assert_eq!(field(12), 0, "check");
            let name_start = at + 110;
            assert_eq!(
                bytes[name_start + namesize - 1],
                0,
                "name is NUL-terminated"
            );
            let name =
                String::from_utf8(bytes[name_start..name_start + namesize - 1].to_vec()).unwrap();
            let mut data_start = name_start + namesize;
            while !data_start.is_multiple_of(4) {
                assert_eq!(bytes[data_start], 0, "padding after {name}");
                data_start += 1;
            }
            let data = bytes[data_start..data_start + size as usize].to_vec();
            at = data_start + size as usize;
            while !at.is_multiple_of(4) {
                assert_eq!(bytes[at], 0, "data padding of {name}");
                at += 1;
            }
            if name == "TRAILER!!!" {
                assert_eq!((ino, mode, nlink, size), (0, 0, 1, 0));
                assert_eq!(at, bytes.len(), "nothing after the trailer");
                return out;
            }
            out.push(Parsed {
                name,
                ino,
                mode,
                uid,
                gid,
                nlink,
                mtime,
                rdev,
                data,
            });
        }
    }

    use super::super::testkit::fixture;

    /// A root file system with metadata, a plain file, a symlink, devices.
    fn rootfs(cas: &strata_store::Cas) -> Digest {
        let mut t = TreeBuilder::new();
        let meta = |mode, uid, gid| Some(Meta { mode, uid, gid });
        let init = cas.put_bytes(b"#!/bin/sh\nexec /bin/sh\n").unwrap();
        let odd = cas.put_bytes(b"12345").unwrap();
        let empty = cas.put_bytes(b"").unwrap();
        t.insert(
            "init",
            Node::File {
                digest: init,
                executable: true,
                meta: None,
            },
        )
        .unwrap();
        t.insert(
            "bin/su",
            Node::File {
                digest: odd,
                executable: true,
                meta: meta(0o4755, 0, 0),
            },
        )
        .unwrap();
        t.insert(
            "bin/sh",
            Node::Symlink {
                target: "busybox".into(),
                meta: None,
            },
        )
        .unwrap();
        t.insert("etc/empty", Node::file(empty, false)).unwrap();
        t.insert(
            "home/user/notes",
            Node::File {
                digest: odd,
                executable: false,
                meta: meta(0o600, 1000, 1000),
            },
        )
        .unwrap();
        t.insert(
            "dev/console",
            Node::Device {
                kind: DeviceKind::Char,
                major: 5,
                minor: 1,
                meta: meta(0o600, 0, 5),
            },
        )
        .unwrap();
        t.insert(
            "dev/sda",
            Node::Device {
                kind: DeviceKind::Block,
                major: 8,
                minor: 0,
                meta: None,
            },
        )
        .unwrap();
        t.insert(
            "run/initctl",
            Node::Device {
                kind: DeviceKind::Fifo,
                major: 0,
                minor: 0,
                meta: meta(0o600, 0, 0),
            },
        )
        .unwrap();
        let mut tmp = TreeBuilder::new();
        tmp.set_meta(meta(0o1777, 0, 0));
        t.insert("tmp", Node::Dir(tmp)).unwrap();
        t.store(cas).unwrap()
    }

    fn ctx<'a>(cas: &'a strata_store::Cas, tree: Digest) -> Ctx<'a> {
        let mut root = TreeBuilder::new();
        root.insert("deps/rootfs", Node::Stored(tree)).unwrap();
        Ctx {
            cas,
            input_root: root.store(cas).unwrap(),
            source_date_epoch: 1_700_000_000,
            dep_keys: BTreeMap::new(),
        }
    }

    fn params(compression: Compression, name: Option<&str>) -> Params {
        Params {
            from: From::try_from("rootfs".to_string()).unwrap(),
            compression,
            level: None,
            name: name.map(str::to_string),
        }
    }

    /// Runs the rule and returns the one output file's name and contents.
    fn output(cas: &strata_store::Cas, out: Digest) -> (String, Vec<u8>) {
        let entries = walk(cas, &out).unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let (
            name,
            Entry::File {
                digest, executable, ..
            },
        ) = &entries[0]
        else {
            panic!("{entries:?}")
        };
        assert!(!executable);
        (name.clone(), cas.read(digest).unwrap())
    }

    fn unpacked(bytes: &[u8]) -> Vec<u8> {
        let mut raw = Vec::new();
        decoder(bytes).unwrap().read_to_end(&mut raw).unwrap();
        raw
    }

    #[test]
    fn writes_the_tree_as_the_kernel_reads_it() {
        let f = fixture();
        let cas = f.store.cas();
        let tree = rootfs(cas);
        let out = run(&params(Compression::Gzip, None), &ctx(cas, tree)).unwrap();
        let (name, bytes) = output(cas, out);
        assert_eq!(name, "initramfs.cpio.gz");
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        let entries = parse(&unpacked(&bytes));
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "bin/su",
                "dev",
                "dev/console",
                "dev/sda",
                "etc",
                "etc/empty",
                "home",
                "home/user",
                "home/user/notes",
                "init",
                "run",
                "run/initctl",
                "tmp",
            ]
        );
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.ino, i as u32 + 1, "{}", e.name);
            assert_eq!(e.mtime, 1_700_000_000, "{}", e.name);
            let is_dir = e.mode & 0o170000 == S_IFDIR;
            assert_eq!(e.nlink, if is_dir { 2 } else { 1 }, "{}", e.name);
        }
        let by: BTreeMap<&str, &Parsed> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
        assert_eq!(by["bin"].mode, S_IFDIR | 0o755);
        assert_eq!(by["bin/sh"].mode, S_IFLNK | 0o777);
        assert_eq!(by["bin/sh"].data, b"busybox");
        assert_eq!(by["bin/su"].mode, S_IFREG | 0o4755);
        assert_eq!(by["bin/su"].data, b"12345");
        assert_eq!(by["dev/console"].mode, S_IFCHR | 0o600);
        assert_eq!((by["dev/console"].uid, by["dev/console"].gid), (0, 5));
        assert_eq!(by["dev/console"].rdev, (5, 1));
        assert!(by["dev/console"].data.is_empty());
        assert_eq!(by["dev/sda"].mode, S_IFBLK | 0o644);
        assert_eq!(by["dev/sda"].rdev, (8, 0));
        assert_eq!(by["etc/empty"].mode, S_IFREG | 0o644);
        assert!(by["etc/empty"].data.is_empty());
        assert_eq!(by["home/user/notes"].mode, S_IFREG | 0o600);
        assert_eq!(
            (by["home/user/notes"].uid, by["home/user/notes"].gid),
            (1000, 1000)
        );
        assert_eq!(by["init"].mode, S_IFREG | 0o755);
        assert_eq!(by["init"].data, b"#!/bin/sh\nexec /bin/sh\n");
        assert_eq!((by["init"].uid, by["init"].gid), (0, 0));
        assert_eq!(by["run/initctl"].mode, S_IFIFO | 0o600);
        assert_eq!(by["run/initctl"].rdev, (0, 0));
        assert_eq!(by["tmp"].mode, S_IFDIR | 0o1777);
    }

    #[test]
    fn folder_metadata_is_kept() {
        let f = fixture();
        let cas = f.store.cas();
        let mut t = TreeBuilder::new();
        let mut home = TreeBuilder::new();
        home.set_meta(Some(Meta {
            mode: 0o700,
            uid: 1000,
            gid: 100,
        }));
        home.insert("x", Node::file(cas.put_bytes(b"x").unwrap(), false))
            .unwrap();
        t.insert("home", Node::Dir(home)).unwrap();
        let tree = t.store(cas).unwrap();
        let out = run(&params(Compression::None, None), &ctx(cas, tree)).unwrap();
        let (name, bytes) = output(cas, out);
        assert_eq!(name, "initramfs.cpio");
        let entries = parse(&bytes);
        assert_eq!(entries[0].name, "home");
        assert_eq!(entries[0].mode, S_IFDIR | 0o700);
        assert_eq!((entries[0].uid, entries[0].gid), (1000, 100));
        assert_eq!(entries[1].name, "home/x");
    }

    #[test]
    fn every_codec_gives_the_same_archive_and_is_deterministic() {
        let f = fixture();
        let cas = f.store.cas();
        let tree = rootfs(cas);
        let c = ctx(cas, tree);
        let (n, plain) = output(cas, run(&params(Compression::None, None), &c).unwrap());
        assert_eq!(n, "initramfs.cpio");
        // Data of every length is padded: the whole archive is 4-aligned.
        assert_eq!(plain.len() % 4, 0);
        let (n, zst) = output(cas, run(&params(Compression::Zstd, None), &c).unwrap());
        assert_eq!(n, "initramfs.cpio.zst");
        assert_eq!(&zst[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        assert_eq!(unpacked(&zst), plain);
        let named = params(Compression::Gzip, Some("tinyipa.gz"));
        let first = run(&named, &c).unwrap();
        let (n, gz) = output(cas, first);
        assert_eq!(n, "tinyipa.gz");
        assert_eq!(unpacked(&gz), plain);
        assert_eq!(run(&named, &c).unwrap(), first, "deterministic");
        // The time enters the archive.
        let later = Ctx {
            source_date_epoch: 1_800_000_000,
            ..ctx(cas, tree)
        };
        assert_ne!(run(&named, &later).unwrap(), first);
    }

    #[test]
    fn an_empty_tree_is_just_the_trailer() {
        let f = fixture();
        let cas = f.store.cas();
        let tree = TreeBuilder::new().store(cas).unwrap();
        let (_, bytes) = output(
            cas,
            run(&params(Compression::None, None), &ctx(cas, tree)).unwrap(),
        );
        assert!(parse(&bytes).is_empty());
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(bytes.len(), 124); // 110 + "TRAILER!!!\0" (11) + 3 padding
    }

    #[test]
    fn a_time_beyond_2106_is_refused() {
        let f = fixture();
        let cas = f.store.cas();
        let tree = rootfs(cas);
        let c = Ctx {
            source_date_epoch: 1 << 33,
            ..ctx(cas, tree)
        };
        let e = run(&params(Compression::None, None), &c).unwrap_err();
        assert!(e.to_string().contains("SOURCE_DATE_EPOCH"), "{e}");
    }

    #[test]
    fn parameters_are_checked() {
        let parse = |json: serde_json::Value| {
            crate::builtin::Builtin::parse("initramfs", json.as_object().unwrap().clone())
        };
        assert!(parse(serde_json::json!({"from": "rootfs"})).is_ok());
        assert!(
            parse(serde_json::json!({"from": "rootfs", "compression": "zstd", "level": 22}))
                .is_ok()
        );
        let e = parse(serde_json::json!({"from": "rootfs", "compression": "xz"})).unwrap_err();
        assert_eq!(e.field(), Some("compression"));
        let e = parse(serde_json::json!({"from": "rootfs", "level": 10})).unwrap_err();
        assert_eq!(e.field(), Some("level"));
        assert!(e.message.contains("out of range"), "{}", e.message);
        let e = parse(serde_json::json!({"from": "rootfs", "compression": "none", "level": 3}))
            .unwrap_err();
        assert_eq!(e.field(), Some("level"));
        for bad in ["a/b", "", "..", "."] {
            let e = parse(serde_json::json!({"from": "rootfs", "name": bad})).unwrap_err();
            assert_eq!(e.field(), Some("name"), "{bad}");
        }
        let e = parse(serde_json::json!({"from": "rootfs", "prefix": "x"})).unwrap_err();
        assert_eq!(e.field(), Some("prefix"));
    }
}
