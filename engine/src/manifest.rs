//! Hash manifests of a workspace's last build (`strata manifest`) and the
//! comparison of two of them (`strata manifest diff`).
//!
//! A manifest is meant to be saved (in CI, on two machines) and compared
//! later, so its JSON form holds nothing that differs between two identical
//! builds: no paths of the machine, no times, no cached/executed status.
//! Two builds of the same inputs with reproducible rules give byte-identical
//! manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use strata_store::tree::{Entry, Meta, walk};
use strata_store::{Digest, DigestFunction, Store};

use crate::build::workspace_tag;
use crate::keyinfo::{self, Change, KeyInfo};
use crate::records::{self, RecordedTarget};
use strata_load::diag::did_you_mean;

/// The manifest format this build writes and reads; bumped when a field
/// changes meaning or is removed.
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    /// The function of every digest below (`blake3`).
    pub digest_function: String,
    pub targets: BTreeMap<String, TargetManifest>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetManifest {
    pub rule: String,
    /// False for rules declared non-reproducible: a changed output under an
    /// unchanged key is then expected, not a failure.
    pub reproducible: bool,
    /// The key's hex digest (as `strata build --json` prints it); null when
    /// the target was skipped before it could be keyed.
    pub key: Option<String>,
    /// `<function>:<hex>` of the output tree; null for a failed or skipped
    /// target.
    pub output: Option<String>,
    /// What the key is made of; null when the action is no longer stored.
    pub inputs: Option<KeyInfo>,
    /// Every entry of the output tree, sorted by path; null when the tree is
    /// no longer stored.
    pub files: Option<Vec<FileEntry>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
}

impl FileKind {
    /// The name the JSON form uses.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Char => "char",
            FileKind::Block => "block",
            FileKind::Fifo => "fifo",
        }
    }
}

/// One entry of an output tree. Which fields are present depends on `type`;
/// `mode`, `uid` and `gid` only where the tree records them (built-in rules
/// that assemble root file systems), since `run` outputs keep only the
/// executable bit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: FileKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<bool>,
    /// A symlink's target, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<u32>,
    /// Octal permission bits, e.g. `0755`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// Why a manifest could not be made or read.
#[derive(Debug)]
pub enum Error {
    /// The command line or a manifest file is wrong (exit code 2).
    Usage(String),
    /// The store could not be used (exit code 1).
    Environment(String),
}

/// The newest build record of the workspace of `build_file` in the store at
/// `store_dir`, with the BUILD file's canonical path. Reads records before
/// the store is opened, so asking about a workspace never built creates
/// nothing.
pub fn last_record(
    store_dir: &Path,
    build_file: &Path,
) -> Result<(std::path::PathBuf, records::Record), Error> {
    let canonical = std::fs::canonicalize(build_file)
        .map_err(|e| Error::Usage(format!("cannot open {}: {e}", build_file.display())))?;
    if !store_dir.is_dir() {
        return Err(Error::Usage(format!(
            "no store at {} (build first, or name the store with --store)",
            store_dir.display()
        )));
    }
    let record = records::read_all(&store_dir.join("meta"), &workspace_tag(&canonical))
        .pop()
        .ok_or_else(|| {
            Error::Usage(format!(
                "no build of {} is recorded in the store {}; run `strata build` first",
                strata_load::source::shown(&canonical),
                store_dir.display()
            ))
        })?;
    Ok((canonical, record))
}

/// The manifest of the last build of the workspace of `build_file` recorded
/// in the store at `store_dir`: every target of that build, or only
/// `targets` when some are named.
pub fn of_last_build(
    store_dir: &Path,
    build_file: &Path,
    targets: &[String],
) -> Result<Manifest, Error> {
    let (canonical, record) = last_record(store_dir, build_file)?;
    let chosen: Vec<(&String, &RecordedTarget)> = if targets.is_empty() {
        record.targets.iter().collect()
    } else {
        let mut chosen = BTreeMap::new();
        for name in targets {
            // In a matrix build a target is recorded once per configuration
            // (`x86_64/ramdisk`), or once under its own name when they share it.
            let mut matched = false;
            for (label, t) in &record.targets {
                if label.rsplit_once('/').is_some_and(|(_, n)| n == name) {
                    chosen.insert(label, t);
                    matched = true;
                }
            }
            if matched && !record.targets.contains_key(name) {
                continue;
            }
            let Some((name, t)) = record.targets.get_key_value(name) else {
                let hint = did_you_mean(name, record.targets.keys().map(String::as_str))
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                return Err(Error::Usage(format!(
                    "target `{name}` is not in the last build of {}{hint}",
                    strata_load::source::shown(&canonical)
                )));
            };
            chosen.insert(name, t);
        }
        chosen.into_iter().collect()
    };
    let function = DigestFunction::from_str(&record.digest_function)
        .map_err(|e| Error::Environment(format!("the last build record is unreadable: {e}")))?;
    let store = Store::open(store_dir, function)
        .map_err(|e| Error::Environment(format!("cannot open the store: {e}")))?;
    Ok(Manifest {
        version: VERSION,
        digest_function: function.to_string(),
        targets: chosen
            .into_iter()
            .map(|(name, t)| (name.clone(), target_manifest(&store, t)))
            .collect(),
    })
}

