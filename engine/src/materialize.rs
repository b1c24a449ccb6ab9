//! Phase 6, materialize: each requested target's output under `out/<target>/`.
//!
//! Writers to one `out/` folder are serialized by a lock file that names its
//! holder. Each target's folder is replaced as a whole (build aside, then
//! rename), so `out/` never mixes two builds' files for one target, and a
//! target that failed or no longer exists has its old folder removed.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use strata_store::tree::{self, Placement};
use strata_store::{Digest, Store};

use crate::fstree::remove_tree;

const META: &str = ".strata";

/// Holds the `out/` lock until dropped.
pub struct OutLock {
    _dir: File,
}

/// Takes the lock of `out_dir`, calling `waiting` with the holder's
/// description if another build (or `strata clean`) holds it.
///
/// The lock is a `flock` on the folder that contains `out_dir`, not a file
/// inside it, so `strata clean` can delete `out/` while holding it and
/// nobody is left locking a deleted file.
pub fn lock(out_dir: &Path, waiting: impl FnOnce(&str)) -> std::io::Result<OutLock> {
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent)?;
    let dir = File::open(parent)?;
    let holder_file = out_dir.join(META).join("holder");
    match dir.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&holder_file).unwrap_or_default();
            let holder = holder.trim();
            waiting(if holder.is_empty() {
                "another strata process"
            } else {
                holder
            });
            dir.lock()?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    fs::create_dir_all(out_dir.join(META))?;
    let argv: Vec<String> = std::env::args().collect();
    // Only informative: who to wait for.
    let _ = fs::write(
        &holder_file,
        format!("pid {} ({})\n", std::process::id(), argv.join(" ")),
    );
    // Staging folders of a build that crashed while holding the lock.
    if let Ok(entries) = fs::read_dir(out_dir.join(META)) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("new-") || name.starts_with("old-") {
                remove_tree(&e.path());
            }
        }
    }
    Ok(OutLock { _dir: dir })
}

/// Whether `dest` still holds every entry of the tree `digest` with the
/// right kind and size (a deleted or truncated file means re-materializing).
/// Contents are not re-read: files in `out/` are read-only.
fn still_intact(store: &Store, digest: &Digest, dest: &Path) -> bool {
    let Ok(entries) = tree::walk(store.cas(), digest) else {
        return false;
    };
    entries.iter().all(|(path, entry)| {
        let Ok(meta) = fs::symlink_metadata(tree::rel_join(dest, path)) else {
            return matches!(entry, tree::Entry::Device { .. });
        };
        match entry {
            tree::Entry::File { digest, .. } => meta.is_file() && meta.len() == digest.size_bytes,
            tree::Entry::Dir { .. } => meta.is_dir(),
            tree::Entry::Symlink { .. } => meta.file_type().is_symlink(),
            tree::Entry::Device { .. } => true,
        }
    })
}

fn state_path(out_dir: &Path) -> PathBuf {
    out_dir.join(META).join("state.json")
}

fn read_state(out_dir: &Path) -> BTreeMap<String, String> {
    fs::read(state_path(out_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Brings `out/` up to date. `outputs` maps each requested target to its
/// output (None if it failed or was skipped); `known` lists every target of
/// the workspace, so folders of removed targets are cleaned up.
pub fn update(
    store: &Store,
    out_dir: &Path,
    outputs: &BTreeMap<String, Option<Digest>>,
    known: &[&str],
    _lock: &OutLock,
) -> Result<(), String> {
    let err =
        |what: &str, p: &Path, e: &dyn std::fmt::Display| format!("{what} {}: {e}", p.display());
    let mut state = read_state(out_dir);
    // What changes: folders of targets that no longer exist, of requested
    // targets that failed, and of those whose output differs (or was tampered
    // with). They leave the state file *before* their folders change, so a
    // build killed halfway never leaves a folder the state vouches for.
    let gone: Vec<String> = state
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    let stale: Vec<(&String, Option<&Digest>)> = outputs
        .iter()
        .filter(|(name, output)| match output {
            Some(digest) => {
                state.get(*name) != Some(&digest.to_string())
                    || !still_intact(store, digest, &out_dir.join(name))
            }
            None => state.contains_key(*name),
        })
        .map(|(name, output)| (name, output.as_ref()))
        .collect();
    if gone.is_empty() && stale.is_empty() {
        return Ok(());
    }
    for name in gone.iter().chain(stale.iter().map(|(n, _)| *n)) {
        state.remove(name);
    }
    write_state(out_dir, &state)?;
    for name in &gone {
        remove_tree(&out_dir.join(name));
    }
    for (name, output) in stale {
        let dest = out_dir.join(name);
        let Some(digest) = output else {
            // Never leave a stale result that looks current.
            remove_tree(&dest);
            continue;
        };
        let staging = out_dir
            .join(META)
            .join(format!("new-{name}-{}", std::process::id()));
        remove_tree(&staging);
        fs::create_dir_all(&staging).map_err(|e| err("cannot create", &staging, &e))?;
        tree::materialize(store.cas(), digest, &staging, Placement::HardLink)
            .map_err(|e| err("cannot write", &dest, &e))?;
        let old = out_dir
            .join(META)
            .join(format!("old-{name}-{}", std::process::id()));
        if fs::symlink_metadata(&dest).is_ok() {
            fs::rename(&dest, &old).map_err(|e| err("cannot replace", &dest, &e))?;
        }
        fs::rename(&staging, &dest).map_err(|e| err("cannot create", &dest, &e))?;
        remove_tree(&old);
        state.insert(name.clone(), digest.to_string());
    }
    write_state(out_dir, &state)
}

fn write_state(out_dir: &Path, state: &BTreeMap<String, String>) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    strata_store::write_atomic(&out_dir.join(META), &state_path(out_dir), &bytes, 0o644)
        .map_err(|e| e.to_string())
}
