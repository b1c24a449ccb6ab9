//! Phase 6, materialize: each requested target's output under `out/<target>/`
//! (`out/<config>/<target>/` in a matrix build).
//!
//! Writers to one `out/` folder are serialized by a lock file that names its
//! holder. Each target's folder is replaced as a whole (build aside, then
//! rename), so `out/` never mixes two builds' files for one target, and a
//! target that failed or no longer exists has its old folder removed.
//!
//! The folder may be shared: `out_dir:` or `--out-dir` may name any folder,
//! and `out` may be a symlink to one (it is followed). So Strata replaces
//! and removes only the entries its record ([`state`]) says it made; an
//! entry in the way that it did not make stops the build, and `strata
//! clean` leaves it. A matrix build's entries are `<config>/<target>`, in
//! folders Strata makes and records too; an existing folder it did not
//! make is in the way like any entry.

mod fingerprint;
mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use strata_exec::fstree::remove_tree;
use strata_load::globs::Folders;
use strata_store::tree::{self, Placement};
use strata_store::{Digest, Store};

use state::{OutState, Placed};

/// Strata's own folder inside an output folder: the record, staging
/// folders, the lock holder.
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

/// Whether `out/<name>` is what Strata placed there for `digest`: the
/// record names that output and the folder's fingerprint is unchanged.
fn still_placed(
    state: &OutState,
    name: &str,
    digest: &Digest,
    dest: &Path,
    folders: &dyn Folders,
) -> bool {
    let Some(placed) = state.get(name) else {
        return false;
    };
    placed.output.as_deref() == Some(digest.to_string().as_str())
        && placed.fingerprint.is_some()
        && placed.fingerprint == fingerprint::of(dest, folders)
}

/// Why `out/` could not be brought up to date.
#[derive(Debug)]
pub enum OutError {
    /// Entries in the way that Strata did not make: the target and the path.
    Foreign(Vec<(String, PathBuf)>),
    /// Reading or writing the folder failed.
    Io(String),
}

/// The entries `out_dir/<name>` of `names` that exist but that Strata did
/// not make, so placing those targets would destroy them; for a nested
/// name (`x86_64/ramdisk`), also a folder on its way that Strata did not
/// make, which it would write into.
pub fn foreign_entries<'a>(
    out_dir: &Path,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, PathBuf)> {
    foreign_entries_in(&OutState::read(out_dir), out_dir, names)
}

/// [`foreign_entries`] by the record `state` of `out_dir`.
fn foreign_entries_in<'a>(
    state: &OutState,
    out_dir: &Path,
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, PathBuf)> {
    names
        .into_iter()
        .filter_map(|name| {
            let in_the_way = ancestors(name)
                .into_iter()
                .filter(|folder| !state.owns_folder(folder))
                .chain((!state.owns(name)).then(|| name.to_string()))
                .map(|entry| out_dir.join(entry))
                .find(|path| fs::symlink_metadata(path).is_ok())?;
            Some((name.to_string(), in_the_way))
        })
        .collect()
}

/// How many entries of `out_dir` Strata placed and still lists as its own
/// (0 when the folder or its record is gone).
pub fn placed_count(out_dir: &Path) -> usize {
    OutState::read(out_dir).names().count()
}

/// The folders holding entry `name`, outermost first: `a`, `a/b` for
/// `a/b/t`.
fn ancestors(name: &str) -> Vec<String> {
    let parts: Vec<&str> = name.split('/').collect();
    (1..parts.len()).map(|i| parts[..i].join("/")).collect()
}

/// The folder holding entry `name` (`""`: the output folder itself).
fn folder_of(name: &str) -> &str {
    name.rsplit_once('/').map(|(f, _)| f).unwrap_or("")
}

/// What one build answers for in the output folder: the folders it places
/// entries in (`""` for the output folder itself, `x86_64` for a matrix
/// configuration) and every entry those may hold now. An entry of a covered
/// folder that is not known (its target was removed) is removed; entries
/// of other folders (another configuration's) are left as they are.
#[derive(Debug, Default)]
pub struct Scope {
    pub folders: BTreeSet<String>,
    pub known: BTreeSet<String>,
}

