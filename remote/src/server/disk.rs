//! The server's folder and its least-recently-used index.
//!
//! ```text
//! DIR/FORMAT          "strata-cache-server-1 <digest function>"
//! DIR/cas/xx/<hex>    blobs, named by the hash of their content
//! DIR/ac/xx/<hex>     action results (serialized REAPI ActionResult)
//! DIR/tmp/            uploads being received; emptied at start
//! ```
//!
//! Files are published by rename from `tmp/`, so a crash leaves each entry
//! absent or whole. The index (sizes, last use, which action results name
//! which blobs) lives in memory and is rebuilt from the folder at start,
//! ordered by file modification time, which a hit updates. Every change to
//! the set of published files happens under the index lock, so the index
//! and the folder agree, and an action result is admitted only while every
//! blob it names is indexed.
//!
//! Why not the local store's code: objects are named as in Bazel's HTTP
//! layout ([`crate::layout`]) under one digest function, without the
//! store's `cas/<function>/` level, so folders served by earlier versions
//! stay valid; and the store is collected by reachability from build
//! records (`strata store gc`), while a shared cache has no records and
//! keeps within `--max-size` by least recent use, which this index tracks.
//! Hashing is the store's (`DigestFunction::hasher`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use strata_store::{Digest, DigestFunction};

use super::log;
use super::refs::{self, Blobs};
use crate::layout::{Hash, Kind, parse_hex};

const FORMAT: &str = "strata-cache-server-1";

/// Mode of published files: read-only, as in the store.
const FILE_MODE: u32 = 0o444;

type Key = (Kind, Hash);

struct Entry {
    size: u64,
    tick: u64,
    /// For an action result: the blobs it names.
    refs: Vec<Hash>,
}

/// Sizes and use order of everything published.
#[derive(Default)]
struct Index {
    entries: HashMap<Key, Entry>,
    /// Last use, oldest first.
    order: BTreeMap<u64, Key>,
    /// Blob -> the action results naming it.
    users: HashMap<Hash, HashSet<Hash>>,
    total: u64,
    tick: u64,
}

impl Index {
    fn insert(&mut self, key: Key, size: u64, refs: Vec<Hash>) {
        self.remove(&key);
        self.tick += 1;
        self.order.insert(self.tick, key);
        for r in &refs {
            self.users.entry(*r).or_default().insert(key.1);
        }
        self.total += size;
        let tick = self.tick;
        self.entries.insert(key, Entry { size, tick, refs });
    }

    fn remove(&mut self, key: &Key) -> Option<u64> {
        let entry = self.entries.remove(key)?;
        self.order.remove(&entry.tick);
        for r in &entry.refs {
            if let Some(users) = self.users.get_mut(r) {
                users.remove(&key.1);
                if users.is_empty() {
                    self.users.remove(r);
                }
            }
        }
        self.total = self.total.saturating_sub(entry.size);
        Some(entry.size)
    }

    /// Records the blobs an action result names, keeping its place.
    fn set_refs(&mut self, key: &Key, refs: Vec<Hash>) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        for r in &refs {
            self.users.entry(*r).or_default().insert(key.1);
        }
        entry.refs = refs;
    }

    /// Marks `key` as just used; its size if it is indexed.
    fn touch(&mut self, key: &Key) -> Option<u64> {
        let entry = self.entries.get_mut(key)?;
        self.order.remove(&entry.tick);
        self.tick += 1;
        entry.tick = self.tick;
        self.order.insert(self.tick, *key);
        Some(entry.size)
    }

    fn size_of(&self, key: &Key) -> Option<u64> {
        self.entries.get(key).map(|e| e.size)
    }

    /// The least recently used entries to remove so that `incoming` more
    /// bytes fit in `max`, never one of `keep`; a blob takes the action
    /// results naming it along. `None` if they cannot fit.
    fn victims(&self, incoming: u64, max: u64, keep: &HashSet<Key>) -> Option<Vec<Key>> {
        let mut excess = (self.total.checked_add(incoming)?).saturating_sub(max);
        let mut chosen = HashSet::new();
        let mut list = Vec::new();
        for key in self.order.values() {
            if excess == 0 {
                break;
            }
            if keep.contains(key) || chosen.contains(key) {
                continue;
            }
            let users = match key.0 {
                Kind::Cas => self.users.get(&key.1),
                Kind::Ac => None,
            };
            let group = users
                .into_iter()
                .flatten()
                .map(|h| (Kind::Ac, *h))
                .chain([*key]);
            for k in group {
                if chosen.insert(k) {
                    excess = excess.saturating_sub(self.size_of(&k).unwrap_or(0));
                    list.push(k);
                }
            }
        }
        (excess == 0).then_some(list)
    }
}

