//! `strata store stats` and `strata store gc`: how big the store is, and
//! bounding it.
//!
//! What must stay is what the newest builds of every workspace recorded
//! (their records name each target's key and output); the store's
//! [`Collector`] walks from there and evicts the rest least recently used
//! first. Builds hold `<store>/meta/gc.lock` shared for their whole
//! duration and `gc` takes it exclusively, so nothing a running build wrote
//! (and has not recorded yet) is ever collected. With `--docker`, the Docker
//! Engine's tree images of trees no longer stored go too (the binary hands
//! `collect` a [`TreeImageCache`]; strata-docker talks to the engine).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use strata_store::gc::{self as store_gc, Collector, Usage};
use strata_store::{Digest, DigestFunction, Store};

use strata_exec::fstree;
use strata_exec::step as exec;
use strata_exec::trees as exec_trees;

use crate::records;

/// How many of each workspace's newest builds `gc` keeps by default.
pub const DEFAULT_KEEP_BUILDS: usize = 5;

const LOCK: &str = "gc.lock";

/// Holds `<store>/meta/gc.lock` (shared for a build, exclusive for `gc`)
/// until dropped.
pub struct StoreLock {
    _file: File,
}

fn lock_file(store: &Store) -> io::Result<File> {
    fs::create_dir_all(store.meta_dir())?;
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(store))
}

/// The lock file's path, for messages.
pub fn lock_path(store: &Store) -> PathBuf {
    store.meta_dir().join(LOCK)
}

/// Taken by every build before it reads or writes the store; calls
/// `waiting` when a `gc` holds the store.
pub fn lock_shared(store: &Store, waiting: impl FnOnce()) -> io::Result<StoreLock> {
    let file = lock_file(store)?;
    match file.try_lock_shared() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            waiting();
            file.lock_shared()?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    Ok(StoreLock { _file: file })
}

/// Taken by `gc`: `None` when builds hold the store and `wait` is false;
/// otherwise calls `waiting` and waits for them to finish.
pub fn lock_exclusive(
    store: &Store,
    wait: bool,
    waiting: impl FnOnce(),
) -> io::Result<Option<StoreLock>> {
    let file = lock_file(store)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) if !wait => return Ok(None),
        Err(fs::TryLockError::WouldBlock) => {
            waiting();
            file.lock()?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(e),
    }
    Ok(Some(StoreLock { _file: file }))
}

/// Parses a size such as `10G`, `500M`, `64K`, `1024` or `0` (suffixes are
/// powers of 1024, optionally followed by `B` or `iB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size `{text}`: expected a whole number with an optional K, M, G or T suffix, e.g. 10G, 500M or 0"
        )
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("invalid size `{text}`: too large"))
}

/// A number of objects (or files, folders) and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub count: u64,
    pub bytes: u64,
}

/// The CAS and the action cache, which `gc` bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Objects {
    pub blobs: Count,
    pub action_results: Count,
    /// Both together.
    pub bytes: u64,
}

