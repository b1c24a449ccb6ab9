//! Source files: expanding `srcs` and hashing what they match, in parallel,
//! through the stat cache.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use foldhash::{HashMap, HashMapExt};
use rayon::prelude::*;
use strata_store::{Digest, DigestFunction};

use crate::statcache::{Stat, StatCache};
use strata_load::diag::At;
use strata_load::globs::{self, Folders, GlobError};
use strata_load::{ConfigError, Workspace};

pub use strata_exec::source::SourceFile;

/// The files one pattern matched, relative to its target's folder.
type Expansion = Result<Vec<String>, GlobError>;

/// Expands the `srcs` of `targets` (indices into `ws.targets`) and hashes
/// Whether `files` (staged paths) hold `path` or anything below it.
fn staged(files: &BTreeMap<String, usize>, path: &str) -> bool {
    let path = path.trim_start_matches("./").trim_end_matches('/');
    let below = format!("{path}/");
    files.contains_key(path)
        || files
            .range(below.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&below))
}

/// every matched file once. Returns each target's sources, sorted by path.
pub fn resolve(
    ws: &Workspace,
    targets: &[usize],
    skip: &[PathBuf],
    cache: &mut StatCache,
    folders: &dyn Folders,
    function: DigestFunction,
) -> Result<BTreeMap<usize, Vec<SourceFile>>, Vec<ConfigError>> {
    let at = At {
        sources: &ws.sources,
    };
    // Expand every pattern in parallel, then merge in target order so errors
    // and results do not depend on thread timing.
    let expanded: Vec<(usize, Vec<Expansion>)> = targets
        .par_iter()
        .map(|&i| {
            let t = &ws.targets[i];
            (
                i,
                t.srcs
                    .iter()
                    .chain(&t.named_srcs)
                    .map(|pattern| {
                        globs::expand_in(folders, &t.dir, &pattern.value, skip, &ws.root)
                    })
                    .collect(),
            )
        })
        .collect();
    let mut errors = Vec::new();
    // Each distinct file once, by index, so paths are compared only when interned.
    let mut unique: Vec<PathBuf> = Vec::new();
    // By path bytes: hashing a `Path` compares it component by component.
    let mut index_of: HashMap<OsString, usize> = HashMap::with_capacity(targets.len() * 8);
    let mut matched: Vec<(usize, BTreeMap<String, usize>)> = Vec::with_capacity(targets.len());
    for (i, per_pattern) in expanded {
        let t = &ws.targets[i];
        let mut files: BTreeMap<String, usize> = BTreeMap::new();
        let named_from = t.srcs.len();
        for (n, (pattern, result)) in t
            .srcs
            .iter()
            .chain(&t.named_srcs)
            .zip(per_pattern)
            .enumerate()
        {
            let named = n >= named_from;
            // A file a rule names that `srcs` already stages, or a folder
            // `srcs` stages files of, stays as `srcs` selects it.
            if named && staged(&files, &pattern.value) {
                continue;
            }
            match result {
                Ok(found) if found.is_empty() => errors.push(at.error(
                    pattern.loc,
                    format!("`{}` matches no file", pattern.value),
                    "matches nothing",
                    Some(if named {
                        format!(
                            "a file a rule installs by name (a component's `source:`) is one of the target's sources, relative to {}",
                            display(&ws.root, &t.dir)
                        )
                    } else {
                        format!("srcs patterns are relative to {}", display(&ws.root, &t.dir))
                    }),
                )),
                Ok(found) => {
                    for rel in found {
                        let abs = t.dir.join(&rel);
                        let idx = *index_of
                            .entry(abs.clone().into_os_string())
                            .or_insert_with(|| {
                                unique.push(abs);
                                unique.len() - 1
                            });
                        files.insert(rel, idx);
                    }
                }
                Err(GlobError::Pattern(msg)) => errors.push(at.error(
                    pattern.loc,
                    format!("bad pattern `{}`: {msg}", pattern.value),
                    "bad pattern",
                    None,
                )),
                Err(GlobError::Path { path, reason }) => errors.push(at.error(
                    pattern.loc,
                    format!("`{}`: {}: {reason}", pattern.value, display(&ws.root, &path)),
                    "while expanding this",
                    Some("sources must be readable regular files (or symlinks to them) with UTF-8 names".into()),
                )),
            }
        }
        matched.push((i, files));
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // What the sources' stats and digests are, by index; a hit in the
    // stat cache costs its `stat` alone.
    let hashed: Vec<Result<Hashed, String>> = unique
        .par_iter()
        .enumerate()
        .map(|(n, abs)| {
            let meta = fs::metadata(abs).map_err(|e| e.to_string())?;
            let (digest, from_cache) = match cache.lookup(abs, &meta, n) {
                Some(d) => (d, true),
                None => {
                    let file = fs::File::open(abs).map_err(|e| e.to_string())?;
                    (function.of_reader(file).map_err(|e| e.to_string())?, false)
                }
            };
            Ok(Hashed {
                stat: Stat::of(&meta),
                executable: meta.permissions().mode() & 0o111 != 0,
                digest,
                from_cache,
            })
        })
        .collect();
    for (abs, r) in unique.iter().zip(&hashed) {
        match r {
            Ok(h) if !h.from_cache => cache.record(abs.clone(), h.stat, h.digest),
            Ok(_) => {}
            Err(e) => errors.push(ConfigError::general(
                format!("cannot read source {}: {e}", display(&ws.root, abs)),
                Some("sources must be readable; check the file's permissions".into()),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // A file most targets alone stage is moved to its last user, not copied.
    let mut users = vec![0usize; unique.len()];
    for (_, files) in &matched {
        for &idx in files.values() {
            users[idx] += 1;
        }
    }
    Ok(matched
        .into_iter()
        .map(|(i, files)| {
            let list = files
                .into_iter()
                .map(|(rel, idx)| {
                    let h = hashed[idx].as_ref().expect("read errors returned above");
                    users[idx] -= 1;
                    let abs = match users[idx] {
                        0 => std::mem::take(&mut unique[idx]),
                        _ => unique[idx].clone(),
                    };
                    SourceFile {
                        rel,
                        digest: h.digest,
                        executable: h.executable,
                        fingerprint: h.stat,
                        abs,
                    }
                })
                .collect();
            (i, list)
        })
        .collect())
}

/// A source file as hashing found it.
struct Hashed {
    stat: Stat,
    executable: bool,
    digest: Digest,
    /// Answered by the stat cache, which need not learn it.
    from_cache: bool,
}

fn display(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(r) if r.as_os_str().is_empty() => "the workspace root".into(),
        Ok(r) => r.display().to_string(),
        Err(_) => p.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[test]
    fn a_named_source_is_staged_when_it_or_files_below_it_are() {
        let files: BTreeMap<String, usize> = [("conf/app.conf", 0), ("confx", 1), ("motd", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert!(super::staged(&files, "motd"));
        assert!(super::staged(&files, "conf"));
        assert!(super::staged(&files, "conf/"));
        assert!(!super::staged(&files, "con"));
        assert!(!super::staged(&files, "conf/app"));
        assert!(!super::staged(&files, "other"));
    }
}
