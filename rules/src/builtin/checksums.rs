//! `checksums`: `SHA256SUMS`, a `<file>.sha256` per file, and
//! `build-manifest.txt` listing each artifact with its size, SHA-256 and the
//! BLAKE3 key of the target that made it. No wall-clock time goes in.
//!
//! ```yaml
//! sums:
//!   rule: checksums
//!   of: [ramdisk, kernel, bundle]    # targets whose output files are listed
//! ```
//!
//! Each entry of `of` is a target (all its output files) or `target:path`
//! (one file, or the files below one folder). An artifact is named
//! `<target>/<path>`, its path in the target's output, which is also where
//! `out/<target>/` holds it. The outputs are:
//!
//! - `SHA256SUMS` (or `name`): `<sha256>  <target>/<path>` per artifact,
//!   sorted by name; `sha256sum -c SHA256SUMS` checks them from a folder
//!   holding each target's output under its name (such as `out/`);
//! - `<target>/<path>.sha256` per artifact: `<sha256>  <file name>`, for
//!   `sha256sum -c` run beside the file;
//! - `build-manifest.txt`: a header line, then
//!   `<target>/<path>  size=<bytes>  sha256=<hex>  key=<key>` per artifact,
//!   sorted by name, where `key` is the key of the target that made it (its
//!   `--json` key).
//!
//! Only regular files are listed: symlinks, device nodes and folders are not
//! artifacts. Names holding a newline or a backslash are written escaped, as
//! `sha256sum` does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use strata_store::Digest;
use strata_store::tree::{Entry, Node, TreeBuilder, walk};

use super::{Builtin, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, PathExt, check_file_name, key};
use crate::table::{Field, Parse, Rule};

/// `checksums`: a SHA256SUMS file and a build manifest of other targets.
pub const RULE: Rule = Rule {
    name: "checksums",
    doc: "lists the sha256 of every file other targets made, with a build manifest",
    fields: &[
        Field::value("of", "the targets whose outputs are listed"),
        Field::value("name", "the checksum file's name (default `SHA256SUMS`)"),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Checksums(from_fields(f)?))),
    image_output: false,
    contains_inputs: false,
};

/// The manifest's file name.
pub const MANIFEST: &str = "build-manifest.txt";

/// The manifest's first line, naming its format.
pub const MANIFEST_HEADER: &str = "# strata build manifest v1: <target>/<path>  size=<bytes>  \
                                   sha256=<hex>  key=<key of the target that made it>";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub of: Vec<From>,
    /// The checksum file's name (default `SHA256SUMS`).
    #[serde(default)]
    pub name: Option<String>,
}

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        let err = |field: &str, message: String| Err(ParamError::new(field, message));
        if self.of.is_empty() {
            return err(
                "of",
                "name at least one target whose outputs are listed".into(),
            );
        }
        if let Some(i) = self.of.iter().position(|f| f.target.is_none()) {
            return Err(ParamError::at(
                key("of").index(i),
                "`srcs` cannot be listed: every artifact is named after, and keyed by, the \
                 target that made it",
            ));
        }
        if let Some(name) = &self.name {
            check_file_name("name", name)?;
            if name == MANIFEST {
                return err("name", format!("`{MANIFEST}` is the manifest's name"));
            }
            if self.of.iter().any(|f| f.target.as_deref() == Some(name)) {
                return err(
                    "name",
                    format!("`{name}` is the folder of target `{name}`'s `.sha256` files"),
                );
            }
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        self.of
            .iter()
            .enumerate()
            .flat_map(|(i, f)| f.named(key("of").index(i)))
            .collect()
    }

    /// The checksum file's name.
    pub fn file_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| "SHA256SUMS".into())
    }
}

