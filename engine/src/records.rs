//! Build records: what each build of a workspace did, for `explain` and
//! `gc`. Bounded: only the newest records of each workspace are kept.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use strata_store::write_atomic;

/// How many records of one workspace are kept.
pub const KEEP: usize = 50;

#[derive(Serialize)]
pub struct Record {
    pub version: u32,
    /// Seconds since the epoch when the build finished.
    pub finished: u64,
    pub build_file: String,
    pub digest_function: String,
    /// `sandbox` or `unsandboxed: <reason>`.
    pub isolation: String,
    pub targets: BTreeMap<String, RecordedTarget>,
}

#[derive(Serialize)]
pub struct RecordedTarget {
    pub status: &'static str,
    pub key: Option<String>,
    pub output: Option<String>,
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