impl From<Usage> for Objects {
    fn from(u: Usage) -> Objects {
        Objects {
            blobs: Count {
                count: u.blobs,
                bytes: u.blob_bytes,
            },
            action_results: Count {
                count: u.action_results,
                bytes: u.action_result_bytes,
            },
            bytes: u.bytes(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct WorkspaceRecords {
    /// The folder name under `<store>/meta/records/`.
    pub tag: String,
    /// The BUILD file of its newest record.
    pub build_file: String,
    pub builds: usize,
}

#[derive(Debug, Serialize)]
pub struct Scratch {
    pub folders: u64,
    pub bytes: u64,
    /// Held by a running build.
    pub in_use: u64,
}

/// What `strata store stats` prints.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub store: PathBuf,
    /// CAS and action cache, every digest function.
    pub objects: Objects,
    /// The same per digest function.
    pub by_function: BTreeMap<String, Objects>,
    pub temporaries: Count,
    pub scratch: Scratch,
    /// Cache mounts (`<store>/caches/`); `gc` never touches them.
    pub caches: Count,
    /// Input trees sandboxed steps mount (`<store>/trees/`): how many, and
    /// the bytes of the files only they hold (a file linked to a stored
    /// blob counts under `objects`).
    pub trees: Count,
    pub workspaces: Vec<WorkspaceRecords>,
    pub keep_builds: usize,
    /// What the newest `keep_builds` records of every workspace reach.
    pub reachable: Objects,
}

/// The store's objects with those the newest `keep_builds` records of
/// every workspace reach marked as kept.
fn scan(store: &Store, keep_builds: usize) -> Result<(Collector, Vec<WorkspaceRecords>), String> {
    let mut stores = vec![store.clone()];
    for f in store_gc::functions_on_disk(store.root()) {
        if f != store.function() {
            stores.push(
                Store::open(store.root(), f)
                    .map_err(|e| format!("cannot open the store for {f}: {e}"))?,
            );
        }
    }
    let mut collector = Collector::scan(stores);
    let mut workspaces = Vec::new();
    for (tag, recs) in records::read_every_workspace(&store.meta_dir()) {
        for record in recs.iter().rev().take(keep_builds) {
            let Ok(function) = record.digest_function.parse::<DigestFunction>() else {
                continue;
            };
            for target in record.targets.values() {
                // Keys and outputs by hash: older records have no sizes.
                if let Some(key) = target.key.as_deref().and_then(|k| Digest::from_hex(k, 0)) {
                    collector.keep_action(function, &key.hash);
                }
                let output = target.output.as_deref().and_then(|o| o.split_once(':'));
                if let Some((f, hex)) = output
                    && let (Ok(f), Some(d)) =
                        (f.parse::<DigestFunction>(), Digest::from_hex(hex, 0))
                {
                    collector.keep_tree(f, &d.hash);
                }
            }
        }
        if let Some(newest) = recs.last() {
            workspaces.push(WorkspaceRecords {
                tag,
                build_file: newest.build_file.clone(),
                builds: recs.len(),
            });
        }
    }
    Ok((collector, workspaces))
}

fn count(items: impl IntoIterator<Item = u64>) -> Count {
    items.into_iter().fold(Count::default(), |c, bytes| Count {
        count: c.count + 1,
        bytes: c.bytes + bytes,
    })
}

/// Counts everything in the store. Reads only, without a lock: during a
/// build the numbers are a snapshot.
pub fn stats(store: &Store, keep_builds: usize) -> Result<Stats, String> {
    let (collector, workspaces) = scan(store, keep_builds)?;
    let scratch = exec::scratch_folders(store, "");
    let caches =
        strata_exec::caches::list(store).map_err(|e| format!("cannot list the caches: {e}"))?;
    Ok(Stats {
        store: store.root().to_path_buf(),
        objects: collector.usage().into(),
        by_function: collector
            .usage_by_function()
            .into_iter()
            .map(|(f, u)| (f.to_string(), u.into()))
            .collect(),
        temporaries: count(store_gc::temporaries(store).into_iter().map(|(_, b)| b)),
        scratch: Scratch {
            folders: scratch.len() as u64,
            bytes: scratch.iter().map(|(p, _)| fstree::tree_bytes(p)).sum(),
            in_use: scratch.iter().filter(|(_, held)| *held).count() as u64,
        },
        caches: count(caches.into_iter().map(|(_, b)| b)),
        trees: {
            let usage = exec_trees::usage(store);
            Count {
                count: usage.trees,
                bytes: usage.bytes,
            }
        },
        workspaces,
        keep_builds,
        reachable: collector.kept().into(),
    })
}

/// What `strata store gc` was asked to do.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// The most bytes the CAS and the action cache may hold afterwards.
    pub max_bytes: u64,
    pub keep_builds: usize,
    /// Report what would go, remove nothing.
    pub dry_run: bool,
    /// Also remove Strata's tree images from the Docker Engine
    /// (`DOCKER_HOST`) whose tree the store no longer holds afterwards.
    pub docker: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Removed {
    pub blobs: Count,
    pub action_results: Count,
    pub temporaries: Count,
    /// Scratch folders of dead builds and kept failures.
    pub scratch: Count,
    /// Input trees (and leftovers of their making): those of earlier boots
    /// and those whose tree the store no longer holds afterwards. Bytes:
    /// of the files only the tree held.
    pub trees: Count,
    /// Memory cgroups of steps of killed builds (`cgroup::stale`), on
    /// this machine whatever their store.
    pub cgroups: u64,
}

/// What `strata store gc` did (or, with `dry_run`, would do).
#[derive(Debug, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub max_bytes: u64,
    pub keep_builds: usize,
    pub before: Objects,
    pub removed: Removed,
    pub after: Objects,
    /// What the kept builds reach (never removed).
    pub reachable: Objects,
    /// The kept builds alone need more than `max_bytes`.
    pub over_limit: bool,
    /// With `docker`: what became of Strata's tree images in the engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree_images: Option<TreeImages>,
    pub errors: Vec<String>,
}

/// Strata's tree images (`strata-tree:<tree digest>`) in a Docker Engine,
/// sorted by what `gc` did with them.
#[derive(Debug, Default, Serialize)]
pub struct TreeImages {
    /// The engine's address.
    pub host: String,
    /// Their tree is gone from the store: removed (with `dry_run`, would
    /// be, unless a container uses them).
    pub removed: u64,
    /// Their tree is still in the store.
    pub kept: u64,
    /// Their tree is gone, but a container (running or stopped) uses them.
    pub in_use: u64,
}

/// A cache outside the store whose entries are made from store trees
/// (Docker's `strata-tree:<hex>` images): `gc --docker` prunes it.
pub trait TreeImageCache {
    /// Removes the entries whose tree `keep` says the store no longer
    /// holds (with `dry_run`, only counts them); an entry in use stays.
    fn prune(&self, keep: &dyn Fn(&Digest) -> bool, dry_run: bool) -> Result<TreeImages, String>;
}

/// Evicts what the newest `keep_builds` builds of every workspace do not
/// reach, least recently used first, until the CAS and the action cache
/// hold at most `max_bytes`; then removes temporaries and scratch folders of
/// dead builds, and the input trees of earlier boots or of trees the store
/// no longer holds. `_lock` (exclusive) proves no build is running.
///
/// With `opts.docker`, `images` (the Docker Engine's tree images, from the
/// binary) loses those whose tree the store no longer holds after this
/// collection: a step that needs one again imports its tree again, and a
/// tree the store lost would be rebuilt before any step ran on it.
pub fn collect(
    store: &Store,
    opts: &GcOptions,
    _lock: &StoreLock,
    images: Option<&dyn TreeImageCache>,
) -> Result<GcReport, String> {
    let (collector, _) = scan(store, opts.keep_builds)?;
    let before: Objects = collector.usage().into();
    let reachable: Objects = collector.kept().into();
    let plan = collector.plan(opts.max_bytes);
    let temporaries = store_gc::temporaries(store);
    // No build runs (we hold the lock), so no scratch folder is in use; a
    // held one would belong to a process that ignores the lock.
    let scratch: Vec<(PathBuf, u64)> = exec::scratch_folders(store, "")
        .into_iter()
        .filter(|(_, held)| !held)
        .map(|(p, _)| {
            let bytes = fstree::tree_bytes(&p);
            (p, bytes)
        })
        .collect();
    // Derived data: a tree goes unless it is of this boot and the store
    // still holds its tree afterwards (no build uses one meanwhile).
    let trees: Vec<(exec_trees::Tree, u64)> = exec_trees::list(store)
        .into_iter()
        .filter(|t| {
            let held = |d: &Digest| collector.holds_after(&plan, &d.hash);
            t.temporary || !t.this_boot || !t.digest.as_ref().is_some_and(held)
        })
        .map(|t| {
            let bytes = exec_trees::own_bytes(&t.path);
            (t, bytes)
        })
        .collect();
    let mut errors = Vec::new();
    let removed_objects = if opts.dry_run {
        plan.removed
    } else {
        let swept = collector.sweep(&plan);
        errors.extend(swept.errors);
        for (path, _) in temporaries.iter().chain(&scratch) {
            if !remove_any(path) {
                errors.push(format!("cannot remove {}", path.display()));
            }
        }
        for (tree, _) in &trees {
            if !exec_trees::remove(store, tree) {
                errors.push(format!("cannot remove {}", tree.path.display()));
            }
        }
        swept.removed
    };
    // Not the store's: a step's cgroup is the machine's, whatever store
    // its build used.
    let cgroups = if opts.dry_run {
        strata_exec::cgroup::stale().len()
    } else {
        strata_exec::cgroup::remove_stale()
    } as u64;
    let tree_images = match images.filter(|_| opts.docker) {
        Some(images) => match images.prune(
            &|tree| collector.holds_after(&plan, &tree.hash),
            opts.dry_run,
        ) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        None => None,
    };
    let removed: Objects = removed_objects.into();
    let after = Objects::from(Usage {
        blobs: before.blobs.count - removed.blobs.count,
        blob_bytes: before.blobs.bytes - removed.blobs.bytes,
        action_results: before.action_results.count - removed.action_results.count,
        action_result_bytes: before.action_results.bytes - removed.action_results.bytes,
    });
    Ok(GcReport {
        dry_run: opts.dry_run,
        max_bytes: opts.max_bytes,
        keep_builds: opts.keep_builds,
        before,
        removed: Removed {
            blobs: removed.blobs,
            action_results: removed.action_results,
            temporaries: count(temporaries.iter().map(|(_, b)| *b)),
            scratch: count(scratch.iter().map(|(_, b)| *b)),
            trees: count(trees.iter().map(|(_, b)| *b)),
            cgroups,
        },
        over_limit: after.bytes > opts.max_bytes,
        after,
        reachable,
        tree_images,
        errors,
    })
}

/// Removes a file or a folder tree; true when nothing is left.
fn remove_any(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fstree::remove_tree(path),
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => return true,
    }
    fs::symlink_metadata(path).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_bad_ones_are_refused() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("10g"), Ok(10 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("3GB"), Ok(3 << 30));
        for bad in [
            "",
            "G",
            "-1",
            "1.5G",
            "10X",
            "10 G",
            "99999999999999T",
            "١٠",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
