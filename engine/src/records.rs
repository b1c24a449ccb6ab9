//! Build records: what each build of a workspace did, for `explain` and
//! `gc`. Bounded: only the newest records of each workspace are kept.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use strata_store::write_atomic;

/// How many records of one workspace are kept.
pub const KEEP: usize = 50;

#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// Seconds since the epoch when the build finished.
    pub finished: u64,
    pub build_file: String,
    pub digest_function: String,
    /// `sandbox` or `unsandboxed: <reason>`.
    pub isolation: String,
    /// The output folder the build placed its outputs in (absolute, symlinks
    /// resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_dir: Option<String>,
    /// Output folders of earlier builds that a build has already said still
    /// hold outputs (after `out_dir` changed), so it is said once per folder.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub left_behind: BTreeSet<String>,
    /// The build's variables as keys see them (a secret as its hash only),
    /// for provenance; absent for a matrix build, whose configurations
    /// differ.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    pub targets: BTreeMap<String, RecordedTarget>,
}

impl Record {
    /// How long each target's step took when it last ran, as far as the
    /// records know (a cached target keeps the time of the run it reuses).
    pub fn durations(&self) -> BTreeMap<String, Duration> {
        self.targets
            .iter()
            .filter_map(|(name, t)| Some((name.clone(), Duration::from_millis(t.duration_ms?))))
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordedTarget {
    pub status: String,
    /// The key's hex digest; with `key_size`, the action's name in the CAS.
    pub key: Option<String>,
    #[serde(default)]
    pub key_size: Option<u64>,
    pub output: Option<String>,
    /// The rule (`run`, `archive`, `stage`, ...).
    #[serde(default)]
    pub rule: String,
    /// False for rules declared non-reproducible (`docker-data-root`).
    #[serde(default = "yes")]
    pub reproducible: bool,
    /// How long the step took, in milliseconds, when it last executed: in
    /// this build, or carried over from the previous record when it did not
    /// run. Ready steps on the longest path of such times start first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// A failed step's scratch folder, kept with its logs until the target
    /// runs again (`strata log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<String>,
    /// The records' names of dependencies whose name here differs from the
    /// one the key uses (a matrix build's labels, `x86_64/rootfs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deps: BTreeMap<String, String>,
    /// The platform a step in an image (`run` with `image:`, `stage`) is
    /// for, such as `linux/arm64`; absent for work that runs no image's
    /// programs (built-in rules, pulls, `docker-data-root`: all native).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The emulator its key holds, when it ran under one: an emulated result
    /// is told from a native one by this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulator: Option<RecordedEmulator>,
    /// An `image-pull`'s reference as written (`host/name@sha256:<hex>`):
    /// its key holds only the digest, SBOMs name the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A fixed-output step's command as keyed (secrets hashed): its key
    /// holds only the output digest, SBOMs and provenance name the URLs it
    /// fetches from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch_command: Vec<String>,
}

/// A binfmt_misc handler that ran a step of another architecture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEmulator {
    pub interpreter: String,
    /// `sha256:<hex>` of the interpreter file.
    pub sha256: String,
    pub flags: String,
}

fn yes() -> bool {
    true
}

impl RecordedTarget {
    /// The platform and emulator fields of work that runs on `runs_on`.
    pub fn runs_on(mut self, runs_on: Option<&strata_rules::platform::RunsOn>) -> Self {
        self.platform = runs_on.map(|r| r.platform.to_string());
        self.emulator = runs_on
            .and_then(|r| r.emulator.as_ref())
            .map(|e| RecordedEmulator {
                interpreter: e.interpreter.clone(),
                sha256: e.sha256.clone(),
                flags: e.flags.clone(),
            });
        self
    }

    /// The record's name of dependency `name` (as the key names it).
    pub fn dep_label<'a>(&'a self, name: &'a str) -> &'a str {
        self.deps.get(name).map(String::as_str).unwrap_or(name)
    }

    /// The key as a digest, when the record has its size (version 2).
    pub fn key_digest(&self) -> Option<strata_store::Digest> {
        strata_store::Digest::from_hex(self.key.as_deref()?, self.key_size?)
    }

    /// The recorded output tree as a digest. Records name it without its
    /// size, which the store needs; the key's action-cache entry has it, and
    /// is trusted only if it names the recorded tree (it may hold a later
    /// result of a non-reproducible step).
    pub fn output_digest(&self, store: &strata_store::Store) -> Option<strata_store::Digest> {
        let result = store.action_cache().get(&self.key_digest()?).ok()??;
        let dir = result.output_directories.first()?;
        let tree = strata_store::Digest::from_proto(dir.root_directory_digest.as_ref()?)?;
        (Some(store.function().qualified(&tree).as_str()) == self.output.as_deref()).then_some(tree)
    }
}

/// Folder of one workspace's records.
pub fn dir(meta: &Path, workspace_tag: &str) -> PathBuf {
    meta.join("records").join(workspace_tag)
}

/// Writes `record` and prunes old ones.
pub fn write(meta: &Path, tmp: &Path, workspace_tag: &str, record: &Record) -> std::io::Result<()> {
    let dir = dir(meta, workspace_tag);
    fs::create_dir_all(&dir)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = dir.join(format!("{nanos:024}-{}.json", std::process::id()));
    let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    write_atomic(tmp, &path, &bytes, 0o644).map_err(std::io::Error::other)?;
    let mut names: Vec<PathBuf> = fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(KEEP);
    for old in &names[..excess] {
        let _ = fs::remove_file(old);
    }
    Ok(())
}

/// The newest readable record of one workspace, reading no other.
pub fn newest(meta: &Path, workspace_tag: &str) -> Option<Record> {
    let mut names = record_files(meta, workspace_tag);
    names.sort();
    names
        .iter()
        .rev()
        .find_map(|p| serde_json::from_slice(&fs::read(p).ok()?).ok())
}

fn record_files(meta: &Path, workspace_tag: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir(meta, workspace_tag)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect()
}

/// The records of one workspace, oldest first; unreadable ones are skipped.
pub fn read_all(meta: &Path, workspace_tag: &str) -> Vec<Record> {
    let mut names = record_files(meta, workspace_tag);
    names.sort();
    names
        .iter()
        .filter_map(|p| serde_json::from_slice(&fs::read(p).ok()?).ok())
        .collect()
}

/// Every workspace's records (for `gc`): (workspace tag, records oldest first).
pub fn read_every_workspace(meta: &Path) -> Vec<(String, Vec<Record>)> {
    let Ok(entries) = fs::read_dir(meta.join("records")) else {
        return Vec::new();
    };
    let mut tags: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    tags.sort();
    tags.into_iter()
        .map(|t| {
            let records = read_all(meta, &t);
            (t, records)
        })
        .collect()
}
