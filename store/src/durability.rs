//! Group commit: when the store's writes reach the disk, and in which order.
//!
//! Blobs are published without an fsync of their own (write a temporary
//! file, rename it into place). Only the action-cache entry that names them
//! waits for durability: [`Durability::sync`], one `syncfs(2)` of the
//! store's file system, shared by every writer that asks while one runs,
//! comes between the entry's bytes being written to a temporary file and
//! the rename that publishes it. So, after a power cut:
//!
//! - an entry that survived was renamed after a `syncfs` that followed the
//!   writing and renaming of every blob it names: those blobs are on disk,
//!   whole, under their names (and the entry's own bytes were synced by that
//!   same call);
//! - a blob renamed after the last `syncfs` may be on disk under its name
//!   with a size set and content that never arrived (ext4 without a
//!   journal, or any file system with a volatile disk cache, orders none of
//!   these writes). No entry names it, but a later writer would take it for
//!   present (`Cas::contains` reads only the size). [`Durability::note_unsynced`]
//!   therefore leaves a durable marker, `<store>/meta/unsynced/<boot
//!   id>-<pid>.<n>`, locked for as long as it lives, before a process's
//!   first unsynced blob, and removes it once a final `syncfs` has covered
//!   them all. [`recover`], run by `Store::open`, looks at the markers no
//!   one holds (locks, not pids: stores are shared across containers and
//!   machines): one of another boot means a power cut, so every blob
//!   changed since it was written is hashed again and dropped if wrong; one
//!   of this boot (a killed build) only needs a `syncfs`, as the kernel
//!   still holds what that process wrote.
//!
//! A `syncfs` costs about what one `fsync` does, instead of the ten or so a
//! step's blobs, directory records, logs and entry used to take.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Result, StoreError};

/// Where processes leave their markers, below the store's root.
pub(crate) const MARKERS: &str = "meta/unsynced";

/// How far before a dead boot's marker a blob's change time may lie and
/// still be checked: room for the clock being set back.
const CLOCK_SLACK: Duration = Duration::from_secs(3600);

/// One store's group commit, shared by every handle of one `Store::open`.
#[derive(Debug)]
pub(crate) struct Durability {
    root: PathBuf,
    /// The store's root folder, open: what `syncfs` is called on.
    dir: fs::File,
    /// This process's marker, once written, and its lock.
    marker: OnceLock<(PathBuf, fs::File)>,
    /// Held while the marker is being written.
    marking: Mutex<()>,
    syncs: Mutex<Syncs>,
    done: Condvar,
}

/// Tickets of the callers of [`Durability::sync`]: a ticket is covered by
/// a `syncfs` that started after it was taken.
#[derive(Debug, Default)]
struct Syncs {
    taken: u64,
    covered: u64,
    running: bool,
}

impl Durability {
    pub(crate) fn new(root: &Path) -> Result<Durability> {
        let dir =
            fs::File::open(root).map_err(|e| StoreError::io("cannot open the store", root, e))?;
        Ok(Durability {
            root: root.to_path_buf(),
            dir,
            marker: OnceLock::new(),
            marking: Mutex::new(()),
            syncs: Mutex::default(),
            done: Condvar::new(),
        })
    }

    /// Called before a blob is renamed into place without being synced:
    /// makes sure this process's marker is on disk first (once per
    /// process and store; an fsync of the marker and of its folder).
    /// A failure (a full disk) is returned, and the next call tries again.
    pub(crate) fn note_unsynced(&self) -> Result<()> {
        if self.marker.get().is_some() {
            return Ok(());
        }
        let _marking = self.marking.lock().unwrap_or_else(|p| p.into_inner());
        if self.marker.get().is_none() {
            let dir = self.root.join(MARKERS);
            let marker = write_marker(&dir)
                .map_err(|e| StoreError::io("cannot mark the store as being written", dir, e))?;
            let _ = self.marker.set(marker);
        }
        Ok(())
    }