fn target_manifest(store: &Store, t: &RecordedTarget) -> TargetManifest {
    let key = t.key_digest();
    TargetManifest {
        rule: t.rule.clone(),
        reproducible: t.reproducible,
        key: t.key.clone(),
        output: t.output.clone(),
        inputs: key.as_ref().and_then(|k| keyinfo::read(store, k)),
        files: t.output_digest(store).and_then(|tree| files(store, &tree)),
    }
}

/// The entries of a recorded output tree.
fn files(store: &Store, tree: &Digest) -> Option<Vec<FileEntry>> {
    let mut entries: Vec<FileEntry> = walk(store.cas(), tree)
        .ok()?
        .into_iter()
        .map(|(path, entry)| file_entry(store.function(), path, entry))
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Some(entries)
}

fn file_entry(function: DigestFunction, path: String, entry: Entry) -> FileEntry {
    let bare = |kind: FileKind, meta: Option<Meta>| FileEntry {
        path: path.clone(),
        kind,
        size: None,
        digest: None,
        executable: None,
        target: None,
        major: None,
        minor: None,
        mode: meta.map(|m| format!("{:04o}", m.mode)),
        uid: meta.map(|m| m.uid),
        gid: meta.map(|m| m.gid),
    };
    match entry {
        Entry::File {
            digest,
            executable,
            meta,
        } => FileEntry {
            size: Some(digest.size_bytes),
            digest: Some(function.qualified(&digest)),
            executable: Some(executable),
            ..bare(FileKind::File, meta)
        },
        Entry::Dir { meta, .. } => bare(FileKind::Dir, meta),
        Entry::Symlink { target, meta } => FileEntry {
            target: Some(target),
            ..bare(FileKind::Symlink, meta)
        },
        Entry::Device {
            kind,
            major,
            minor,
            meta,
        } => {
            let kind = match kind {
                strata_store::tree::DeviceKind::Char => FileKind::Char,
                strata_store::tree::DeviceKind::Block => FileKind::Block,
                strata_store::tree::DeviceKind::Fifo => FileKind::Fifo,
            };
            FileEntry {
                major: Some(major),
                minor: Some(minor),
                ..bare(kind, meta)
            }
        }
    }
}

/// The JSON form: pretty, with a final newline, fields in a fixed order and
/// maps sorted, so equal manifests are equal files.
pub fn to_json(m: &Manifest) -> String {
    let mut s = serde_json::to_string_pretty(m).expect("manifests serialize");
    s.push('\n');
    s
}

/// Reads a manifest written by `to_json`; anything else (another version, a
/// truncated or hand-broken file) is a usage error naming the file.
pub fn read(path: &Path) -> Result<Manifest, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    parse(&bytes).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// Parses a manifest, checking its version first so that a manifest of
/// another version is reported as such rather than as a field error.
pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<serde_json::Value>,
    }
    let not_manifest = |e: serde_json::Error| format!("not a strata manifest: {e}");
    let versioned: Versioned = serde_json::from_slice(bytes).map_err(not_manifest)?;
    match versioned.version {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(VERSION)) => {}
        Some(v) => {
            return Err(format!(
                "manifest version {v} is not supported (this strata reads version {VERSION})"
            ));
        }
        None => return Err("not a strata manifest: no `version` field".into()),
    }
    let m: Manifest = serde_json::from_slice(bytes).map_err(not_manifest)?;
    if DigestFunction::from_str(&m.digest_function).is_err() {
        return Err(format!(
            "not a strata manifest: unknown digest function `{}`",
            m.digest_function
        ));
    }
    Ok(m)
}

