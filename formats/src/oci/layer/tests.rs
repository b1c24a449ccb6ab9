use std::io::Write;

use strata_store::tree::DeviceKind;

use super::*;
use crate::oci::layout::Blob;
use crate::oci::spec::{self, ImageConfig, Manifest, RootFs};
use crate::tarball::{TarOptions, write_tree};
use crate::testkit::{Fixture, fixture};

/// A fixed pseudo-random sequence (xorshift), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const NAMES: &[&str] = &["a", "b", "c", "d", "e"];

/// Random trees and changes to them. With `full_meta`, every entry carries
/// metadata consistent with what a tar round trip keeps (executable bit
/// from the mode); otherwise files, links and devices may have none.
struct Gen<'a> {
    cas: &'a Cas,
    rng: Rng,
    full_meta: bool,
}

impl Gen<'_> {
    fn meta(&mut self, base: u32) -> Meta {
        let modes = [base, 0o700, 0o4755, 0o600, 0o1777];
        Meta {
            mode: modes[self.rng.below(modes.len() as u64) as usize],
            uid: [0, 1000][self.rng.below(2) as usize],
            gid: [0, 5][self.rng.below(2) as usize],
        }
    }

    fn maybe_meta(&mut self, base: u32) -> Option<Meta> {
        if self.full_meta || self.rng.chance(50) {
            Some(self.meta(base))
        } else {
            None
        }
    }

    fn node(&mut self, depth: usize) -> Node {
        let kinds = if depth < 3 { 6 } else { 4 };
        match self.rng.below(kinds) {
            0 | 1 => {
                let content = ["", "one", "two", "three"][self.rng.below(4) as usize];
                let digest = self.cas.put_bytes(content.as_bytes()).unwrap();
                let meta = self.maybe_meta(0o644);
                let executable = match meta {
                    Some(m) => m.mode & 0o111 != 0,
                    None => self.rng.chance(30),
                };
                Node::File {
                    digest,
                    executable,
                    meta,
                }
            }
            2 => Node::Symlink {
                target: ["a", "../b", "/etc/c"][self.rng.below(3) as usize].into(),
                meta: self.full_meta.then_some(Meta {
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                }),
            },
            3 => Node::Device {
                kind: [DeviceKind::Char, DeviceKind::Block, DeviceKind::Fifo]
                    [self.rng.below(3) as usize],
                major: self.rng.below(3) as u32,
                minor: self.rng.below(3) as u32,
                meta: self.full_meta.then_some(Meta {
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                }),
            },
            _ => Node::Stored(self.dir(depth + 1)),
        }
    }

    /// Folders always carry metadata (see the module documentation).
    fn dir(&mut self, depth: usize) -> Digest {
        let mut b = TreeBuilder::new();
        b.set_meta(Some(self.meta(0o755)));
        for name in NAMES {
            if self.rng.chance(45) {
                let n = self.node(depth);
                b.insert(name, n).unwrap();
            }
        }
        b.store(self.cas).unwrap()
    }

    /// `tree` with random deletions, replacements (kind changes included),
    /// additions, metadata changes and changes deep inside folders.
    fn mutate(&mut self, tree: &Digest, depth: usize) -> Digest {
        let mut meta = TreeBuilder::load(self.cas, tree).unwrap().meta();
        if self.rng.chance(15) {
            meta = Some(self.meta(0o755));
        }
        let mut b = TreeBuilder::new();
        b.set_meta(meta);
        let old = entries(self.cas, tree).unwrap();
        for name in NAMES {
            let roll = self.rng.below(100);
            let n = match old.get(*name) {
                None if roll < 20 => Some(self.node(depth)),
                None => None,
                Some(_) if roll < 12 => None,
                Some(_) if roll < 24 => Some(self.node(depth)),
                Some(Entry::Dir { digest, .. }) if roll < 60 => {
                    Some(Node::Stored(self.mutate(digest, depth + 1)))
                }
                Some(e) => Some(Node::from(e.clone())),
            };
            if let Some(n) = n {
                b.insert(name, n).unwrap();
            }
        }
        b.store(self.cas).unwrap()
    }
}