    /// Returns once everything written to the store's file system before
    /// the call is on disk: one `syncfs`, or a share of one that started
    /// after the call did.
    pub(crate) fn sync(&self) -> Result<()> {
        let mut s = self.syncs.lock().unwrap_or_else(|p| p.into_inner());
        s.taken += 1;
        let ticket = s.taken;
        loop {
            if s.covered >= ticket {
                return Ok(());
            }
            if s.running {
                s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s.running = true;
            let upto = s.taken;
            drop(s);
            let synced = syncfs(&self.dir);
            s = self.syncs.lock().unwrap_or_else(|p| p.into_inner());
            s.running = false;
            if synced.is_ok() {
                s.covered = s.covered.max(upto);
            }
            self.done.notify_all();
            // A failure is this caller's; the waiters try on their own.
            synced.map_err(|e| StoreError::io("cannot sync the store", &self.root, e))?;
        }
    }
}

impl Drop for Durability {
    /// The last handle of a store: everything this process wrote reaches
    /// the disk, then its marker goes.
    fn drop(&mut self) {
        if let Some((marker, _lock)) = self.marker.get()
            && self.sync().is_ok()
        {
            let _ = fs::remove_file(marker);
        }
    }
}

fn syncfs(dir: &fs::File) -> io::Result<()> {
    // SAFETY: syncfs(2) on a descriptor we own.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The kernel's id of this boot; empty if it cannot be read (then every
/// marker left counts as another boot's).
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn unix_ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Prefix of a marker being written, not yet locked and in place.
const NEW: &str = ".new-";
/// How old an unfinished marker must be before `recover` removes it.
const NEW_GRACE: Duration = Duration::from_secs(60);

/// `<dir>/<boot id>-<pid>.<n>` (`n` tells apart the stores a process
/// opens), holding the time it was written, locked, and synced with its
/// folder before any blob it covers is renamed into place. Written under
/// a hidden name and renamed once locked, so `recover` never sees it
/// unlocked while its writer lives.
fn write_marker(dir: &Path) -> io::Result<(PathBuf, fs::File)> {
    static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let created = match fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    let name = format!("{}-{}.{n}", boot_id(), std::process::id());
    let new = dir.join(format!("{NEW}{name}"));
    let file = fs::File::create(&new)?;
    file.lock()?;
    io::Write::write_all(
        &mut &file,
        format!("{}\n", unix_ns(SystemTime::now())).as_bytes(),
    )?;
    file.sync_all()?;
    let path = dir.join(name);
    fs::rename(&new, &path)?;
    // The folder too: the marker's name must be on disk before the blobs
    // (and the folder's own, the first time).
    fs::File::open(dir)?.sync_all()?;
    if let Some(meta) = dir.parent().filter(|_| created) {
        fs::File::open(meta)?.sync_all()?;
    }
    Ok((path, file))
}

/// A marker left by a process that is not running: whose boot, and since
/// when it wrote unsynced blobs.
#[derive(Debug)]
struct Left {
    path: PathBuf,
    same_boot: bool,
    since: SystemTime,
}

/// The markers in `dir` no one holds; unfinished ones (which no blob
/// relies on yet) are removed once old enough.
fn left_markers(dir: &Path, boot: &str) -> Vec<Left> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.starts_with(NEW) {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > NEW_GRACE);
                if old {
                    let _ = fs::remove_file(e.path());
                }
                return None;
            }
            let file = fs::File::open(e.path()).ok()?;
            if let Err(fs::TryLockError::WouldBlock) = file.try_lock() {
                return None; // its process runs: its own business
            }
            let (their_boot, _pid) = name.rsplit_once('-')?;
            let same_boot = !boot.is_empty() && their_boot == boot;
            let written = fs::read_to_string(e.path())
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|ns| UNIX_EPOCH + Duration::from_nanos(ns));
            // An unreadable marker (cut short itself): check everything.
            let since = written.unwrap_or(UNIX_EPOCH);
            Some(Left {
                path: e.path(),
                same_boot,
                since,
            })
        })
        .collect()
}

/// What `Store::open` does about markers of processes that are gone: see
/// the module's comment. `cas_root` holds one folder per digest function.
/// Returns the blobs dropped.
pub(crate) fn recover(root: &Path, cas_root: &Path) -> Result<Vec<PathBuf>> {
    let left = left_markers(&root.join(MARKERS), &boot_id());
    if left.is_empty() {
        return Ok(Vec::new());
    }
    let mut dropped = Vec::new();
    let power_cut = left.iter().filter(|m| !m.same_boot).map(|m| m.since).min();
    if let Some(since) = power_cut {
        let since = since.checked_sub(CLOCK_SLACK).unwrap_or(UNIX_EPOCH);
        dropped = drop_torn_blobs(cas_root, since);
    }
    let dir = fs::File::open(root).map_err(|e| StoreError::io("cannot open the store", root, e))?;
    syncfs(&dir).map_err(|e| StoreError::io("cannot sync the store", root, e))?;
    for m in left {
        let _ = fs::remove_file(&m.path);
    }
    Ok(dropped)
}