/// One listed file.
struct Artifact {
    target: String,
    digest: Digest,
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<Digest, BuiltinError> {
    // `<target>/<path>` -> the file; a file named twice is listed once.
    let mut artifacts: BTreeMap<String, Artifact> = BTreeMap::new();
    for from in &p.of {
        let target = from.target.clone().expect("validated: a target");
        let what = String::from(from.clone());
        let files: Vec<(String, Digest)> = match ctx.entry(from)? {
            Entry::File { digest, .. } => vec![(from.path.clone(), digest)],
            Entry::Dir { digest, .. } => walk(ctx.cas, &digest)?
                .into_iter()
                .filter_map(|(path, e)| match e {
                    Entry::File { digest, .. } => Some((
                        if from.path.is_empty() {
                            path
                        } else {
                            format!("{}/{path}", from.path)
                        },
                        digest,
                    )),
                    _ => None,
                })
                .collect(),
            _ => {
                return Err(BuiltinError::Input {
                    what,
                    reason: "is neither a file nor a folder".into(),
                });
            }
        };
        if files.is_empty() {
            return Err(BuiltinError::Input {
                what,
                reason: "holds no files to list".into(),
            });
        }
        for (path, digest) in files {
            artifacts.insert(
                format!("{target}/{path}"),
                Artifact {
                    target: target.clone(),
                    digest,
                },
            );
        }
    }

    let mut sums = String::new();
    let mut manifest = format!("{MANIFEST_HEADER}\n");
    let mut outputs: Vec<(String, String)> = Vec::new();
    // Equal files (same BLAKE3 digest) are read once.
    let mut known: BTreeMap<Digest, String> = BTreeMap::new();
    for (name, a) in &artifacts {
        let sha = match known.get(&a.digest) {
            Some(sha) => sha.clone(),
            None => {
                let sha = sha256_of(ctx, &a.digest)?;
                known.insert(a.digest, sha.clone());
                sha
            }
        };
        let key = ctx
            .dep_keys
            .get(&a.target)
            .ok_or_else(|| BuiltinError::Input {
                what: a.target.clone(),
                reason: "has no key: checksums needs the keys of the targets it lists".into(),
            })?;
        sums.push_str(&sum_line(&sha, name));
        manifest.push_str(&format!(
            "{}  size={}  sha256={sha}  key={}\n",
            escape(name).1,
            a.digest.size_bytes,
            key.hex()
        ));
        let base = name.rsplit('/').next().expect("non-empty");
        outputs.push((format!("{name}.sha256"), sum_line(&sha, base)));
    }
    outputs.push((p.file_name(), sums));
    outputs.push((MANIFEST.to_string(), manifest));

    check_no_clash(&outputs)?;
    let mut out = TreeBuilder::new();
    for (path, text) in outputs {
        let blob = ctx.cas.put_bytes(text.as_bytes())?;
        out.insert(&path, Node::file(blob, false))
            .map_err(BuiltinError::Format)?;
    }
    Ok(out.store(ctx.cas)?)
}

/// The SHA-256 of a stored blob, streamed.
fn sha256_of(ctx: &Ctx, digest: &Digest) -> Result<String, BuiltinError> {
    let mut file = std::fs::File::open(ctx.cas.path(digest))
        .map_err(|_| strata_store::StoreError::Missing { digest: *digest })?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != digest.size_bytes {
        return Err(BuiltinError::Format(format!(
            "stored blob {} has {total} bytes, expected {}",
            digest.hex(),
            digest.size_bytes
        )));
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A file name as `sha256sum` writes it: names with a backslash or a newline
/// are escaped, and their line starts with a backslash.
fn escape(name: &str) -> (bool, String) {
    if !name.contains(['\\', '\n', '\r']) {
        return (false, name.to_string());
    }
    let escaped = name
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r");
    (true, escaped)
}

/// One line of a `sha256sum` file.
fn sum_line(sha: &str, name: &str) -> String {
    let (escaped, name) = escape(name);
    format!("{}{sha}  {name}\n", if escaped { "\\" } else { "" })
}

/// Refuses outputs where one path is needed both as a file and a folder
/// (say a file `a.sha256/x` next to a file `a`).
fn check_no_clash(outputs: &[(String, String)]) -> Result<(), BuiltinError> {
    let files: BTreeSet<&str> = outputs.iter().map(|(p, _)| p.as_str()).collect();
    if files.len() != outputs.len() {
        let mut seen = BTreeSet::new();
        let dup = outputs
            .iter()
            .find(|(p, _)| !seen.insert(p.as_str()))
            .map(|(p, _)| p.clone())
            .unwrap_or_default();
        return Err(BuiltinError::Refused {
            entry: dup,
            reason: "two outputs of `checksums` would have this name".into(),
        });
    }
    for (path, _) in outputs {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            if files.contains(parent) {
                return Err(BuiltinError::Refused {
                    entry: path.clone(),
                    reason: format!("`{parent}` is also an output file of `checksums`"),
                });
            }
            at += i + 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_store::DigestFunction;
    use strata_store::tree::{DeviceKind, Node, TreeBuilder, walk};

    use super::*;

    use super::super::testkit::fixture;

    fn sha(bytes: &[u8]) -> String {
        hex::encode(sha2::Sha256::digest(bytes))
    }

    /// Deps `kernel` (one file) and `ramdisk` (files, a link, a device).
    fn ctx(cas: &strata_store::Cas) -> Ctx<'_> {
        let mut kernel = TreeBuilder::new();
        kernel
            .insert(
                "vmlinuz",
                Node::file(cas.put_bytes(b"kernel").unwrap(), false),
            )
            .unwrap();
        let mut ramdisk = TreeBuilder::new();
        ramdisk
            .insert(
                "boot/initrd.gz",
                Node::file(cas.put_bytes(b"initrd").unwrap(), false),
            )
            .unwrap();
        ramdisk
            .insert(
                "boot/tools/run.sh",
                Node::file(cas.put_bytes(b"#!/bin/sh\n").unwrap(), true),
            )
            .unwrap();
        ramdisk
            .insert(
                "latest",
                Node::Symlink {
                    target: "boot/initrd.gz".into(),
                    meta: None,
                },
            )
            .unwrap();
        ramdisk
            .insert(
                "dev/null",
                Node::Device {
                    kind: DeviceKind::Char,
                    major: 1,
                    minor: 3,
                    meta: None,
                },
            )
            .unwrap();
        let mut root = TreeBuilder::new();
        root.insert("deps/kernel", Node::Dir(kernel)).unwrap();
        root.insert("deps/ramdisk", Node::Dir(ramdisk)).unwrap();
        let mut dep_keys = BTreeMap::new();
        dep_keys.insert(
            "kernel".to_string(),
            DigestFunction::Blake3.of_bytes(b"key-k"),
        );
        dep_keys.insert(
            "ramdisk".to_string(),
            DigestFunction::Blake3.of_bytes(b"key-r"),
        );
        Ctx {
            cas,
            input_root: root.store(cas).unwrap(),
            source_date_epoch: 1_700_000_000,
            dep_keys,
        }
    }

    fn params(of: &[&str], name: Option<&str>) -> Params {
        Params {
            of: of
                .iter()
                .map(|s| From::try_from(s.to_string()).unwrap())
                .collect(),
            name: name.map(str::to_string),
        }
    }

    fn files(cas: &strata_store::Cas, out: Digest) -> BTreeMap<String, String> {
        walk(cas, &out)
            .unwrap()
            .into_iter()
            .filter_map(|(p, e)| match e {
                Entry::File { digest, .. } => {
                    Some((p, String::from_utf8(cas.read(&digest).unwrap()).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn lists_every_file_with_its_sum_and_key() {
        let f = fixture();
        let cas = f.store.cas();
        let c = ctx(cas);
        let out = files(cas, run(&params(&["ramdisk", "kernel"], None), &c).unwrap());
        let names: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "SHA256SUMS",
                "build-manifest.txt",
                "kernel/vmlinuz.sha256",
                "ramdisk/boot/initrd.gz.sha256",
                "ramdisk/boot/tools/run.sh.sha256",
            ]
        );
        assert_eq!(
            out["SHA256SUMS"],
            format!(
                "{}  kernel/vmlinuz\n{}  ramdisk/boot/initrd.gz\n{}  ramdisk/boot/tools/run.sh\n",
                sha(b"kernel"),
                sha(b"initrd"),
                sha(b"#!/bin/sh\n")
            )
        );
        assert_eq!(
            out["ramdisk/boot/initrd.gz.sha256"],
            format!("{}  initrd.gz\n", sha(b"initrd"))
        );
        let k = DigestFunction::Blake3.of_bytes(b"key-k").hex();
        let r = DigestFunction::Blake3.of_bytes(b"key-r").hex();
        assert_eq!(
            out["build-manifest.txt"],
            format!(
                "{MANIFEST_HEADER}\n\
                 kernel/vmlinuz  size=6  sha256={}  key={k}\n\
                 ramdisk/boot/initrd.gz  size=6  sha256={}  key={r}\n\
                 ramdisk/boot/tools/run.sh  size=10  sha256={}  key={r}\n",
                sha(b"kernel"),
                sha(b"initrd"),
                sha(b"#!/bin/sh\n")
            )
        );
        // The order of `of` does not matter, nor does the time.
        let again = Ctx {
            source_date_epoch: 0,
            ..ctx(cas)
        };
        assert_eq!(
            run(&params(&["kernel", "ramdisk"], None), &again).unwrap(),
            run(&params(&["ramdisk", "kernel"], None), &c).unwrap()
        );
    }

    #[test]
    fn paths_inside_targets_and_a_custom_name() {
        let f = fixture();
        let cas = f.store.cas();
        let c = ctx(cas);
        let p = params(
            &["ramdisk:boot/tools", "kernel:vmlinuz", "kernel"],
            Some("SUMS.txt"),
        );
        let out = files(cas, run(&p, &c).unwrap());
        let names: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "SUMS.txt",
                "build-manifest.txt",
                "kernel/vmlinuz.sha256",
                "ramdisk/boot/tools/run.sh.sha256",
            ]
        );
        assert_eq!(out["SUMS.txt"].lines().count(), 2);
        assert!(out["SUMS.txt"].ends_with("  ramdisk/boot/tools/run.sh\n"));
    }

    #[test]
    fn missing_inputs_and_keys_are_errors() {
        let f = fixture();
        let cas = f.store.cas();
        let c = ctx(cas);
        let e = run(&params(&["ramdisk:nope"], None), &c).unwrap_err();
        assert!(e.to_string().contains("ramdisk:nope"), "{e}");
        let e = run(&params(&["ramdisk:dev"], None), &c).unwrap_err();
        assert!(e.to_string().contains("holds no files"), "{e}");
        let no_keys = Ctx {
            dep_keys: BTreeMap::new(),
            ..ctx(cas)
        };
        let e = run(&params(&["kernel"], None), &no_keys).unwrap_err();
        assert!(e.to_string().contains("has no key"), "{e}");
    }

    #[test]
    fn odd_names_are_escaped_as_sha256sum_does() {
        assert_eq!(sum_line("ab", "t/a b"), "ab  t/a b\n");
        assert_eq!(sum_line("ab", "t/a\\b\nc"), "\\ab  t/a\\\\b\\nc\n");
    }

    #[test]
    fn clashing_outputs_are_refused() {
        let outputs = |paths: &[&str]| -> Vec<(String, String)> {
            paths
                .iter()
                .map(|p| (p.to_string(), String::new()))
                .collect()
        };
        assert!(check_no_clash(&outputs(&["a/b.sha256", "a/c.sha256", "SUMS"])).is_ok());
        assert!(check_no_clash(&outputs(&["t/a.sha256", "t/a.sha256/x.sha256"])).is_err());
        assert!(check_no_clash(&outputs(&["x", "x"])).is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let parse = |json: serde_json::Value| {
            crate::builtin::Builtin::parse("checksums", json.as_object().unwrap().clone())
        };
        let ok = parse(serde_json::json!({"of": ["b", "a:x/y"]})).unwrap();
        // In the order written: the loader points at each where it is named.
        assert_eq!(
            ok.inputs().into_iter().map(|n| n.value).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert!(ok.uses_dep_keys());
        for (json, field) in [
            (serde_json::json!({"of": []}), "of"),
            (serde_json::json!({"of": ["srcs"]}), "of"),
            (serde_json::json!({"of": ["a"], "name": "x/y"}), "name"),
            (
                serde_json::json!({"of": ["a"], "name": "build-manifest.txt"}),
                "name",
            ),
            (serde_json::json!({"of": ["a"], "name": "a"}), "name"),
            (serde_json::json!({"of": ["a"], "level": 1}), "level"),
        ] {
            let e = parse(json.clone()).unwrap_err();
            assert_eq!(e.field(), Some(field), "{json}: {}", e.message);
        }
    }
}