/// The tree as `path kind meta [detail]` lines, for readable failures.
fn listing(cas: &Cas, tree: &Digest) -> Vec<String> {
    walk(cas, tree)
        .unwrap()
        .into_iter()
        .map(|(p, e)| match e {
            Entry::File {
                digest,
                executable,
                meta,
            } => format!(
                "{p} file {meta:?} x={executable} {:?}",
                String::from_utf8_lossy(&cas.read(&digest).unwrap())
            ),
            Entry::Dir { meta, .. } => format!("{p}/ {meta:?}"),
            Entry::Symlink { target, meta } => format!("{p} -> {target} {meta:?}"),
            Entry::Device {
                kind,
                major,
                minor,
                meta,
            } => format!("{p} {} {major}:{minor} {meta:?}", kind.name()),
        })
        .collect()
}

fn assert_same_tree(cas: &Cas, got: &Digest, want: &Digest, context: &str) {
    if got != want {
        panic!(
            "{context}\n got: {:#?}\nwant: {:#?}",
            listing(cas, got),
            listing(cas, want)
        );
    }
}

#[test]
fn applying_the_diff_of_two_trees_gives_the_upper_tree() {
    let f = fixture();
    let cas = f.store.cas();
    let mut g = Gen {
        cas,
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        full_meta: false,
    };
    let (mut whiteouts, mut skipped_unchanged) = (0, 0);
    for round in 0..400 {
        let lower = g.dir(0);
        let upper = if g.rng.chance(20) {
            g.dir(0)
        } else {
            g.mutate(&lower, 0)
        };
        let layer = diff(cas, &lower, &upper).unwrap();
        let lines = listing(cas, &layer);
        whiteouts += lines.iter().filter(|l| l.contains(".wh.")).count();
        if lines.len() < listing(cas, &upper).len() {
            skipped_unchanged += 1;
        }
        let got = apply(cas, &lower, &layer).unwrap();
        assert_same_tree(
            cas,
            &got,
            &upper,
            &format!(
                "round {round}\nlower: {:#?}\nlayer: {lines:#?}",
                listing(cas, &lower)
            ),
        );
    }
    // The generator exercised deletions and unchanged subtrees.
    assert!(whiteouts > 100, "{whiteouts}");
    assert!(skipped_unchanged > 100, "{skipped_unchanged}");
}

/// The layer written as a tar (as it goes into an image) and unpacked again
/// as an image's layers are, gives the same result.
#[test]
fn a_diff_survives_a_tar_round_trip() {
    let f = fixture();
    let cas = f.store.cas();
    let mut g = Gen {
        cas,
        rng: Rng(0x2545_f491_4f6c_dd1d),
        full_meta: true,
    };
    for round in 0..150 {
        let lower = g.dir(0);
        let upper = g.mutate(&lower, 0);
        let layer = diff(cas, &lower, &upper).unwrap();
        let tar = write_tree(cas, &layer, Vec::new(), &TarOptions::default()).unwrap();
        let unpacked = unpack_tar(cas, tar.as_slice(), Limits::default(), None).unwrap();
        let applier = Applier {
            cas,
            unpacked: true,
        };
        let lower_meta = TreeBuilder::load(cas, &lower).unwrap().meta();
        let got = applier
            .dir(Some((&lower, lower_meta)), &unpacked, None, "", 0)
            .unwrap();
        // The tar has no entry for the root folder itself.
        let mut want = TreeBuilder::load(cas, &upper).unwrap();
        want.set_meta(lower_meta);
        let want = want.store(cas).unwrap();
        assert_same_tree(cas, &got, &want, &format!("round {round}"));
    }
}

/// A tree from `(path, content)`: content `"/"` is a folder, `"->x"` a
/// symlink to `x`, anything else a file.
fn tree(cas: &Cas, items: &[(&str, &str)]) -> Digest {
    let mut b = TreeBuilder::new();
    b.set_meta(Some(DEFAULT_DIR_META));
    for (path, content) in items {
        let node = match *content {
            "/" => {
                let mut d = TreeBuilder::new();
                d.set_meta(Some(DEFAULT_DIR_META));
                Node::Dir(d)
            }
            c if c.starts_with("->") => Node::Symlink {
                target: c[2..].into(),
                meta: None,
            },
            c => Node::file(cas.put_bytes(c.as_bytes()).unwrap(), false),
        };
        b.insert_at(cas, path, node, Some(DEFAULT_DIR_META))
            .unwrap();
    }
    b.store(cas).unwrap()
}