/// Why a publication failed.
#[derive(Debug)]
pub enum CommitError {
    /// More than `--max-size` even after evicting everything allowed.
    TooLarge,
    /// The action result names a blob that is not (or no longer) stored.
    Missing(Digest),
    Io(io::Error),
}

/// Why the folder cannot be served.
#[derive(Debug)]
pub enum OpenError {
    /// The folder belongs to something else, or to another digest function.
    Usage(String),
    Io(String),
}

/// What opening found.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub blobs: u64,
    pub action_results: u64,
    pub bytes: u64,
    /// Action results naming blobs that are gone (a crash mid-eviction, or
    /// files deleted by hand), removed.
    pub incomplete: u64,
    /// Entries evicted because the folder holds more than `--max-size`.
    pub evicted: u64,
}

/// The server's storage. Thread-safe; one per folder (held by a lock).
pub struct Storage {
    root: PathBuf,
    tmp: PathBuf,
    function: DigestFunction,
    max_size: u64,
    empty: Hash,
    index: Mutex<Index>,
    /// `flock` on the folder, held for the life of the server: two servers
    /// with separate indexes would evict each other's files unseen.
    _lock: File,
}

impl Storage {
    pub fn open(
        dir: &Path,
        function: DigestFunction,
        max_size: u64,
    ) -> Result<(Storage, OpenReport), OpenError> {
        let io = |what: &str, p: &Path, e: io::Error| {
            OpenError::Io(format!("{what} {}: {e}", p.display()))
        };
        fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let lock = File::open(dir).map_err(|e| io("cannot open", dir, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Io(format!(
                    "{} is served by another `strata cache serve`",
                    dir.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("cannot lock", dir, e)),
        }
        check_format(dir, function)?;
        let tmp = dir.join("tmp");
        for sub in [tmp.clone(), dir.join("cas"), dir.join("ac")] {
            fs::create_dir_all(&sub).map_err(|e| io("cannot create", &sub, e))?;
        }
        // Uploads cut short by a crash; nobody else writes here (the lock).
        for e in fs::read_dir(&tmp).map_err(|e| io("cannot list", &tmp, e))? {
            let _ = e.map(|e| fs::remove_file(e.path()));
        }
        let storage = Storage {
            root: dir.to_path_buf(),
            tmp,
            function,
            max_size,
            empty: function.of_bytes(b"").hash,
            index: Mutex::new(Index::default()),
            _lock: lock,
        };
        let report = storage.rebuild().map_err(|e| io("cannot read", dir, e))?;
        Ok((storage, report))
    }

    pub fn function(&self) -> DigestFunction {
        self.function
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Bytes of all published entries.
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.index().total
    }

    /// The hash of the empty blob, which every cache holds implicitly.
    pub fn empty(&self) -> &Hash {
        &self.empty
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // The index is only mutated by code that does not panic; a poisoned
        // lock still holds a consistent index.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn path(&self, kind: Kind, hash: &Hash) -> PathBuf {
        let hex = hex::encode(hash);
        self.root.join(kind.dir()).join(&hex[..2]).join(hex)
    }

    /// A new temporary file for an upload; removed when dropped unless
    /// committed.
    pub fn temp_file(&self) -> io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(".upload-")
            .tempfile_in(&self.tmp)
    }

    /// Opens a stored entry for reading and marks it used (in the index
    /// and, for the next start, in its modification time).
    pub fn open_read(&self, kind: Kind, hash: &Hash) -> io::Result<Option<(File, u64)>> {
        let key = (kind, *hash);
        if self.index().touch(&key).is_none() {
            return Ok(None);
        }
        let path = self.path(kind, hash);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Deleted behind the server's back; a commit renames under
                // the lock, so absence checked under it is final.
                let mut index = self.index();
                if !path.exists() {
                    index.remove(&key);
                }
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        // Best effort: only the order after a restart depends on it.
        let _ = file.set_modified(SystemTime::now());
        let size = file.metadata()?.len();
        Ok(Some((file, size)))
    }

    /// Whether `blob` is stored with its size; if so, marks it used (in
    /// the index only: a hit that reads it updates its modification time).
    pub fn touch_blob(&self, blob: &Digest) -> bool {
        let key = (Kind::Cas, blob.hash);
        let mut index = self.index();
        if index.size_of(&key) != Some(blob.size_bytes) {
            return false;
        }
        index.touch(&key);
        true
    }

    /// Publishes a fully written, fsynced upload as `kind/hash`. For an
    /// action result, `refs` are the blobs it names: each must be stored
    /// with its size, and they are kept while others are evicted for room.
    pub fn commit(
        &self,
        kind: Kind,
        hash: &Hash,
        upload: tempfile::NamedTempFile,
        refs: &[Digest],
    ) -> Result<(), CommitError> {
        let size = upload.as_file().metadata().map_err(CommitError::Io)?.len();
        fs::set_permissions(upload.path(), fs::Permissions::from_mode(FILE_MODE))
            .map_err(CommitError::Io)?;
        let dest = self.path(kind, hash);
        let key = (kind, *hash);
        let mut index = self.index();
        if kind == Kind::Cas && index.touch(&key).is_some() {
            // Uploads are checked against their name, so these bytes are
            // right: they replace the stored copy, which a client uploads
            // again only when what it downloaded did not hash to its name
            // (the copy went bad on disk). The rename is atomic.
            return upload
                .persist(&dest)
                .map(|_| ())
                .map_err(|e| CommitError::Io(e.error));
        }
        for r in refs {
            if index.size_of(&(Kind::Cas, r.hash)) != Some(r.size_bytes) {
                return Err(CommitError::Missing(*r));
            }
        }
        for r in refs {
            index.touch(&(Kind::Cas, r.hash));
        }
        if index.remove(&key).is_some() {
            // A replaced action result; the rename below overwrites it,
            // unless this commit fails, when it must not stay unindexed.
            let old = ScopeRemove(Some(dest.clone()));
            let result = self.publish(&mut index, key, &dest, upload, size, refs);
            if result.is_ok() {
                old.keep();
            }
            return result;
        }
        self.publish(&mut index, key, &dest, upload, size, refs)
    }

    fn publish(
        &self,
        index: &mut Index,
        key: Key,
        dest: &Path,
        upload: tempfile::NamedTempFile,
        size: u64,
        refs: &[Digest],
    ) -> Result<(), CommitError> {
        let keep: HashSet<Key> = refs.iter().map(|r| (Kind::Cas, r.hash)).collect();
        let victims = index
            .victims(size, self.max_size, &keep)
            .ok_or(CommitError::TooLarge)?;
        self.evict(index, victims);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(CommitError::Io)?;
        }
        upload.persist(dest).map_err(|e| CommitError::Io(e.error))?;
        index.insert(key, size, refs.iter().map(|r| r.hash).collect());
        Ok(())
    }