/// Brings `out/` up to date. `outputs` maps each requested entry to its
/// output (None if it failed or was skipped); `scope` says which entries
/// the build answers for, so folders of removed targets are cleaned up. Only
/// entries the record lists are replaced or removed; a requested target
/// whose entry exists but is not Strata's is [`OutError::Foreign`], and
/// then nothing changes. Returns the targets whose folders were changed
/// since they were placed, and are placed again. Folders are listed
/// through `folders`, and the placed entries checked in parallel.
pub fn update(
    store: &Store,
    out_dir: &Path,
    outputs: &BTreeMap<String, Option<Digest>>,
    scope: &Scope,
    folders: &dyn Folders,
    _lock: &OutLock,
) -> Result<Vec<String>, OutError> {
    let err = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        OutError::Io(format!("{what} {}: {e}", p.display()))
    };
    let mut state = OutState::read(out_dir);
    let foreign = foreign_entries_in(
        &state,
        out_dir,
        outputs
            .iter()
            .filter(|(_, output)| output.is_some())
            .map(|(name, _)| name.as_str()),
    );
    if !foreign.is_empty() {
        return Err(OutError::Foreign(foreign));
    }
    // What changes: folders of targets that no longer exist, of requested
    // targets that failed, and of those whose output differs (or was tampered
    // with). They are claimed without an output *before* their folders
    // change, so a build killed halfway never leaves a folder the record
    // vouches for, nor one of Strata's it does not list.
    let gone: Vec<String> = state
        .names()
        .filter(|k| scope.folders.contains(folder_of(k)) && !scope.known.contains(k.as_str()))
        .cloned()
        .collect();
    let outputs: Vec<(&String, &Option<Digest>)> = outputs.iter().collect();
    let stale: Vec<(&String, Option<&Digest>)> = outputs
        .par_iter()
        .filter(|(name, output)| match output {
            Some(digest) => !still_placed(&state, name, digest, &out_dir.join(name), folders),
            None => state.owns(name),
        })
        .map(|(name, output)| (*name, output.as_ref()))
        .collect();
    // Placed again though their output is the same: someone changed them.
    let changed_outside: Vec<String> = stale
        .iter()
        .filter(|(name, output)| {
            output.is_some_and(|d| {
                state.get(name).and_then(|p| p.output.as_deref()) == Some(d.to_string().as_str())
            })
        })
        .map(|(name, _)| (*name).clone())
        .collect();
    if gone.is_empty() && stale.is_empty() {
        return Ok(changed_outside);
    }
    for name in gone.iter().chain(stale.iter().map(|(n, _)| *n)) {
        state.claim(name);
    }
    // Folders to make for nested entries, claimed with them.
    let mut new_folders: Vec<String> = Vec::new();
    for (name, output) in &stale {
        if output.is_none() {
            continue;
        }
        for folder in ancestors(name) {
            if !new_folders.contains(&folder)
                && fs::symlink_metadata(out_dir.join(&folder)).is_err()
            {
                state.claim_folder(&folder);
                new_folders.push(folder);
            }
        }
    }
    state.write(out_dir).map_err(OutError::Io)?;
    for folder in &new_folders {
        let path = out_dir.join(folder);
        fs::create_dir(&path).map_err(|e| err("cannot create", &path, &e))?;
    }
    let remove = |state: &mut OutState, name: &str| {
        let dest = out_dir.join(name);
        remove_tree(&dest);
        // Still Strata's if any of it is left.
        if fs::symlink_metadata(&dest).is_err() {
            state.release(name);
        }
    };
    for name in &gone {
        remove(&mut state, name);
    }
    for (name, output) in stale {
        let dest = out_dir.join(name);
        let Some(digest) = output else {
            // Never leave a stale result that looks current.
            remove(&mut state, name);
            continue;
        };
        let flat = name.replace('/', ".");
        let staging = out_dir
            .join(META)
            .join(format!("new-{flat}-{}", std::process::id()));
        remove_tree(&staging);
        fs::create_dir_all(&staging).map_err(|e| err("cannot create", &staging, &e))?;
        // Copies, never hard links: as root no mode bit stops a write, and
        // an edit in `out/` would change the stored blob. The copy is
        // `copy_file_range`, which shares the blocks where the file system
        // can (btrfs, XFS) and copies in the kernel elsewhere.
        tree::materialize(store.cas(), digest, &staging, Placement::Copy)
            .map_err(|e| err("cannot write", &dest, &e))?;
        let old = out_dir
            .join(META)
            .join(format!("old-{flat}-{}", std::process::id()));
        if fs::symlink_metadata(&dest).is_ok() {
            fs::rename(&dest, &old).map_err(|e| err("cannot replace", &dest, &e))?;
        }
        fs::rename(&staging, &dest).map_err(|e| err("cannot create", &dest, &e))?;
        remove_tree(&old);
        state.set(
            name,
            Placed {
                output: Some(digest.to_string()),
                // Taken in place: the rename changed the folder's own times.
                fingerprint: fingerprint::of(&dest, folders),
            },
        );
    }
    remove_empty_folders(&mut state, out_dir);
    state.write(out_dir).map_err(OutError::Io)?;
    Ok(changed_outside)
}

/// Removes the folders Strata made that no longer hold an entry of its own
/// (deepest first), unless something else was put in them.
fn remove_empty_folders(state: &mut OutState, out_dir: &Path) {
    for folder in state.folders() {
        if state.holds_entries(&folder) {
            continue;
        }
        let path = out_dir.join(&folder);
        if fs::remove_dir(&path).is_ok() || fs::symlink_metadata(&path).is_err() {
            state.release_folder(&folder);
        }
    }
}

/// What [`clean`] did.
#[derive(Debug)]
pub struct Cleaned {
    /// Entries removed, by target name.
    pub removed: Vec<String>,
    /// Whether the output folder itself is gone: it is removed only once
    /// empty, and a symlink to it is left alone.
    pub folder_removed: bool,
}

/// `strata clean`: removes the entries the record lists, the folders it
/// made for them (a matrix build's, once empty) and Strata's own folder,
/// then the output folder if nothing else is left in it.
pub fn clean(out_dir: &Path, _lock: &OutLock) -> Result<Cleaned, String> {
    let mut state = OutState::read(out_dir);
    let mut removed = Vec::new();
    for name in state.names().cloned().collect::<Vec<_>>() {
        let dest = out_dir.join(&name);
        remove_tree(&dest);
        if fs::symlink_metadata(&dest).is_ok() {
            return Err(format!("cannot remove {}", dest.display()));
        }
        state.release(&name);
        removed.push(name);
    }
    // A folder that something else was put in stays, with that.
    remove_empty_folders(&mut state, out_dir);
    remove_tree(&out_dir.join(META));
    // Fails on a folder that still holds foreign entries and on a symlink.
    let folder_removed = fs::remove_dir(out_dir).is_ok();
    Ok(Cleaned {
        removed,
        folder_removed,
    })
}