/// How a target present in both manifests differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Same key, different output, from a rule that promises the same
    /// output for the same key.
    ReproducibilityFailure,
    /// Different keys: the inputs differ (see the changes).
    KeyChanged,
    /// Same key, built on one side only (failed or skipped on the other).
    BuiltOnOneSide,
    /// Same key, different output, from a rule declared non-reproducible.
    NonReproducible,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetDiff {
    pub name: String,
    pub verdict: Verdict,
    pub key_a: Option<String>,
    pub key_b: Option<String>,
    pub output_a: Option<String>,
    pub output_b: Option<String>,
    /// For a changed key, what changed in it, when both manifests hold its
    /// components.
    pub changes: Option<Vec<Change>>,
    /// For differing outputs, the entries that differ, when both manifests
    /// hold their files.
    pub files: Option<Vec<FileChange>>,
}

/// One output entry that differs; `None` on the side that lacks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileChange {
    pub path: String,
    pub a: Option<FileEntry>,
    pub b: Option<FileEntry>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ManifestDiff {
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    /// Targets in both manifests that differ, sorted by name.
    pub targets: Vec<TargetDiff>,
}

impl ManifestDiff {
    pub fn is_empty(&self) -> bool {
        self.only_in_a.is_empty() && self.only_in_b.is_empty() && self.targets.is_empty()
    }

    pub fn with(&self, verdict: Verdict) -> impl Iterator<Item = &TargetDiff> {
        self.targets.iter().filter(move |t| t.verdict == verdict)
    }
}

/// What differs from manifest `a` to manifest `b`. Manifests of different
/// digest functions cannot be compared (every digest would differ).
pub fn diff(a: &Manifest, b: &Manifest) -> Result<ManifestDiff, String> {
    if a.digest_function != b.digest_function {
        return Err(format!(
            "the manifests use different digest functions ({} and {}); their digests cannot be compared",
            a.digest_function, b.digest_function
        ));
    }
    let mut d = ManifestDiff {
        only_in_a: only_in(&a.targets, &b.targets),
        only_in_b: only_in(&b.targets, &a.targets),
        targets: Vec::new(),
    };
    for (name, ta) in &a.targets {
        let Some(tb) = b.targets.get(name) else {
            continue;
        };
        let verdict = if ta.key != tb.key {
            Verdict::KeyChanged
        } else if ta.output == tb.output {
            continue;
        } else if ta.output.is_none() || tb.output.is_none() {
            Verdict::BuiltOnOneSide
        } else if ta.reproducible && tb.reproducible {
            Verdict::ReproducibilityFailure
        } else {
            Verdict::NonReproducible
        };
        let changes = match (&ta.inputs, &tb.inputs) {
            (Some(ia), Some(ib)) if verdict == Verdict::KeyChanged => Some(keyinfo::diff(ia, ib)),
            _ => None,
        };
        let files = match (&ta.files, &tb.files) {
            (Some(fa), Some(fb)) if ta.output != tb.output => Some(file_changes(fa, fb)),
            _ => None,
        };
        d.targets.push(TargetDiff {
            name: name.clone(),
            verdict,
            key_a: ta.key.clone(),
            key_b: tb.key.clone(),
            output_a: ta.output.clone(),
            output_b: tb.output.clone(),
            changes,
            files,
        });
    }
    Ok(d)
}

fn only_in<T>(this: &BTreeMap<String, T>, other: &BTreeMap<String, T>) -> Vec<String> {
    this.keys()
        .filter(|k| !other.contains_key(*k))
        .cloned()
        .collect()
}

fn file_changes(a: &[FileEntry], b: &[FileEntry]) -> Vec<FileChange> {
    let by_path = |files: &[FileEntry]| -> BTreeMap<String, FileEntry> {
        files.iter().map(|f| (f.path.clone(), f.clone())).collect()
    };
    let (a, b) = (by_path(a), by_path(b));
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    paths
        .into_iter()
        .filter(|p| a.get(*p) != b.get(*p))
        .map(|p| FileChange {
            path: p.clone(),
            a: a.get(p).cloned(),
            b: b.get(p).cloned(),
        })
        .collect()
}

/// `blake3:0123abcd...` -> `0123456789..`, as key changes print digests.
pub fn short(digest: &str) -> String {
    let hex = digest.rsplit(':').next().unwrap_or(digest);
    let cut: String = hex.chars().take(10).collect();
    format!("{cut}..")
}