    /// Removes entries, action results before blobs.
    fn evict(&self, index: &mut Index, mut victims: Vec<Key>) {
        victims.sort();
        for key in victims {
            let path = self.path(key.0, &key.1);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log(format_args!("cannot evict {}: {e}", path.display())),
            }
            index.remove(&key);
        }
    }

    /// Rebuilds the index from the folder: entries in order of modification
    /// time, then action results checked against the blobs.
    fn rebuild(&self) -> io::Result<OpenReport> {
        let mut found = Vec::new();
        for kind in [Kind::Cas, Kind::Ac] {
            scan(&self.root.join(kind.dir()), kind, &mut found)?;
        }
        found.sort_by_key(|(mtime, key, _)| (*mtime, *key));
        let mut report = OpenReport::default();
        let mut actions = Vec::new();
        {
            let mut index = self.index();
            for (_, key, size) in found {
                index.insert(key, size, Vec::new());
                if key.0 == Kind::Ac {
                    actions.push(key);
                }
            }
        }
        for key in actions {
            let refs = fs::read(self.path(key.0, &key.1))
                .ok()
                .and_then(|bytes| refs::references(&bytes, &self.empty, self).ok());
            let mut index = self.index();
            match refs {
                Some(refs)
                    if refs
                        .iter()
                        .all(|r| index.size_of(&(Kind::Cas, r.hash)) == Some(r.size_bytes)) =>
                {
                    index.set_refs(&key, refs.iter().map(|r| r.hash).collect());
                }
                _ => {
                    report.incomplete += 1;
                    self.evict(&mut index, vec![key]);
                }
            }
        }
        let mut index = self.index();
        if let Some(victims) = index.victims(0, self.max_size, &HashSet::new()) {
            report.evicted = victims.len() as u64;
            self.evict(&mut index, victims);
        }
        report.action_results = index.entries.keys().filter(|k| k.0 == Kind::Ac).count() as u64;
        report.blobs = index.entries.len() as u64 - report.action_results;
        report.bytes = index.total;
        Ok(report)
    }
}

