//! `extract`: unpack an archive (tar, tar.gz, tar.xz, tar.zst, tar.bz2, or a
//! .deb) into a tree, treating it as untrusted.
//!
//! ```yaml
//! base:
//!   rule: extract
//!   from: fetch:busybox.deb     # a file in a dependency's output, or srcs:path
//!   strip_components: 0
//!   include: ["usr/**"]         # globs on entry paths (after stripping)
//!   exclude: ["usr/share/doc/**"]
//!   control: false              # .deb only: also yield the control files under DEBIAN/
//!   max_size: 8589934592        # bytes of content at most (archive bombs)
//!   prefix: opt                 # place everything under this folder
//! ```
//!
//! The format is recognised by content, never by name: an `ar` archive is a
//! .deb (`debian-binary`, `control.tar.*`, `data.tar.*`, in that order);
//! anything else is a tar, plain or compressed with gzip, xz, zstd or bzip2.
//! Nothing is written on disk: contents go straight into the store and the
//! output is a tree of the store.
//!
//! **Paths.** Leading `/` and `.` components are dropped (`/etc/x` becomes
//! `etc/x`); an entry with a `..` component, a NUL byte or a name that is not
//! UTF-8 is refused. `strip_components` then drops leading components (an
//! entry left with none is skipped), and for a hard link its target too,
//! like GNU tar.
//!
//! **Selection.** `include` and `exclude` are globs (`*` stays within one
//! folder, `**` crosses folders) matched against the stripped path. A
//! pattern matching a folder also covers everything below it. An entry is
//! kept when it (or a folder above it) matches an `include` (or there is no
//! `include`) and neither it nor a folder above it matches an `exclude`. A
//! folder entry is also kept, with its metadata, when anything below it is
//! kept. The control files of a .deb (`control: true`) are always kept, under
//! `DEBIAN/`, with the data at the root, like `dpkg-deb -R`.
//!
//! **Metadata.** Files, folders, symlinks, device nodes and FIFOs keep their
//! mode (with setuid, setgid and sticky bits), uid and gid as tree metadata;
//! folders that the archive does not list get 0755 root:root. Symlink targets
//! are kept verbatim. Devices and FIFOs are metadata only. Times are dropped.
//! A hard link becomes a copy of the file it names (same digest), with the
//! link's own header metadata; its target must already have been extracted
//! (earlier in the archive and kept), otherwise the link is refused.
//!
//! **Order.** A later entry with the same path replaces an earlier one, like
//! tar. The tree is then assembled in path order, so the same entries give
//! the same tree whatever their order in the archive; for the same reason an
//! entry below a path that the archive makes a symlink (or a file) is
//! refused wherever that symlink appears in the archive.
//!
//! **Limits.** The declared content of all entries may not exceed `max_size`
//! (default 8 GiB; every entry counts, kept or not, since skipping an entry
//! still decompresses it), an archive may hold at most 1,000,000 entries,
//! paths at most 256 components, extension headers (long names, PAX records) at most
//! 16 MiB per entry, and all names together at most 256 MiB. Each refusal
//! names the entry; a malformed archive is a format error.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use strata_formats::unpack::{AR_MAGIC, DEFAULT_DIR_META, DEFAULT_MAX_SIZE, Limits, Unpacker};
use strata_store::{Cas, Digest, StoreError};

use super::{Builtin, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, PathExt, key};
use crate::table::{Field, Parse, Rule};

/// `extract`: the files of an archive as a tree.
pub const RULE: Rule = Rule {
    name: "extract",
    doc: "unpacks a tar (plain, gzip, xz, zstd or bzip2) or a .deb into a tree, safely",
    fields: &[
        Field::value(
            "from",
            "the archive: a file of `srcs` or of a target's output",
        ),
        Field::value(
            "strip_components",
            "leading path components dropped from each entry",
        ),
        Field::value("include", "patterns of the entries kept (default all)"),
        Field::value("exclude", "patterns of the entries dropped"),
        Field::value(
            "control",
            "a .deb: also unpack its control files, under `DEBIAN/`",
        ),
        Field::value("max_size", MAX_SIZE_DOC),
        Field::value("prefix", "a folder every entry is placed under"),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Extract(from_fields(f)?))),
    image_output: false,
    contains_inputs: false,
};

/// The `max_size` doc, with the default the code applies: a const cannot
/// format a number, so the build fails here if the default changes and the
/// text does not.
const MAX_SIZE_DOC: &str = if DEFAULT_MAX_SIZE == 8 << 30 {
    "bytes of content the entries may declare in all, kept or not (default 8 GiB)"
} else {
    panic!("DEFAULT_MAX_SIZE changed: update the `max_size` doc")
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub from: From,
    #[serde(default)]
    pub strip_components: u32,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub control: bool,
    #[serde(default)]
    pub max_size: Option<u64>,
    #[serde(default)]
    pub prefix: Option<String>,
}

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        globs(&self.include, "include")?;
        globs(&self.exclude, "exclude")?;
        prefix_parts(self.prefix.as_deref())?;
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        self.from.named(key("from"))
    }
}

/// Compiles `patterns` (`*` within a folder, `**` across folders).
fn globs(patterns: &[String], field: &str) -> Result<GlobSet, ParamError> {
    let mut set = GlobSetBuilder::new();
    for (i, pattern) in patterns.iter().enumerate() {
        let at = || key(field).index(i);
        let trimmed = pattern.trim_start_matches("./").trim_matches('/');
        if trimmed.is_empty() {
            return Err(ParamError::at(
                at(),
                format!("`{pattern}` is an empty pattern"),
            ));
        }
        let glob = GlobBuilder::new(trimmed)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| ParamError::at(at(), format!("`{pattern}` is not a valid glob: {e}")))?;
        set.add(glob);
    }
    set.build()
        .map_err(|e| ParamError::new(field, e.to_string()))
}