impl FileEntry {
    /// What the entry is, without its path: `12 bytes 0123456789.. (x)`,
    /// `folder`, `symlink to \`x\``, `char device 5:1`, then any mode and
    /// owner.
    pub fn describe(&self) -> String {
        let mut s = match self.kind {
            FileKind::File => format!(
                "{} bytes {}{}",
                self.size.unwrap_or(0),
                short(self.digest.as_deref().unwrap_or("?")),
                if self.executable == Some(true) {
                    " (x)"
                } else {
                    ""
                }
            ),
            FileKind::Dir => "folder".into(),
            FileKind::Symlink => {
                format!("symlink to `{}`", self.target.as_deref().unwrap_or(""))
            }
            FileKind::Char | FileKind::Block | FileKind::Fifo => format!(
                "{} device {}:{}",
                self.kind.name(),
                self.major.unwrap_or(0),
                self.minor.unwrap_or(0)
            ),
        };
        if let Some(mode) = &self.mode {
            s.push_str(&format!(" mode {mode}"));
        }
        if let (Some(uid), Some(gid)) = (self.uid, self.gid) {
            s.push_str(&format!(" owner {uid}:{gid}"));
        }
        s
    }
}

impl fmt::Display for FileChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file `{}` ", self.path)?;
        match (&self.a, &self.b) {
            (Some(a), Some(b)) => write!(f, "{} -> {}", a.describe(), b.describe()),
            (None, Some(b)) => write!(f, "added ({})", b.describe()),
            (Some(a), None) => write!(f, "removed (was {})", a.describe()),
            (None, None) => write!(f, "unchanged"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, digest: &str, size: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind: FileKind::File,
            size: Some(size),
            digest: Some(format!("blake3:{digest}")),
            executable: Some(false),
            target: None,
            major: None,
            minor: None,
            mode: None,
            uid: None,
            gid: None,
        }
    }

    fn target(key: &str, output: &str, files: Vec<FileEntry>) -> TargetManifest {
        TargetManifest {
            rule: "run".into(),
            reproducible: true,
            key: Some(key.into()),
            output: Some(format!("blake3:{output}")),
            inputs: Some(KeyInfo::default()),
            files: Some(files),
        }
    }

    fn manifest(targets: Vec<(&str, TargetManifest)>) -> Manifest {
        Manifest {
            version: VERSION,
            digest_function: "blake3".into(),
            targets: targets
                .into_iter()
                .map(|(n, t)| (n.to_string(), t))
                .collect(),
        }
    }

    #[test]
    fn a_manifest_survives_its_json_form() {
        let m = manifest(vec![("a", target("k", "o", vec![file("x", "d", 3)]))]);
        assert_eq!(parse(to_json(&m).as_bytes()).unwrap(), m);
    }

    #[test]
    fn same_key_and_other_output_is_a_reproducibility_failure_unless_declared() {
        let a = manifest(vec![
            ("r", target("k", "o1", vec![file("x", "d1", 3)])),
            ("n", target("k", "o1", vec![])),
            ("same", target("k", "o1", vec![])),
        ]);
        let mut nr = target("k", "o2", vec![]);
        nr.reproducible = false;
        let b = manifest(vec![
            ("r", target("k", "o2", vec![file("x", "d2", 4)])),
            ("n", nr),
            ("same", target("k", "o1", vec![])),
        ]);
        let d = diff(&a, &b).unwrap();
        let verdicts: Vec<(&str, Verdict)> = d
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.verdict))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("n", Verdict::NonReproducible),
                ("r", Verdict::ReproducibilityFailure)
            ]
        );
        let files = d.targets[1].files.as_ref().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].to_string(),
            "file `x` 3 bytes d1.. -> 4 bytes d2.."
        );
    }

    #[test]
    fn targets_on_one_side_and_changed_keys_are_reported() {
        let a = manifest(vec![
            ("a", target("k1", "o", vec![])),
            ("old", target("k", "o", vec![])),
        ]);
        let b = manifest(vec![
            ("a", target("k2", "o", vec![])),
            ("new", target("k", "o", vec![])),
        ]);
        let d = diff(&a, &b).unwrap();
        assert_eq!(d.only_in_a, ["old"]);
        assert_eq!(d.only_in_b, ["new"]);
        assert_eq!(d.targets.len(), 1);
        assert_eq!(d.targets[0].verdict, Verdict::KeyChanged);
        // Same output: nothing to list file by file.
        assert!(d.targets[0].files.is_none());
        assert!(diff(&a, &a).unwrap().is_empty());
    }

    #[test]
    fn broken_manifests_are_errors_not_panics() {
        let good = to_json(&manifest(vec![("a", target("k", "o", vec![]))]));
        for bad in [
            String::new(),
            "[]".into(),
            "{\"version\": 2, \"targets\": {}}".into(),
            "{\"version\": \"1\"}".into(),
            good[..good.len() / 2].to_string(),
            good.replace("\"rule\"", "\"rulez\""),
            good.replace("\"blake3\"", "\"md5\""),
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(parse(good.as_bytes()).is_ok());
    }
}