impl Blobs for Storage {
    fn read(&self, blob: &Digest, limit: u64) -> io::Result<Option<Vec<u8>>> {
        if blob.size_bytes > limit {
            return Ok(None);
        }
        let file = match File::open(self.path(Kind::Cas, &blob.hash)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(blob.size_bytes + 1).read_to_end(&mut bytes)?;
        Ok((bytes.len() as u64 == blob.size_bytes).then_some(bytes))
    }
}

/// Removes a file when dropped, unless told to keep it.
struct ScopeRemove(Option<PathBuf>);

impl ScopeRemove {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for ScopeRemove {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Refuses a folder that holds something other than this server's entries
/// for `function`, and marks a new one.
fn check_format(dir: &Path, function: DigestFunction) -> Result<(), OpenError> {
    let marker = dir.join("FORMAT");
    let expected = format!("{FORMAT} {function}");
    match fs::read_to_string(&marker) {
        Ok(found) if found.trim() == expected => Ok(()),
        Ok(found) => match found.trim().strip_prefix(&format!("{FORMAT} ")) {
            Some(other) => Err(OpenError::Usage(format!(
                "{} holds a {other} cache; serve it with --digest-function {other}",
                dir.display()
            ))),
            None => Err(OpenError::Usage(format!(
                "{} is not a cache server folder (its FORMAT says {:?})",
                dir.display(),
                found.trim()
            ))),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let empty = fs::read_dir(dir)
                .map_err(|e| OpenError::Io(format!("cannot list {}: {e}", dir.display())))?
                .next()
                .is_none();
            if !empty {
                return Err(OpenError::Usage(format!(
                    "{} is not empty and not a cache server folder",
                    dir.display()
                )));
            }
            strata_store::write_atomic(dir, &marker, format!("{expected}\n").as_bytes(), 0o644)
                .map_err(|e| OpenError::Io(e.to_string()))
        }
        Err(e) => Err(OpenError::Io(format!(
            "cannot read {}: {e}",
            marker.display()
        ))),
    }
}

/// Entries under `dir` (`xx/<64 hex>` with `xx` its first two digits):
/// modification time, key and size. Anything else is left alone.
fn scan(dir: &Path, kind: Kind, out: &mut Vec<(SystemTime, Key, u64)>) -> io::Result<()> {
    for shard in fs::read_dir(dir)? {
        let shard = shard?;
        let Some(prefix) = shard.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if prefix.len() != 2 || !shard.file_type()?.is_dir() {
            continue;
        }
        for file in fs::read_dir(shard.path())? {
            let file = file?;
            let name = file.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(hash) = parse_hex(name) else {
                continue;
            };
            if !name.starts_with(&prefix) {
                continue;
            }
            let meta = file.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((mtime, (kind, hash), meta.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use prost::Message;
    use strata_store::reapi;

    use super::*;

    const F: DigestFunction = DigestFunction::Sha256;

    fn put(s: &Storage, bytes: &[u8]) -> Result<Digest, CommitError> {
        let d = F.of_bytes(bytes);
        let mut t = s.temp_file().unwrap();
        t.write_all(bytes).unwrap();
        s.commit(Kind::Cas, &d.hash, t, &[])?;
        Ok(d)
    }

    /// An action result whose stdout is `log`, under key `key`.
    fn put_result(s: &Storage, key: u8, log: &Digest) -> Result<(), CommitError> {
        let bytes = reapi::ActionResult {
            stdout_digest: Some(reapi::Digest {
                hash: hex::encode(log.hash),
                size_bytes: log.size_bytes as i64,
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let refs = match refs::references(&bytes, s.empty(), s) {
            Ok(r) => r,
            Err(refs::Refusal::Missing(b)) => return Err(CommitError::Missing(b)),
            Err(e) => panic!("{e:?}"),
        };
        let mut t = s.temp_file().unwrap();
        t.write_all(&bytes).unwrap();
        s.commit(Kind::Ac, &[key; 32], t, &refs)
    }

    fn has(s: &Storage, kind: Kind, hash: &Hash) -> bool {
        s.index().size_of(&(kind, *hash)).is_some() && s.path(kind, hash).is_file()
    }

    #[test]
    fn the_least_recently_used_blob_is_evicted_first() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(d.path(), F, 300).unwrap();
        let a = put(&s, &[b'a'; 100]).unwrap();
        let b = put(&s, &[b'b'; 100]).unwrap();
        let c = put(&s, &[b'c'; 100]).unwrap();
        assert!(s.open_read(Kind::Cas, &a.hash).unwrap().is_some());
        let e = put(&s, &[b'e'; 100]).unwrap();
        assert!(!has(&s, Kind::Cas, &b.hash));
        for x in [a, c, e] {
            assert!(has(&s, Kind::Cas, &x.hash));
        }
        assert_eq!(s.total(), 300);
        assert!(matches!(put(&s, &[b'f'; 301]), Err(CommitError::TooLarge)));
        assert_eq!(s.total(), 300);
    }

    #[test]
    fn an_action_result_goes_with_the_blobs_it_names() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(d.path(), F, 350).unwrap();
        let log = put(&s, &[b'l'; 100]).unwrap();
        let other = put(&s, &[b'o'; 100]).unwrap();
        put_result(&s, 1, &log).unwrap();
        // The entry is used last, yet its blob is the least recently used.
        assert!(s.open_read(Kind::Cas, &other.hash).unwrap().is_some());
        assert!(s.open_read(Kind::Ac, &[1; 32]).unwrap().is_some());
        put(&s, &[b'n'; 150]).unwrap();
        assert!(!has(&s, Kind::Cas, &log.hash));
        assert!(!has(&s, Kind::Ac, &[1; 32]));
        assert!(has(&s, Kind::Cas, &other.hash));
    }

    #[test]
    fn an_action_result_naming_a_missing_blob_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Storage::open(d.path(), F, 1000).unwrap();
        let absent = F.of_bytes(b"absent");
        assert!(matches!(
            put_result(&s, 1, &absent),
            Err(CommitError::Missing(b)) if b == absent
        ));
        assert!(!s.path(Kind::Ac, &[1; 32]).exists());
        // A blob of the right hash but another size is not the one named.
        put(&s, b"absent").unwrap();
        let wrong_size = Digest::new(absent.hash, 7);
        assert!(matches!(
            put_result(&s, 1, &wrong_size),
            Err(CommitError::Missing(_))
        ));
        put_result(&s, 1, &absent).unwrap();
    }

    #[test]
    fn a_reopened_folder_keeps_entries_order_and_drops_incomplete_results() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c);
        {
            let (s, _) = Storage::open(d.path(), F, 1000).unwrap();
            a = put(&s, &[b'a'; 100]).unwrap();
            b = put(&s, &[b'b'; 100]).unwrap();
            c = put(&s, &[b'c'; 100]).unwrap();
            put_result(&s, 1, &c).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(s.open_read(Kind::Cas, &a.hash).unwrap().is_some());
            assert!(Storage::open(d.path(), F, 1000).is_err(), "locked");
        }
        // As if a crash came between removing the blob and its entry.
        fs::remove_file(
            d.path()
                .join("cas")
                .join(&hex::encode(c.hash)[..2])
                .join(hex::encode(c.hash)),
        )
        .unwrap();
        fs::write(d.path().join("tmp/.upload-x"), b"partial").unwrap();
        let (s, found) = Storage::open(d.path(), F, 150).unwrap();
        assert_eq!(found.incomplete, 1);
        assert_eq!(found.evicted, 1);
        assert_eq!(
            (found.blobs, found.action_results, found.bytes),
            (1, 0, 100)
        );
        assert!(has(&s, Kind::Cas, &a.hash), "used last before the restart");
        assert!(!has(&s, Kind::Cas, &b.hash));
        assert!(!has(&s, Kind::Ac, &[1; 32]));
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_folder_of_another_function_or_purpose_is_refused() {
        let d = tempfile::tempdir().unwrap();
        drop(Storage::open(d.path(), F, 10).unwrap());
        assert!(matches!(
            Storage::open(d.path(), DigestFunction::Blake3, 10),
            Err(OpenError::Usage(m)) if m.contains("--digest-function sha256")
        ));
        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("precious"), b"x").unwrap();
        assert!(matches!(
            Storage::open(other.path(), F, 10),
            Err(OpenError::Usage(_))
        ));
        assert!(other.path().join("precious").exists());
    }
}
