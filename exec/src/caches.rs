//! Cache mounts (BuildKit's `--mount=type=cache`): named folders that persist
//! across builds in `<store>/caches/<name>/`, for package managers' download
//! caches.
//!
//! A cache's contents never enter a key: a step must produce the same result
//! with a cold or a warm cache, exactly as with BuildKit. One step at a time
//! writes a cache (an exclusive `flock` on `<name>.lock`), so two concurrent
//! `apt-get` runs never corrupt each other's files. `export`/`import` move a
//! cache between machines as a `.tar.zst`, e.g. into a CI cache.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use strata_store::Store;

/// Checks a cache name given on the command line (the loader checks those
/// in BUILD.yaml the same way).
pub fn check_name(name: &str) -> Result<(), String> {
    strata_rules::run::check_cache_name(name)
}

/// A cache held exclusively until dropped.
pub struct CacheLock {
    pub dir: PathBuf,
    _lock: File,
}

fn root(store: &Store) -> PathBuf {
    store.root().join("caches")
}

fn file(store: &Store, name: &str) -> io::Result<File> {
    let root = root(store);
    fs::create_dir_all(&root)?;
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(format!("{name}.lock")))
}

fn held(store: &Store, name: &str, lock: File) -> io::Result<CacheLock> {
    let dir = root(store).join(name);
    fs::create_dir_all(&dir)?;
    Ok(CacheLock { dir, _lock: lock })
}

/// Takes cache `name` (created when new) if no other step or build holds
/// it; `None` otherwise. Never blocks, so async code can call it.
pub fn try_lock(store: &Store, name: &str) -> io::Result<Option<CacheLock>> {
    let lock = file(store, name)?;
    match lock.try_lock() {
        Ok(()) => held(store, name, lock).map(Some),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Takes cache `name`, waiting for whoever holds it.
pub fn lock(store: &Store, name: &str) -> io::Result<CacheLock> {
    let lock = file(store, name)?;
    lock.lock()?;
    held(store, name, lock)
}

/// Names and sizes (bytes of regular files) of the caches in the store.
pub fn list(store: &Store) -> io::Result<Vec<(String, u64)>> {
    let mut caches = Vec::new();
    let entries = match fs::read_dir(root(store)) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(caches),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        let size = walkdir::WalkDir::new(e.path())
            .into_iter()
            .filter_map(Result::ok)
            .filter(|f| f.file_type().is_file())
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum();
        caches.push((e.file_name().to_string_lossy().into_owned(), size));
    }
    caches.sort();
    Ok(caches)
}

/// Writes cache `name` to `dest` as a zstd-compressed tar (entries sorted,
/// owners and modes kept); returns the number of entries.
pub fn export(store: &Store, name: &str, dest: &Path) -> io::Result<u64> {
    let held = lock(store, name)?;
    let tmp = dest.with_extension("partial");
    let out = BufWriter::new(File::create(&tmp)?);
    let mut tar = tar::Builder::new(zstd::Encoder::new(out, 3)?);
    tar.follow_symlinks(false);
    let mut count = 0;
    for entry in walkdir::WalkDir::new(&held.dir)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry
            .path()
            .strip_prefix(&held.dir)
            .expect("walk stays below its root");
        tar.append_path_with_name(entry.path(), rel)?;
        count += 1;
    }
    tar.into_inner()?
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    fs::rename(&tmp, dest)?;
    Ok(count)
}

/// Replaces cache `name` with the contents of an exported `.tar.zst`. The
/// archive is unpacked beside the cache first (never outside it: entries
/// with `..` or absolute paths are refused by `unpack_in`), then swapped in.
pub fn import(store: &Store, name: &str, src: &Path) -> io::Result<u64> {
    let held = lock(store, name)?;
    let staging = root(store).join(format!(".import-{name}-{}", std::process::id()));
    crate::fstree::remove_tree(&staging);
    fs::create_dir_all(&staging)?;
    let result = (|| {
        let input = BufReader::new(File::open(src)?);
        let mut archive = tar::Archive::new(zstd::Decoder::new(input)?);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
        archive.set_overwrite(false);
        let mut count = 0;
        for entry in archive.entries()? {
            let mut entry = entry?;
            if !entry.unpack_in(&staging)? {
                return Err(io::Error::other(format!(
                    "refused entry `{}`: it would land outside the cache",
                    entry.path()?.display()
                )));
            }
            count += 1;
        }
        Ok(count)
    })();
    let count = match result {
        Ok(c) => c,
        Err(e) => {
            crate::fstree::remove_tree(&staging);
            return Err(e);
        }
    };
    let old = root(store).join(format!(".old-{name}-{}", std::process::id()));
    fs::rename(&held.dir, &old)?;
    fs::rename(&staging, &held.dir)?;
    crate::fstree::remove_tree(&old);
    Ok(count)
}