/// Hashes every blob changed at or after `since` (all digest functions)
/// and removes those whose content is not what their name says.
fn drop_torn_blobs(cas_root: &Path, since: SystemTime) -> Vec<PathBuf> {
    let since_ns = unix_ns(since) as i128;
    let mut dropped = Vec::new();
    for function in crate::DigestFunction::ALL {
        for (digest, path) in crate::cas::list_blobs(&cas_root.join(function.name())) {
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let changed = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
            if changed < since_ns {
                continue;
            }
            let whole = meta.len() == digest.size_bytes
                && fs::File::open(&path)
                    .and_then(|f| function.of_reader(f))
                    .is_ok_and(|actual| actual == digest);
            if !whole && fs::remove_file(&path).is_ok() {
                dropped.push(path);
            }
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::{DigestFunction, Store};

    fn markers(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(root.join(MARKERS))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn a_process_marks_the_store_while_it_has_unsynced_blobs() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), DigestFunction::Blake3).unwrap();
        assert!(markers(d.path()).is_empty(), "opening writes nothing");
        s.cas().put_bytes(b"unsynced").unwrap();
        let mine = format!("{}-{}.", boot_id(), std::process::id());
        assert!(
            matches!(&markers(d.path())[..], [m] if m.starts_with(&mine)),
            "{:?}",
            markers(d.path())
        );
        drop(s);
        assert!(markers(d.path()).is_empty(), "synced, then unmarked");
    }

    /// A marker of another boot: blobs changed since it was written are
    /// hashed again, and the torn ones (size right, content not) dropped.
    #[test]
    fn after_a_power_cut_torn_blobs_are_dropped_and_whole_ones_kept() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), DigestFunction::Blake3).unwrap();
        let old = s.cas().put_bytes(b"synced long ago").unwrap();
        let whole = s.cas().put_bytes(b"written and synced").unwrap();
        let torn = s.cas().put_bytes(b"renamed, content lost").unwrap();
        let torn_path = s.cas().path(&torn);
        fs::set_permissions(&torn_path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&torn_path, vec![0u8; torn.size_bytes as usize]).unwrap();
        drop(s);
        // As if the machine died after those writes: a marker of another
        // boot, written before them (the blob `old` predates it).
        let dir = d.path().join(MARKERS);
        fs::create_dir_all(&dir).unwrap();
        let before = SystemTime::now() - Duration::from_secs(1);
        fs::write(
            dir.join("00000000-dead-boot-0000-000000000000-4242.0"),
            format!("{}\n", unix_ns(before)),
        )
        .unwrap();
        let dropped = recover(d.path(), &d.path().join("cas")).unwrap();
        let s = Store::open(d.path(), DigestFunction::Blake3).unwrap();
        assert_eq!(dropped, [torn_path]);
        assert!(!s.cas().contains(&torn), "a torn blob counts as absent");
        assert_eq!(s.cas().read(&whole).unwrap(), b"written and synced");
        assert_eq!(s.cas().read(&old).unwrap(), b"synced long ago");
        assert!(markers(d.path()).is_empty(), "recovered, then unmarked");
    }

    #[test]
    fn a_held_marker_is_left_alone_and_a_killed_builds_only_synced() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(MARKERS);
        fs::create_dir_all(&dir).unwrap();
        // Even another boot's: held means its process runs (elsewhere).
        let held = "00000000-other-boot-0000-000000000000-77.0";
        let lock = fs::File::create(dir.join(held)).unwrap();
        lock.lock().unwrap();
        // A killed build's, of this boot, that says it began in 1970: the
        // kernel still holds what it wrote, nothing is hashed again.
        let killed = format!("{}-4242.0", boot_id());
        let s = Store::open(d.path(), DigestFunction::Blake3).unwrap();
        let blob = s.cas().put_bytes(b"whole").unwrap();
        let path = s.cas().path(&blob);
        drop(s);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"WHOLE").unwrap();
        fs::write(dir.join(&killed), "0\n").unwrap();
        assert_eq!(
            recover(d.path(), &d.path().join("cas")).unwrap(),
            [] as [PathBuf; 0]
        );
        assert_eq!(markers(d.path()), [held]);
        assert!(path.exists(), "not hashed again");
    }

    #[test]
    fn sync_calls_share_a_syncfs_and_all_return() {
        let d = tempfile::tempdir().unwrap();
        let durability = std::sync::Arc::new(Durability::new(d.path()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dur = durability.clone();
                std::thread::spawn(move || dur.sync().unwrap())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = durability.syncs.lock().unwrap();
        assert_eq!((s.taken, s.covered, s.running), (8, 8, false));
    }
}