/// The components of `prefix`, checked.
fn prefix_parts(prefix: Option<&str>) -> Result<Vec<String>, ParamError> {
    let parts: Vec<String> = prefix
        .unwrap_or("")
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if parts
        .iter()
        .any(|p| p == "." || p == ".." || p.contains('\0'))
    {
        return Err(ParamError::new(
            "prefix",
            "the prefix must be a plain relative path (no `.`, `..` or NUL)",
        ));
    }
    Ok(parts)
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<Digest, BuiltinError> {
    let (_, blob) = ctx.file(&p.from)?;
    let limits = Limits {
        max_size: p.max_size.unwrap_or(DEFAULT_MAX_SIZE),
        ..Limits::default()
    };
    extract(p, ctx.cas, &blob, limits)
}

fn extract(p: &Params, cas: &Cas, blob: &Digest, limits: Limits) -> Result<Digest, BuiltinError> {
    let bad_param = |e: ParamError| BuiltinError::Format(e.message);
    let include = globs(&p.include, "include").map_err(bad_param)?;
    let exclude = globs(&p.exclude, "exclude").map_err(bad_param)?;
    let prefix = prefix_parts(p.prefix.as_deref()).map_err(bad_param)?;
    let mut x = Unpacker::new(cas, limits, Some(DEFAULT_DIR_META)).select(
        p.strip_components as usize,
        include,
        exclude,
    );
    let mut file = match File::open(cas.path(blob)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::Missing { digest: *blob }.into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut magic = Vec::with_capacity(AR_MAGIC.len());
    (&mut file)
        .take(AR_MAGIC.len() as u64)
        .read_to_end(&mut magic)?;
    file.seek(SeekFrom::Start(0))?;
    if magic == AR_MAGIC {
        x.deb(file, p.control)?;
    } else if p.control {
        return Err(BuiltinError::Input {
            what: String::from(p.from.clone()),
            reason: "is not a .deb package, so it has no control files (`control: true`)".into(),
        });
    } else {
        x.tar(BufReader::new(file))?;
    }
    Ok(x.finish(&prefix)?)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use strata_formats::unpack::{MAX_DEPTH, tar_to_tree, unpack_tar};
    use strata_store::tree::{Entry, Meta, Node, TreeBuilder, walk};

    use super::*;

    // ---- archive construction -------------------------------------------

    /// One tar entry, written header by header so hostile names survive.
    struct E {
        name: Vec<u8>,
        kind: tar::EntryType,
        data: Vec<u8>,
        link: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
        size: Option<u64>,
        dev: (u32, u32),
    }

    fn e(name: &str, kind: tar::EntryType) -> E {
        E {
            name: name.as_bytes().to_vec(),
            kind,
            data: Vec::new(),
            link: Vec::new(),
            mode: if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            },
            uid: 0,
            gid: 0,
            size: None,
            dev: (0, 0),
        }
    }

    fn file(name: &str, data: &str) -> E {
        let mut x = e(name, tar::EntryType::Regular);
        x.data = data.as_bytes().to_vec();
        x
    }

    fn dir(name: &str) -> E {
        e(name, tar::EntryType::Directory)
    }

    fn symlink(name: &str, target: &str) -> E {
        let mut x = e(name, tar::EntryType::Symlink);
        x.link = target.as_bytes().to_vec();
        x.mode = 0o777;
        x
    }

    fn hardlink(name: &str, target: &str) -> E {
        let mut x = e(name, tar::EntryType::Link);
        x.link = target.as_bytes().to_vec();
        x
    }

    impl E {
        fn mode(mut self, mode: u32) -> E {
            self.mode = mode;
            self
        }
        fn owner(mut self, uid: u64, gid: u64) -> E {
            self.uid = uid;
            self.gid = gid;
            self
        }
    }

    /// A GNU tar of `entries`, names (< 100 bytes) written verbatim.
    fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut out = Vec::new();
        for x in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..x.name.len()].copy_from_slice(&x.name);
            h.as_old_mut().linkname[..x.link.len()].copy_from_slice(&x.link);
            h.set_entry_type(x.kind);
            h.set_mode(x.mode);
            h.set_uid(x.uid);
            h.set_gid(x.gid);
            h.set_mtime(1_700_000_000);
            h.set_size(x.size.unwrap_or(x.data.len() as u64));
            h.set_device_major(x.dev.0).unwrap();
            h.set_device_minor(x.dev.1).unwrap();
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&x.data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn zst(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    fn bz2(data: &[u8]) -> Vec<u8> {
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// A .deb: debian-binary, then the given members.
    fn deb_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = ar::Builder::new(Vec::new());
        b.append(
            &ar::Header::new(b"debian-binary".to_vec(), 4),
            &b"2.0\n"[..],
        )
        .unwrap();
        for (name, data) in members {
            b.append(
                &ar::Header::new(name.as_bytes().to_vec(), data.len() as u64),
                data.as_slice(),
            )
            .unwrap();
        }
        b.into_inner().unwrap()
    }

    // ---- running the rule -----------------------------------------------

    use super::super::testkit::{Fixture, fixture};

    fn params(yaml_like: serde_json::Value) -> Params {
        let mut v = serde_json::json!({"from": "srcs:pkg"});
        for (k, val) in yaml_like.as_object().unwrap() {
            v[k] = val.clone();
        }
        let p: Params = serde_json::from_value(v).unwrap();
        p.validate().unwrap();
        p
    }

    impl Fixture {
        fn cas(&self) -> &Cas {
            self.store.cas()
        }

        /// Runs the rule on `archive` (as `work/pkg`) through `run`.
        fn run(&self, archive: &[u8], p: &Params) -> Result<Digest, BuiltinError> {
            let blob = self.cas().put_bytes(archive).unwrap();
            let mut root = TreeBuilder::new();
            root.insert("work/pkg", Node::file(blob, false)).unwrap();
            let input_root = root.store(self.cas()).unwrap();
            let ctx = Ctx {
                cas: self.cas(),
                input_root,
                source_date_epoch: 0,
                dep_keys: Default::default(),
            };
            super::run(p, &ctx)
        }

        /// Runs with custom limits.
        fn run_limited(
            &self,
            archive: &[u8],
            p: &Params,
            limits: Limits,
        ) -> Result<Digest, BuiltinError> {
            let blob = self.cas().put_bytes(archive).unwrap();
            extract(p, self.cas(), &blob, limits)
        }

        fn ok(&self, archive: &[u8], p: &Params) -> Digest {
            self.run(archive, p)
                .unwrap_or_else(|e| panic!("extract failed: {e}"))
        }

        /// The tree as `path -> short description`.
        fn listing(&self, tree: &Digest) -> Vec<(String, String)> {
            walk(self.cas(), tree)
                .unwrap()
                .into_iter()
                .map(|(p, e)| (p, self.describe(&e)))
                .collect()
        }

        fn paths(&self, tree: &Digest) -> Vec<String> {
            walk(self.cas(), tree)
                .unwrap()
                .into_iter()
                .map(|(p, _)| p)
                .collect()
        }

        fn describe(&self, e: &Entry) -> String {
            let m = |meta: &Option<Meta>| match meta {
                Some(m) => format!("{:04o} {}:{}", m.mode, m.uid, m.gid),
                None => "-".into(),
            };
            match e {
                Entry::File {
                    digest,
                    executable,
                    meta,
                } => format!(
                    "file {} {}{}",
                    m(meta),
                    String::from_utf8_lossy(&self.cas().read(digest).unwrap()),
                    if *executable { " x" } else { "" }
                ),
                Entry::Dir { meta, .. } => format!("dir {}", m(meta)),
                Entry::Symlink { target, meta } => format!("link {} -> {target}", m(meta)),
                Entry::Device {
                    kind,
                    major,
                    minor,
                    meta,
                } => format!("{} {} {major}:{minor}", kind.name(), m(meta)),
            }
        }

        fn content(&self, tree: &Digest, path: &str) -> Vec<u8> {
            let (_, e) = walk(self.cas(), tree)
                .unwrap()
                .into_iter()
                .find(|(p, _)| p == path)
                .unwrap_or_else(|| panic!("{path} is not in the tree"));
            match e {
                Entry::File { digest, .. } => self.cas().read(&digest).unwrap(),
                other => panic!("{path} is {other:?}"),
            }
        }
    }

    fn refused(r: Result<Digest, BuiltinError>) -> (String, String) {
        match r {
            Err(BuiltinError::Refused { entry, reason }) => (entry, reason),
            Err(other) => panic!("expected a refusal, got {other}"),
            Ok(d) => panic!("expected a refusal, got tree {}", d.hex()),
        }
    }

    fn l(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn none() -> Params {
        params(serde_json::json!({}))
    }

    // ---- attacks --------------------------------------------------------

    #[test]
    fn dot_dot_components_are_refused_by_name() {
        let f = fixture();
        for name in ["../evil", "a/../../evil", "./..", "ok/.."] {
            let archive = tar_of(&[file("fine", "x"), file(name, "pwned")]);
            let (entry, reason) = refused(f.run(&archive, &none()));
            assert_eq!(entry, name);
            assert!(reason.contains(".."), "{reason}");
        }
        // Even in an entry that `exclude` would leave out.
        let archive = tar_of(&[file("skip/../../evil", "pwned")]);
        let p = params(serde_json::json!({"exclude": ["skip"]}));
        assert_eq!(refused(f.run(&archive, &p)).0, "skip/../../evil");
    }

    #[test]
    fn absolute_paths_are_extracted_inside() {
        let f = fixture();
        let archive = tar_of(&[file("/etc/x", "inside"), file("//./usr/./bin/y", "y")]);
        let tree = f.ok(&archive, &none());
        assert_eq!(
            f.paths(&tree),
            ["etc", "etc/x", "usr", "usr/bin", "usr/bin/y"]
        );
        assert_eq!(f.content(&tree, "etc/x"), b"inside");
    }

    #[test]
    fn nothing_is_written_through_a_symlink_of_the_archive() {
        let f = fixture();
        let (entry, reason) = refused(f.run(
            &tar_of(&[symlink("evil", "/etc"), file("evil/passwd", "root::0:0")]),
            &none(),
        ));
        assert_eq!(entry, "evil/passwd");
        assert!(reason.contains("symlink"), "{reason}");
        // The same entries in the other order are refused too.
        let (entry, _) = refused(f.run(
            &tar_of(&[file("evil/passwd", "root::0:0"), symlink("evil", "/etc")]),
            &none(),
        ));
        assert_eq!(entry, "evil/passwd");
        // A relative link climbing out, and a deeper path through it.
        let (entry, _) = refused(f.run(
            &tar_of(&[dir("a"), symlink("a/up", "../../.."), file("a/up/x/y", "z")]),
            &none(),
        ));
        assert_eq!(entry, "a/up/x/y");
        // A symlink alone is kept verbatim, pointing wherever it points.
        let tree = f.ok(&tar_of(&[symlink("evil", "/etc")]), &none());
        assert_eq!(f.listing(&tree), l(&[("evil", "link 0777 0:0 -> /etc")]));
    }

    #[test]
    fn entries_below_a_file_are_refused() {
        let f = fixture();
        let (entry, _) = refused(f.run(&tar_of(&[file("f", "x"), file("f/g", "y")]), &none()));
        assert_eq!(entry, "f/g");
    }

    #[test]
    fn hard_links_must_name_an_extracted_file() {
        let f = fixture();
        let (entry, reason) =
            refused(f.run(&tar_of(&[hardlink("shadow", "/etc/shadow")]), &none()));
        assert_eq!(entry, "shadow");
        assert!(reason.contains("/etc/shadow"), "{reason}");
        let (entry, reason) = refused(f.run(&tar_of(&[hardlink("x", "../../x")]), &none()));
        assert_eq!(entry, "x");
        assert!(reason.contains(".."), "{reason}");
        // The target comes later in the archive: not extracted yet.
        let (entry, reason) = refused(f.run(
            &tar_of(&[hardlink("early", "later"), file("later", "content")]),
            &none(),
        ));
        assert_eq!(entry, "early");
        assert!(reason.contains("after its target"), "{reason}");
        // A folder is not a hard link target.
        let (entry, _) = refused(f.run(&tar_of(&[dir("d"), hardlink("l", "d")]), &none()));
        assert_eq!(entry, "l");
        // A target that `exclude` left out.
        let p = params(serde_json::json!({"exclude": ["secret"]}));
        let (entry, reason) = refused(f.run(
            &tar_of(&[file("secret", "s"), hardlink("copy", "secret")]),
            &p,
        ));
        assert_eq!(entry, "copy");
        assert!(reason.contains("left out"), "{reason}");
        // A target inside the tree, even written absolute: same digest, the
        // link's own metadata.
        let tree = f.ok(
            &tar_of(&[
                file("bin/busybox", "BB").mode(0o4755),
                hardlink("/bin/sh", "/bin/busybox").mode(0o4755),
                hardlink("bin/ls", "./bin/busybox").mode(0o755).owner(1, 2),
            ]),
            &none(),
        );
        assert_eq!(
            f.listing(&tree),
            l(&[
                ("bin", "dir 0755 0:0"),
                ("bin/busybox", "file 4755 0:0 BB x"),
                ("bin/ls", "file 0755 1:2 BB x"),
                ("bin/sh", "file 4755 0:0 BB x"),
            ])
        );
    }

    #[test]
    fn device_nodes_and_fifos_are_metadata_only() {
        let f = fixture();
        let mut null = e("dev/null", tar::EntryType::Char).mode(0o666);
        null.dev = (1, 3);
        let mut sda = e("dev/sda", tar::EntryType::Block).mode(0o660).owner(0, 6);
        sda.dev = (8, 0);
        let fifo = e("run/initctl", tar::EntryType::Fifo).mode(0o600);
        let tree = f.ok(&tar_of(&[dir("dev"), null, sda, fifo]), &none());
        assert_eq!(
            f.listing(&tree),
            l(&[
                ("dev", "dir 0755 0:0"),
                ("dev/null", "char 0666 0:0 1:3"),
                ("dev/sda", "block 0660 0:6 8:0"),
                ("run", "dir 0755 0:0"),
                ("run/initctl", "fifo 0600 0:0 0:0"),
            ])
        );
        // Nothing else: no blob was needed besides the tree records.
    }

    #[test]
    fn a_huge_declared_size_is_refused_before_reading() {
        let f = fixture();
        let mut bomb = file("bomb", "");
        bomb.size = Some(1 << 40);
        let (entry, reason) = refused(f.run(&tar_of(&[file("ok", "fine"), bomb]), &none()));
        assert_eq!(entry, "bomb");
        assert!(reason.contains("archive bomb"), "{reason}");
        // Sizes in base-256 notation, up to the largest (which the tar
        // reader itself rejects as an overflow): no panic.
        let mut bomb = file("big", "");
        bomb.size = Some(1 << 62);
        assert_eq!(refused(f.run(&tar_of(&[bomb]), &none())).0, "big");
        let mut bomb = file("max", "");
        bomb.size = Some(u64::MAX);
        let r = f.run(&tar_of(&[bomb]), &none());
        assert!(
            matches!(
                r,
                Err(BuiltinError::Format(_) | BuiltinError::Refused { .. })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn a_gzip_of_zeros_above_max_size_is_refused() {
        let f = fixture();
        let zeros = vec![0u8; 4 << 20];
        let mut entries = vec![file("small", "s")];
        let mut big = file("zeros", "");
        big.data = zeros;
        entries.push(big);
        let archive = gzip(&tar_of(&entries));
        assert!(archive.len() < 64 << 10, "{}", archive.len());
        let p = params(serde_json::json!({"max_size": 1 << 20}));
        let (entry, reason) = refused(f.run(&archive, &p));
        assert_eq!(entry, "zeros");
        assert!(reason.contains("max_size"), "{reason}");
        // Many entries that add up count too, kept or not.
        let many: Vec<E> = (0..20)
            .map(|i| {
                let mut x = file(&format!("f{i}"), "");
                x.data = vec![b'z'; 100 << 10];
                x
            })
            .collect();
        let p = params(serde_json::json!({"max_size": 1 << 20, "include": ["f1"]}));
        let (entry, _) = refused(f.run(&gzip(&tar_of(&many)), &p));
        assert_eq!(entry, "f10");
        // At the limit it is fine, and a large file is streamed.
        let p = params(serde_json::json!({"max_size": (4 << 20) + 1}));
        let tree = f.ok(&archive, &p);
        assert_eq!(f.content(&tree, "zeros").len(), 4 << 20);
    }

    #[test]
    fn too_many_entries_are_refused() {
        let f = fixture();
        let entries: Vec<E> = (0..11).map(|i| file(&format!("f{i:02}"), "x")).collect();
        let limits = Limits {
            max_entries: 10,
            ..Limits::default()
        };
        let (entry, reason) = refused(f.run_limited(&tar_of(&entries), &none(), limits));
        assert_eq!(entry, "f10");
        assert!(reason.contains("more than 10 entries"), "{reason}");
        assert!(
            f.run_limited(&tar_of(&entries[..10]), &none(), limits)
                .is_ok()
        );
    }

    #[test]
    fn a_gigantic_long_name_is_refused() {
        let f = fixture();
        // A GNU long-name header declaring 4 MiB of name, compressed.
        let mut long = e("././@LongLink", tar::EntryType::GNULongName);
        long.data = vec![b'a'; 4 << 20];
        let archive = gzip(&tar_of(&[file("first", "1"), long, file("x", "2")]));
        let limits = Limits {
            max_header_bytes: 1 << 20,
            ..Limits::default()
        };
        let (entry, reason) = refused(f.run_limited(&archive, &none(), limits));
        assert!(entry.contains("after `first`"), "{entry}");
        assert!(reason.contains("archive bomb"), "{reason}");
    }

    #[test]
    fn long_names_are_fine() {
        let f = fixture();
        let long = format!("{}/file", "d".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o640);
        b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "link", "t".repeat(200)).unwrap();
        let tree = f.ok(&b.into_inner().unwrap(), &none());
        assert_eq!(f.content(&tree, &long), b"hi");
        let listing = f.listing(&tree);
        assert_eq!(listing[2].0, "link");
        assert!(listing[2].1.ends_with(&"t".repeat(200)));
    }

    #[test]
    fn deep_nesting_within_the_limit_is_fine() {
        let f = fixture();
        let deep = vec!["d"; 40].join("/");
        let tree = f.ok(&tar_of(&[file(&format!("{deep}/f"), "x")]), &none());
        assert_eq!(f.content(&tree, &format!("{deep}/f")), b"x");
        // Deeper than the store walks (long PAX path): refused.
        let deeper = vec!["d"; MAX_DEPTH + 1].join("/");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        b.append_data(&mut h, &deeper, &b"x"[..]).unwrap();
        let (entry, reason) = refused(f.run(&b.into_inner().unwrap(), &none()));
        // The name is shortened in the message.
        assert!(
            entry.starts_with("d/d/d/") && entry.ends_with("/d/d"),
            "{entry}"
        );
        assert!(entry.contains("characters") && entry.len() < 400, "{entry}");
        assert!(reason.contains("deeper"), "{reason}");
    }

    #[test]
    fn the_deepest_tree_allowed_can_be_stored_and_walked() {
        // The limit is what the store can encode and walk on a 2 MiB stack.
        let f = fixture();
        let path = vec!["d"; MAX_DEPTH].join("/");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, &path, &b"x"[..]).unwrap();
        let tree = f.ok(&b.into_inner().unwrap(), &none());
        assert_eq!(walk(f.cas(), &tree).unwrap().len(), MAX_DEPTH);
    }

    #[test]
    fn names_that_are_not_utf8_are_refused() {
        let f = fixture();
        let mut bad = file("x", "y");
        bad.name = b"caf\xe9".to_vec();
        let (entry, reason) = refused(f.run(&tar_of(&[bad]), &none()));
        assert_eq!(entry, "caf\u{fffd}");
        assert!(reason.contains("UTF-8"), "{reason}");
    }

    #[test]
    fn unsupported_entry_types_are_refused() {
        let f = fixture();
        let odd = e("weird", tar::EntryType::new(b'D'));
        let (entry, _) = refused(f.run(&tar_of(&[odd]), &none()));
        assert_eq!(entry, "weird");
    }

    #[test]
    fn malformed_archives_are_format_errors() {
        let f = fixture();
        let mut archive = tar_of(&[file("a", "hello")]);
        archive[0] ^= 0x55; // checksum no longer matches
        assert!(matches!(
            f.run(&archive, &none()),
            Err(BuiltinError::Format(_))
        ));
        // Cut inside a file's content.
        let archive = tar_of(&[file("a", &"x".repeat(2000))]);
        let r = f.run(&archive[..1200], &none());
        assert!(
            matches!(r, Err(BuiltinError::Format(ref m)) if m.contains('a')),
            "{r:?}"
        );
        // Not an archive at all, a broken gzip, a truncated xz.
        for junk in [
            b"hello, world, this is not a tar".to_vec(),
            vec![0x1f, 0x8b, 8, 0, 1, 2, 3],
            xz(&tar_of(&[file("a", "b")]))[..40].to_vec(),
            b"!<arch>\ngarbage".to_vec(),
        ] {
            let r = f.run(&junk, &none());
            assert!(matches!(r, Err(BuiltinError::Format(_))), "{r:?}");
        }
    }

    #[test]
    fn mutated_archives_never_panic() {
        let f = fixture();
        let base = tar_of(&[
            dir("d"),
            file("d/f", "content"),
            symlink("d/l", "f"),
            hardlink("d/h", "d/f"),
            e("d/p", tar::EntryType::Fifo),
        ]);
        let deb = deb_of(&[
            (
                "control.tar.gz",
                gzip(&tar_of(&[file("./control", "Package: x\n")])),
            ),
            ("data.tar", base.clone()),
        ]);
        let p = params(serde_json::json!({"control": true}));
        // A fixed pseudo-random sequence (xorshift), so failures replay.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (input, params) in [(&base, none()), (&gzip(&base), none()), (&deb, p)] {
            for _ in 0..300 {
                let mut m = input.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() % m.len() as u64) as usize;
                    m[i] = next() as u8;
                }
                if next() % 8 == 0 {
                    let cut = (next() % m.len() as u64) as usize;
                    m.truncate(cut);
                }
                let _ = f.run(&m, &params);
            }
        }
    }

    // ---- metadata, order, options ---------------------------------------

    #[test]
    fn metadata_is_kept() {
        let f = fixture();
        let tree = f.ok(
            &tar_of(&[
                dir("tmp").mode(0o1777),
                dir("home/user").mode(0o700).owner(1000, 1000),
                file("usr/bin/sudo", "S").mode(0o4755),
                file("usr/bin/wall", "W").mode(0o2755).owner(0, 5),
                file("home/user/.profile", "P")
                    .mode(0o600)
                    .owner(1000, 1000),
                symlink("usr/bin/vi", "../../bin/busybox"),
            ]),
            &none(),
        );
        assert_eq!(
            f.listing(&tree),
            l(&[
                ("home", "dir 0755 0:0"),
                ("home/user", "dir 0700 1000:1000"),
                ("home/user/.profile", "file 0600 1000:1000 P"),
                ("tmp", "dir 1777 0:0"),
                ("usr", "dir 0755 0:0"),
                ("usr/bin", "dir 0755 0:0"),
                ("usr/bin/sudo", "file 4755 0:0 S x"),
                ("usr/bin/vi", "link 0777 0:0 -> ../../bin/busybox"),
                ("usr/bin/wall", "file 2755 0:5 W x"),
            ])
        );
    }

    #[test]
    fn the_tree_does_not_depend_on_entry_order() {
        let f = fixture();
        let entries = || {
            vec![
                dir("a").mode(0o750),
                file("a/one", "1"),
                dir("a/sub").mode(0o700),
                file("a/sub/two", "2"),
                symlink("b", "a/one"),
                file("c", "3").mode(0o755),
            ]
        };
        let forward = f.ok(&tar_of(&entries()), &none());
        let mut reversed = entries();
        reversed.reverse();
        assert_eq!(f.ok(&tar_of(&reversed), &none()), forward);
        let mut shuffled = entries();
        shuffled.rotate_left(3);
        assert_eq!(f.ok(&tar_of(&shuffled), &none()), forward);
        // A later duplicate replaces an earlier one.
        let mut dup = entries();
        dup.insert(0, file("c", "old"));
        dup.insert(0, dir("a").mode(0o700));
        assert_eq!(f.ok(&tar_of(&dup), &none()), forward);
        let mut replaced = entries();
        replaced.push(file("a/one", "new"));
        let tree = f.ok(&tar_of(&replaced), &none());
        assert_eq!(f.content(&tree, "a/one"), b"new");
    }

    #[test]
    fn strip_components_and_prefix() {
        let f = fixture();
        let archive = tar_of(&[
            dir("pkg-1.0"),
            dir("pkg-1.0/bin"),
            file("pkg-1.0/bin/tool", "T").mode(0o755),
            file("pkg-1.0/README", "R"),
            hardlink("pkg-1.0/bin/tool2", "pkg-1.0/bin/tool").mode(0o755),
            file("toplevel", "dropped"),
        ]);
        let p = params(serde_json::json!({"strip_components": 1}));
        let tree = f.ok(&archive, &p);
        assert_eq!(f.paths(&tree), ["README", "bin", "bin/tool", "bin/tool2"]);
        let p = params(serde_json::json!({"strip_components": 1, "prefix": "/opt/pkg/"}));
        let tree = f.ok(&archive, &p);
        assert_eq!(
            f.listing(&tree),
            l(&[
                ("opt", "dir 0755 0:0"),
                ("opt/pkg", "dir 0755 0:0"),
                ("opt/pkg/README", "file 0644 0:0 R"),
                ("opt/pkg/bin", "dir 0755 0:0"),
                ("opt/pkg/bin/tool", "file 0755 0:0 T x"),
                ("opt/pkg/bin/tool2", "file 0755 0:0 T x"),
            ])
        );
        let p = params(serde_json::json!({"strip_components": 2}));
        assert_eq!(f.paths(&f.ok(&archive, &p)), ["tool", "tool2"]);
        // A hard link whose target strip_components removes.
        let archive = tar_of(&[file("a/f", "x"), hardlink("a/g", "f")]);
        let p = params(serde_json::json!({"strip_components": 1}));
        let (entry, _) = refused(f.run(&archive, &p));
        assert_eq!(entry, "a/g");
    }

    #[test]
    fn include_and_exclude() {
        let f = fixture();
        let archive = tar_of(&[
            dir("usr").mode(0o755),
            dir("usr/bin").mode(0o711),
            file("usr/bin/app", "A").mode(0o755),
            dir("usr/share"),
            dir("usr/share/doc"),
            file("usr/share/doc/README", "doc"),
            dir("usr/share/man").mode(0o700),
            file("usr/share/man/app.1", "man"),
            dir("etc"),
            file("etc/app.conf", "conf"),
            file("notes.txt", "n"),
            file("etc/other.txt", "o"),
        ]);
        let run = |v| f.paths(&f.ok(&archive, &params(v)));
        assert_eq!(
            run(
                serde_json::json!({"include": ["usr/**"], "exclude": ["usr/share/doc/**", "usr/share/man"]})
            ),
            [
                "usr",
                "usr/bin",
                "usr/bin/app",
                "usr/share",
                "usr/share/doc"
            ]
        );
        // A folder name takes what is below it; a folder is kept (with its
        // metadata) when something below it is.
        let tree = f.ok(
            &archive,
            &params(serde_json::json!({"include": ["usr/bin", "etc/app.conf"]})),
        );
        assert_eq!(
            f.listing(&tree),
            l(&[
                ("etc", "dir 0755 0:0"),
                ("etc/app.conf", "file 0644 0:0 conf"),
                ("usr", "dir 0755 0:0"),
                ("usr/bin", "dir 0711 0:0"),
                ("usr/bin/app", "file 0755 0:0 A x"),
            ])
        );
        // `*` stays in one folder, `**` crosses them.
        assert_eq!(
            run(serde_json::json!({"include": ["*.txt"]})),
            ["notes.txt"]
        );
        assert_eq!(
            run(serde_json::json!({"include": ["**/*.txt"]})),
            ["etc", "etc/other.txt", "notes.txt"]
        );
        assert_eq!(
            run(serde_json::json!({"exclude": ["usr", "etc/*.conf"]})),
            ["etc", "etc/other.txt", "notes.txt"]
        );
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let check = |v: serde_json::Value, field: &str| {
            let mut all = serde_json::json!({"from": "srcs:pkg"});
            for (k, val) in v.as_object().unwrap() {
                all[k] = val.clone();
            }
            let p: Params = serde_json::from_value(all).unwrap();
            let err = p.validate().unwrap_err();
            assert_eq!(err.field(), Some(field), "{}", err.message);
        };
        check(serde_json::json!({"include": ["usr/[a"]}), "include");
        check(serde_json::json!({"exclude": ["{a,b"]}), "exclude");
        check(serde_json::json!({"exclude": ["/"]}), "exclude");
        check(serde_json::json!({"prefix": "opt/../.."}), "prefix");
    }

    #[test]
    fn every_compression_is_recognised_by_content() {
        let f = fixture();
        let plain = tar_of(&[dir("d"), file("d/f", "same")]);
        let want = f.ok(&plain, &none());
        for (name, bytes) in [
            ("gzip", gzip(&plain)),
            ("xz", xz(&plain)),
            ("zstd", zst(&plain)),
            ("bzip2", bz2(&plain)),
        ] {
            assert_eq!(f.ok(&bytes, &none()), want, "{name}");
        }
        // A plain tar whose first name looks like a bzip2 stream.
        let tricky = tar_of(&[file("BZh9-file", "b")]);
        assert_eq!(f.paths(&f.ok(&tricky, &none())), ["BZh9-file"]);
    }

    // ---- .deb -----------------------------------------------------------

    fn sample_deb() -> Vec<u8> {
        let control = tar_of(&[
            dir("./"),
            file("./control", "Package: hello\nVersion: 1.0\n"),
            file("./postinst", "#!/bin/sh\n").mode(0o755),
        ]);
        let data = tar_of(&[
            dir("./"),
            dir("./usr"),
            dir("./usr/bin"),
            file("./usr/bin/hello", "HELLO").mode(0o755),
            dir("./usr/share/doc/hello"),
            file("./usr/share/doc/hello/copyright", "(c)"),
        ]);
        deb_of(&[
            ("control.tar.gz", gzip(&control)),
            ("data.tar.xz", xz(&data)),
        ])
    }

    #[test]
    fn deb_data_at_the_root() {
        let f = fixture();
        let tree = f.ok(&sample_deb(), &none());
        assert_eq!(
            f.paths(&tree),
            [
                "usr",
                "usr/bin",
                "usr/bin/hello",
                "usr/share",
                "usr/share/doc",
                "usr/share/doc/hello",
                "usr/share/doc/hello/copyright"
            ]
        );
        assert_eq!(f.content(&tree, "usr/bin/hello"), b"HELLO");
    }

    #[test]
    fn deb_with_control_files_under_debian() {
        let f = fixture();
        let p = params(serde_json::json!({"control": true, "exclude": ["usr/share/doc"]}));
        let tree = f.ok(&sample_deb(), &p);
        assert_eq!(
            f.listing(&tree),
            l(&[
                ("DEBIAN", "dir 0755 0:0"),
                (
                    "DEBIAN/control",
                    "file 0644 0:0 Package: hello\nVersion: 1.0\n"
                ),
                ("DEBIAN/postinst", "file 0755 0:0 #!/bin/sh\n x"),
                ("usr", "dir 0755 0:0"),
                ("usr/bin", "dir 0755 0:0"),
                ("usr/bin/hello", "file 0755 0:0 HELLO x"),
            ])
        );
        // control on a plain tar is a mistake in the parameters.
        let r = f.run(&tar_of(&[file("a", "b")]), &p);
        assert!(matches!(r, Err(BuiltinError::Input { .. })), "{r:?}");
    }

    #[test]
    fn deb_members_are_checked() {
        let f = fixture();
        let data = tar_of(&[file("./x", "y")]);
        // No control member before data.
        let r = f.run(&deb_of(&[("data.tar", data.clone())]), &none());
        assert!(
            matches!(r, Err(BuiltinError::Format(ref m)) if m.contains("data.tar")),
            "{r:?}"
        );
        // No data.
        let r = f.run(&deb_of(&[("control.tar", tar_of(&[]))]), &none());
        assert!(
            matches!(r, Err(BuiltinError::Format(ref m)) if m.contains("no `data.tar`")),
            "{r:?}"
        );
        // GNU and BSD extended member names are refused before the ar
        // crate sees them.
        for name in ["/9999", "//", "#1/99999999"] {
            let mut bytes = deb_of(&[("control.tar", tar_of(&[])), ("data.tar", data.clone())]);
            let mut header =
                format!("{name:<16}0           0     0     100644  10        `\n").into_bytes();
            header.extend_from_slice(b"0123456789");
            bytes.extend_from_slice(&header);
            let r = f.run(&bytes, &none());
            assert!(matches!(r, Err(BuiltinError::Format(_))), "{name}: {r:?}");
        }
        // Hostile data inside a .deb is refused by name, like a tar.
        let evil = deb_of(&[
            ("control.tar", tar_of(&[])),
            (
                "data.tar.gz",
                gzip(&tar_of(&[file("../../etc/cron.d/x", "*")])),
            ),
        ]);
        assert_eq!(refused(f.run(&evil, &none())).0, "../../etc/cron.d/x");
        // Extra members starting with `_` are ignored.
        let ok = deb_of(&[
            ("_gpgorigin", b"sig".to_vec()),
            ("control.tar", tar_of(&[])),
            ("data.tar", data),
        ]);
        assert_eq!(f.paths(&f.ok(&ok, &none())), ["x"]);
    }

    #[test]
    fn deb_entries_count_towards_one_limit() {
        let f = fixture();
        let mut big = file("./big", "");
        big.data = vec![1; 600 << 10];
        let control = tar_of(&[file("./control", &"c".repeat(600 << 10))]);
        let deb = deb_of(&[
            ("control.tar.zst", zst(&control)),
            ("data.tar.bz2", bz2(&tar_of(&[big]))),
        ]);
        let p = params(serde_json::json!({"control": true, "max_size": 1 << 20}));
        assert_eq!(refused(f.run(&deb, &p)).0, "./big");
        // Without the control files, the data alone fits.
        let p = params(serde_json::json!({"max_size": 1 << 20}));
        assert_eq!(f.paths(&f.ok(&deb, &p)), ["big"]);
    }

    #[test]
    fn tar_to_tree_unpacks_a_stream_as_the_rule_does() {
        let f = fixture();
        let archive = tar_of(&[
            dir("etc").mode(0o750),
            file("etc/motd", "hi"),
            file("usr/bin/tool", "T").mode(0o4755),
            symlink("bin", "usr/bin"),
        ]);
        let want = f.ok(&archive, &none());
        let got = tar_to_tree(f.cas(), gzip(&archive).as_slice(), Limits::default()).unwrap();
        assert_eq!(got, want);
        // Unlisted folders (`usr`, `usr/bin`) get 0755 root:root.
        assert!(
            f.listing(&got)
                .contains(&("usr/bin".to_string(), "dir 0755 0:0".to_string()))
        );
        // The same refusals and limits.
        let evil = tar_of(&[symlink("l", "/etc"), file("l/passwd", "x")]);
        let r = tar_to_tree(f.cas(), evil.as_slice(), Limits::default());
        assert_eq!(refused(r.map_err(BuiltinError::from)).0, "l/passwd");
        let small = Limits {
            max_size: 1,
            ..Limits::default()
        };
        let r = tar_to_tree(f.cas(), archive.as_slice(), small);
        assert_eq!(refused(r.map_err(BuiltinError::from)).0, "etc/motd");
        // Without a default, unlisted folders carry no metadata.
        let bare = unpack_tar(f.cas(), archive.as_slice(), Limits::default(), None).unwrap();
        let listing = f.listing(&bare);
        assert!(
            listing.contains(&("usr".to_string(), "dir -".to_string())),
            "{listing:?}"
        );
        assert!(
            listing.contains(&("etc".to_string(), "dir 0750 0:0".to_string())),
            "{listing:?}"
        );
    }

    /// Found by fuzzing: a header declaring a size near u64::MAX overflowed
    /// the byte budget for the next entry (a panic in debug builds).
    #[test]
    fn fuzz_regression_a_huge_declared_size_is_an_error_not_a_panic() {
        let f = fixture();
        let archive = include_bytes!("testdata/fuzz-size-overflow.tar.gz");
        let p = params(serde_json::json!({
            "max_size": 16 << 20,
            "include": ["usr/**", "etc/*", "DEBIAN"],
            "prefix": "opt/x",
        }));
        let err = f.run(archive, &p).unwrap_err();
        assert!(
            !matches!(err, BuiltinError::Input { .. }),
            "the archive was not reached: {err}"
        );
    }
}
