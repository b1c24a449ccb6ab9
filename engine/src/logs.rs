//! `strata log`: what a target's step printed the last time it ran, as
//! Strata keeps it: a succeeded step's stdout and stderr in the store (named
//! by its action-cache entry), a failed step's in its kept scratch folder.
//! Both were masked before they were kept, so secrets stay `***`.
//!
//! "Last time it ran" is the newest build record in which the target
//! executed, failed or was cached; a cached target's log is the one of the
//! run whose result the build reused.

use std::path::{Path, PathBuf};

use strata_store::{Digest, DigestFunction, Store};

use crate::build::workspace_tag;
use crate::records::{self, RecordedTarget};
use strata_load::diag::did_you_mean;
use strata_load::source::shown;

/// Why there is no log to show.
#[derive(Debug)]
pub enum Error {
    /// Nothing is recorded for that target (exit code 2).
    Usage(String),
    /// It was recorded, but what held its log is gone or unreadable.
    Gone(String),
}

/// One run's log.
#[derive(Debug)]
pub struct StepLog {
    pub target: String,
    pub rule: String,
    /// `executed`, `cached` or `failed`, in the build recorded at `finished`.
    pub status: String,
    /// When that build finished, in RFC 3339 (UTC).
    pub when: String,
    /// `None` for steps that print nothing by nature (built-in rules run
    /// inside Strata; pulls have no process).
    pub streams: Option<Streams>,
}

#[derive(Debug)]
pub struct Streams {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The log of `target`'s last run in the workspace of `build_file`, from the
/// store at `store_dir`. Nothing is created or changed.
pub fn last_run(store_dir: &Path, build_file: &Path, target: &str) -> Result<StepLog, Error> {
    let canonical = std::fs::canonicalize(build_file)
        .map_err(|e| Error::Usage(format!("cannot open {}: {e}", build_file.display())))?;
    let shown_file = shown(&canonical);
    if !store_dir.is_dir() {
        return Err(Error::Usage(format!(
            "no store at {} (build first, or name the store with --store)",
            store_dir.display()
        )));
    }
    let all = records::read_all(&store_dir.join("meta"), &workspace_tag(&canonical));
    let ran = all.iter().rev().find_map(|r| {
        let t = r.targets.get(target)?;
        matches!(t.status.as_str(), "executed" | "cached" | "failed").then_some((r, t))
    });
    let Some((record, t)) = ran else {
        if all.iter().any(|r| r.targets.contains_key(target)) {
            return Err(Error::Usage(format!(
                "`{target}` has not run in any recorded build of {shown_file}: it was skipped \
                 (a dependency failed, or the build stopped first)"
            )));
        }
        let known = all
            .iter()
            .flat_map(|r| r.targets.keys().map(String::as_str));
        let hint = match did_you_mean(target, known) {
            Some(h) => format!(" ({h})"),
            None => format!("; run `strata build {target}` first"),
        };
        return Err(Error::Usage(format!(
            "no build of `{target}` is recorded for {shown_file} in the store {}{hint}",
            store_dir.display()
        )));
    };
    let streams = match t.status.as_str() {
        "failed" => Some(from_scratch(target, t)?),
        _ => {
            let function = record
                .digest_function
                .parse::<DigestFunction>()
                .unwrap_or(DigestFunction::Blake3);
            let store = Store::open(store_dir, function)
                .map_err(|e| Error::Gone(format!("cannot open the store: {e}")))?;
            from_store(&store, target, t)?
        }
    };
    Ok(StepLog {
        target: target.to_string(),
        rule: t.rule.clone(),
        status: t.status.clone(),
        when: strata_formats::oci::spec::rfc3339(record.finished),
        streams,
    })
}

/// A succeeded step's logs, named by its action-cache entry.
fn from_store(store: &Store, target: &str, t: &RecordedTarget) -> Result<Option<Streams>, Error> {
    let gone = || {
        Error::Gone(format!(
            "the result of `{target}`'s last run is not in the store (`strata store gc` \
             removes old ones, and a remote executor's result whose files were left on the \
             service is never stored): `strata build --no-cache {target}` runs it again"
        ))
    };
    let key = t.key_digest().ok_or_else(gone)?;
    let result = store
        .action_cache()
        .get(&key)
        .map_err(|e| Error::Gone(format!("cannot read the action cache: {e}")))?
        .ok_or_else(gone)?;
    let (Some(out), Some(err)) = (&result.stdout_digest, &result.stderr_digest) else {
        return Ok(None);
    };
    let read = |d: &strata_store::reapi::Digest| {
        let digest = Digest::from_proto(d).ok_or_else(gone)?;
        store.cas().read(&digest).map_err(|_| gone())
    };
    Ok(Some(Streams {
        stdout: read(out)?,
        stderr: read(err)?,
    }))
}

/// A failed step's logs, in the scratch folder kept for inspection.
fn from_scratch(target: &str, t: &RecordedTarget) -> Result<Streams, Error> {
    let Some(scratch) = t.scratch.as_deref().map(PathBuf::from) else {
        return Err(Error::Gone(format!(
            "`{target}` failed before its step printed anything (its failure was shown by \
             that build)"
        )));
    };
    if !scratch.is_dir() {
        return Err(Error::Gone(format!(
            "`{target}` failed, and its scratch folder {} with its log is gone (removed when \
             the target runs again, or by `strata store gc`)",
            scratch.display()
        )));
    }
    // A step that failed before it started has no logs: empty, not an error.
    let read = |name: &str| match std::fs::read(scratch.join(name)) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::Gone(format!(
            "cannot read {}: {e}",
            scratch.join(name).display()
        ))),
    };
    Ok(Streams {
        stdout: read("stdout")?,
        stderr: read("stderr")?,
    })
}