fn paths(cas: &Cas, t: &Digest) -> Vec<String> {
    walk(cas, t).unwrap().into_iter().map(|(p, _)| p).collect()
}

#[test]
fn a_diff_holds_only_changes_and_whiteouts() {
    let f = fixture();
    let cas = f.store.cas();
    let lower = tree(
        cas,
        &[
            ("usr/bin/sh", "sh"),
            ("usr/lib/big/x", "x"),
            ("etc/motd", "old"),
            ("etc/gone", "g"),
            ("var/cache/junk", "j"),
            ("link", "->usr"),
        ],
    );
    let upper = tree(
        cas,
        &[
            ("usr/bin/sh", "sh"),
            ("usr/lib/big/x", "x"),
            ("etc/motd", "new"),
            ("link/", "/"),
            ("link/f", "f"),
        ],
    );
    let layer = diff(cas, &lower, &upper).unwrap();
    assert_eq!(
        paths(cas, &layer),
        [
            "etc",
            "etc/.wh.gone",
            "etc/motd",
            "link",
            "link/f",
            ".wh.var"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    // Nothing changed, nothing in the layer.
    let same = diff(cas, &lower, &lower).unwrap();
    assert!(paths(cas, &same).is_empty());
    assert_eq!(apply(cas, &lower, &same).unwrap(), lower);
    // A name a layer cannot carry.
    let odd = tree(cas, &[("etc/.wh.x", "x")]);
    let e = diff(cas, &lower, &odd).unwrap_err().to_string();
    assert!(e.contains("etc/.wh.x") && e.contains("deletions"), "{e}");
    let e = diff(cas, &odd, &tree(cas, &[("new/.wh.y", "y")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("new/.wh.y"), "{e}");
}

#[test]
fn opaque_whiteouts_hide_what_lower_layers_had() {
    let f = fixture();
    let cas = f.store.cas();
    let lower = tree(
        cas,
        &[
            ("etc/a", "a"),
            ("etc/sub/deep", "d"),
            ("etc/keep", "k"),
            ("other/x", "x"),
        ],
    );
    let layer = tree(
        cas,
        &[
            ("etc/.wh..wh..opq", ""),
            ("etc/keep", "k2"),
            ("etc/new", "n"),
            // Whiteouts hide only lower entries, never the same layer's.
            ("etc/.wh.new", ""),
            ("other/.wh.x", ""),
            ("other/.wh.missing", ""),
            // In a folder the lower tree does not have, whiteouts are moot.
            ("fresh/.wh.y", ""),
            ("fresh/z", "z"),
            // AUFS metadata is not content.
            (".wh..wh.plnk/123", "h"),
        ],
    );
    let got = apply(cas, &lower, &layer).unwrap();
    assert_eq!(
        paths(cas, &got),
        ["etc", "etc/keep", "etc/new", "fresh", "fresh/z", "other"]
    );
    // An opaque whiteout at the root clears everything below.
    let layer = tree(cas, &[(".wh..wh..opq", ""), ("only", "o")]);
    assert_eq!(paths(cas, &apply(cas, &lower, &layer).unwrap()), ["only"]);
}

#[test]
fn a_layer_folder_replaces_a_lower_file_or_symlink() {
    let f = fixture();
    let cas = f.store.cas();
    let lower = tree(cas, &[("a", "file"), ("l", "->/etc"), ("d/x", "x")]);
    let layer = tree(cas, &[("a/inner", "i"), ("l/f", "f"), ("d", "now a file")]);
    let got = apply(cas, &lower, &layer).unwrap();
    assert_eq!(paths(cas, &got), ["a", "a/inner", "d", "l", "l/f"]);
}

// ---- flatten and hostile layers -------------------------------------------

/// A tar of raw entries: `(name, kind, data or link target, mode)`, names
/// written verbatim so hostile ones survive.
fn raw_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_mode(if *kind == tar::EntryType::Directory {
            0o750
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let body: &[u8] = match kind {
            tar::EntryType::Regular => data.as_bytes(),
            _ => {
                h.as_old_mut().linkname[..data.len()].copy_from_slice(data.as_bytes());
                b""
            }
        };
        h.set_size(body.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

use tar::EntryType::{Directory as D, Regular as F, Symlink as L};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// An image of `layers` (stored as given) whose config names the diff IDs
/// of their uncompressed forms `plain`.
fn image_of(f: &Fixture, layers: &[(Vec<u8>, &str)], plain: &[Vec<u8>]) -> Image {
    let cas = f.store.cas();
    let layers: Vec<Blob> = layers
        .iter()
        .map(|(bytes, mt)| Blob::from_bytes(cas, mt, bytes).unwrap())
        .collect();
    let diff_ids = plain
        .iter()
        .map(|p| Blob::from_bytes(cas, "x", p).unwrap().sha256)
        .collect();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        ..Default::default()
    };
    let config = Blob::from_bytes(cas, media_type::OCI_CONFIG, &spec::to_json(&config)).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        config: config.descriptor(),
        layers: layers.iter().map(Blob::descriptor).collect(),
    };
    let manifest =
        Blob::from_bytes(cas, media_type::OCI_MANIFEST, &spec::to_json(&manifest)).unwrap();
    Image {
        manifest,
        config,
        layers,
    }
}

/// An image of plain tar layers.
fn plain_image(f: &Fixture, layers: &[Vec<u8>]) -> Image {
    let stored: Vec<(Vec<u8>, &str)> = layers
        .iter()
        .map(|l| (l.clone(), media_type::OCI_LAYER))
        .collect();
    image_of(f, &stored, layers)
}

fn refused(r: Result<Digest, FormatError>) -> (String, String) {
    match r {
        Err(FormatError::Refused { entry, reason }) => (entry, reason),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(d) => panic!("expected a refusal, got tree {}", d.hex()),
    }
}

#[test]
fn flatten_applies_layers_in_order() {
    let f = fixture();
    let cas = f.store.cas();
    let base = raw_tar(&[
        ("etc/", D, ""),
        ("etc/motd", F, "base"),
        ("etc/old", F, "old"),
        ("usr/bin/sh", F, "sh"),
        ("bin", L, "usr/bin"),
        ("var/cache/", D, ""),
        ("var/cache/x", F, "x"),
    ]);
    let top = raw_tar(&[
        ("etc/motd", F, "top"),
        ("etc/.wh.old", F, ""),
        ("var/cache/.wh..wh..opq", F, ""),
        ("var/cache/y", F, "y"),
        ("/abs/file", F, "inside"),
    ]);
    let plain = [base.clone(), top.clone()];
    let gz = image_of(
        &f,
        &[
            (gzip(&base), media_type::DOCKER_LAYER_GZIP),
            (
                zstd::encode_all(top.as_slice(), 3).unwrap(),
                media_type::OCI_LAYER_ZSTD,
            ),
        ],
        &plain,
    );
    let root = flatten(cas, &gz).unwrap();
    // Folders the layers do not list are 0755 root:root (493), listed ones
    // keep their mode (0750 is 488).
    assert_eq!(
        listing(cas, &root),
        [
            "abs/ Some(Meta { mode: 493, uid: 0, gid: 0 })",
            "abs/file file Some(Meta { mode: 420, uid: 0, gid: 0 }) x=false \"inside\"",
            "bin -> usr/bin Some(Meta { mode: 420, uid: 0, gid: 0 })",
            "etc/ Some(Meta { mode: 488, uid: 0, gid: 0 })",
            "etc/motd file Some(Meta { mode: 420, uid: 0, gid: 0 }) x=false \"top\"",
            "usr/ Some(Meta { mode: 493, uid: 0, gid: 0 })",
            "usr/bin/ Some(Meta { mode: 493, uid: 0, gid: 0 })",
            "usr/bin/sh file Some(Meta { mode: 420, uid: 0, gid: 0 }) x=false \"sh\"",
            "var/ Some(Meta { mode: 493, uid: 0, gid: 0 })",
            "var/cache/ Some(Meta { mode: 488, uid: 0, gid: 0 })",
            "var/cache/y file Some(Meta { mode: 420, uid: 0, gid: 0 }) x=false \"y\"",
        ]
    );
    assert_eq!(
        TreeBuilder::load(cas, &root).unwrap().meta(),
        Some(DEFAULT_DIR_META)
    );
    // The same layers uncompressed give the same tree.
    assert_eq!(flatten(cas, &plain_image(&f, &plain)).unwrap(), root);
}

#[test]
fn hostile_layers_are_refused_by_name() {
    let f = fixture();
    let cas = f.store.cas();
    let run = |layers: &[Vec<u8>]| flatten(cas, &plain_image(&f, layers));

    let (entry, reason) = refused(run(&[raw_tar(&[("../etc/passwd", F, "x")])]));
    assert_eq!(entry, "../etc/passwd");
    assert!(
        reason.contains("..") && reason.contains("layer 0"),
        "{reason}"
    );

    // A symlink, then a write through it, in one layer.
    let (entry, _) = refused(run(&[raw_tar(&[("l", L, "/etc"), ("l/passwd", F, "x")])]));
    assert_eq!(entry, "l/passwd");

    // ... or across layers, when the upper layer does not replace the link.
    let (entry, reason) = refused(run(&[
        raw_tar(&[("l", L, "/etc")]),
        raw_tar(&[("l/passwd", F, "x")]),
    ]));
    assert_eq!(entry, "l");
    assert!(
        reason.contains("symlink") && reason.contains("layer 1"),
        "{reason}"
    );
    let (entry, reason) = refused(run(&[
        raw_tar(&[("f", F, "file")]),
        raw_tar(&[("f/x", F, "x")]),
    ]));
    assert_eq!(entry, "f");
    assert!(reason.contains("file"), "{reason}");
    // Listing the folder replaces the link, as Docker does.
    let ok = run(&[
        raw_tar(&[("l", L, "/etc")]),
        raw_tar(&[("l/", D, ""), ("l/passwd", F, "x")]),
    ])
    .unwrap();
    assert_eq!(paths(cas, &ok), ["l", "l/passwd"]);

    // Whiteouts of `..`, `.` and nothing.
    for name in [".wh...", "etc/.wh...", "etc/.wh..", ".wh."] {
        let (entry, reason) = refused(run(&[
            raw_tar(&[("etc/", D, ""), ("etc/x", F, "x")]),
            raw_tar(&[(name, F, "")]),
        ]));
        assert_eq!(entry, name);
        assert!(reason.contains("names no entry"), "{reason}");
    }

    // Absolute paths stay inside the root.
    let abs = run(&[raw_tar(&[("/etc/x", F, "x"), ("//../", D, "")])]);
    assert_eq!(refused(abs).0, "//../");
    let abs = run(&[raw_tar(&[("/etc/x", F, "x")])]).unwrap();
    assert_eq!(paths(cas, &abs), ["etc", "etc/x"]);
}

#[test]
fn layers_must_match_their_diff_ids() {
    let f = fixture();
    let cas = f.store.cas();
    let a = raw_tar(&[("a", F, "a")]);
    let b = raw_tar(&[("b", F, "b")]);
    let wrong = image_of(
        &f,
        &[(gzip(&a), media_type::OCI_LAYER_GZIP)],
        std::slice::from_ref(&b),
    );
    let e = flatten(cas, &wrong).unwrap_err().to_string();
    assert!(e.contains("layer 0") && e.contains("diff_id"), "{e}");
    let missing = image_of(&f, &[(a.clone(), media_type::OCI_LAYER)], &[]);
    let e = flatten(cas, &missing).unwrap_err().to_string();
    assert!(e.contains("0 diff_ids for 1 layers"), "{e}");
    // Trailing bytes after the archive count towards the diff ID.
    let mut padded = a.clone();
    padded.extend_from_slice(&[0; 9216]);
    let ok = image_of(&f, &[(padded.clone(), media_type::OCI_LAYER)], &[padded]);
    assert_eq!(paths(cas, &flatten(cas, &ok).unwrap()), ["a"]);
    // A layer media type that is not a tar.
    let odd = image_of(&f, &[(a.clone(), "application/vnd.example+json")], &[a]);
    let e = flatten(cas, &odd).unwrap_err().to_string();
    assert!(e.contains("application/vnd.example+json"), "{e}");
}
