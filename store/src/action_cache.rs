//! The action cache: action key -> `ActionResult`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::atomic;
use crate::durability::Durability;
use crate::error::{Result, StoreError};
use crate::reapi::ActionResult;
use crate::{Digest, DigestFunction};

/// Entries live at `<root>/<function>/<two hex digits>/<hex>`.
///
/// Guarantees: an entry is published atomically (whole or absent), and
/// only after a `syncfs` that follows the writing of every blob it names and
/// of its own bytes (see `durability`): after a power cut, an entry that
/// survived names blobs that survived whole. Writers
/// racing on one key each publish a whole entry and the last rename wins,
/// which is harmless because an action's result is a pure function of its key.
/// Only successful results are ever written (callers' contract, asserted).
///
/// Uses (cache hits) are not written to the entry: they are kept in memory
/// and written as one log per process ([`UseLog`]), which `gc` folds into
/// the entries' times.
#[derive(Clone, Debug)]
pub struct ActionCache {
    root: PathBuf,
    tmp: PathBuf,
    uses: Arc<UseLog>,
    durability: Arc<Durability>,
    /// Entries staged ([`ActionCache::stage`]) and not yet published: this
    /// process's lookups see them already.
    staged: Arc<Mutex<HashMap<[u8; 32], ActionResult>>>,
}

impl ActionCache {
    pub(crate) fn new(
        root: PathBuf,
        tmp: PathBuf,
        uses_dir: PathBuf,
        function: DigestFunction,
        durability: Arc<Durability>,
    ) -> Self {
        ActionCache {
            root: root.join(function.name()),
            uses: Arc::new(UseLog {
                dir: uses_dir.join(function.name()),
                tmp: tmp.clone(),
                pending: Mutex::default(),
            }),
            tmp,
            durability,
            staged: Arc::default(),
        }
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.path_of(&key.hash)
    }

    /// Entries are named by the key's hash alone (an action's size adds
    /// nothing to its identity).
    pub(crate) fn path_of(&self, hash: &[u8; 32]) -> PathBuf {
        let hex = crate::digest::hex_of(hash);
        let mut path = PathBuf::with_capacity(self.root.as_os_str().len() + hex.len() + 4);
        path.push(&self.root);
        path.push(&hex[..2]);
        path.push(&hex);
        path
    }

    /// The stored result for `key`, if any. An entry that does not decode is
    /// treated as absent (and reported by `verify`), never as an error.
    pub fn get(&self, key: &Digest) -> Result<Option<ActionResult>> {
        if let Some(staged) = self.lock_staged().get(&key.hash) {
            return Ok(Some(staged.clone()));
        }
        let path = self.path(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(prost::Message::decode(bytes.as_slice()).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("cannot read action cache entry", path, e)),
        }
    }

    /// [`ActionCache::get`] with the stat of the entry read (taken on the
    /// open file, so it describes those bytes), for a caller that remembers
    /// the result and later trusts it while [`ActionCache::stat`] is
    /// unchanged. Notes no use.
    pub fn get_with_stat(&self, key: &Digest) -> Result<Option<(ActionResult, fs::Metadata)>> {
        let path = self.path(key);
        let read = fs::File::open(&path).and_then(|mut f| {
            let meta = f.metadata()?;
            let mut bytes = Vec::with_capacity(meta.len().min(1 << 20) as usize);
            io::Read::read_to_end(&mut f, &mut bytes)?;
            Ok((bytes, meta))
        });
        match read {
            Ok((bytes, meta)) => Ok(prost::Message::decode(bytes.as_slice())
                .ok()
                .map(|r| (r, meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("cannot read action cache entry", path, e)),
        }
    }

    /// The stat of the entry for `key` (`NotFound` if there is none). An
    /// entry is only ever replaced whole, by a rename, so an unchanged stat
    /// (inode, size, times) means unchanged bytes.
    pub fn stat(&self, key: &Digest) -> io::Result<fs::Metadata> {
        fs::metadata(self.path(key))
    }

    /// Notes a use of the entry for `key` (see [`ActionCache::get_used`])
    /// that the caller answered without reading it.
    pub fn note_use(&self, key: &Digest) {
        self.uses.note(key.hash, SystemTime::now());
    }

    /// Records a successful result for `key`, durably ordered after what
    /// it names: [`ActionCache::stage`], then [`StagedEntry::publish`].
    pub fn put(&self, key: &Digest, result: &ActionResult) -> Result<()> {
        self.stage(key, result)?.publish()
    }

    /// The first half of [`ActionCache::put`], which does not wait: the
    /// entry's bytes in a temporary file, and the entry visible to this
    /// process's [`ActionCache::get`] until it is published or dropped.
    /// Everything it names must be stored before.
    pub fn stage(&self, key: &Digest, result: &ActionResult) -> Result<StagedEntry> {
        assert_eq!(
            result.exit_code, 0,
            "failed actions never enter the action cache"
        );
        let bytes = prost::Message::encode_to_vec(result);
        let tmp = atomic::write_temporary(&self.tmp, &bytes)?;
        self.lock_staged().insert(key.hash, result.clone());
        Ok(StagedEntry {
            cache: self.clone(),
            key: *key,
            tmp: Some(tmp),
        })
    }

    fn lock_staged(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], ActionResult>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the entry for `key`, if any: for an entry that reaches a blob
    /// the store no longer holds whole, or found not to be the result it
    /// claims, so a later build runs the action again. Atomic (one unlink);
    /// an entry a racing writer publishes afterwards stays.
    pub fn remove(&self, key: &Digest) -> Result<()> {
        self.lock_staged().remove(&key.hash);
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("cannot remove action cache entry", path, e)),
        }
    }

    /// [`ActionCache::get`] for a use of the entry: the entry's last use
    /// is the last use of everything its result references, which `gc`
    /// evicts least recently used first. The use is noted in memory and
    /// written with the others of this process by [`ActionCache::flush_uses`]
    /// (or when the last handle is dropped), one file per build instead of a
    /// time written to each entry hit. Best effort: a build killed before
    /// that only makes its hits look older.
    pub fn get_used(&self, key: &Digest) -> Result<Option<ActionResult>> {
        let Some(result) = self.get(key)? else {
            return Ok(None);
        };
        self.uses.note(key.hash, SystemTime::now());
        Ok(Some(result))
    }

    /// Writes the uses noted since the last flush as one log file.
    pub fn flush_uses(&self) -> Result<()> {
        self.uses.flush()
    }

    /// The last use of each entry the use logs (and this process's unwritten
    /// uses) name, and the log files read.
    pub(crate) fn logged_uses(
        &self,
    ) -> (
        std::collections::HashMap<[u8; 32], SystemTime>,
        Vec<PathBuf>,
    ) {
        self.uses.read_all()
    }

    /// Every entry named like one: its key's hash and its path.
    pub(crate) fn list(&self) -> impl Iterator<Item = ([u8; 32], PathBuf)> + '_ {
        walkdir::WalkDir::new(&self.root)
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let digest = Digest::from_hex(e.file_name().to_str()?, 0)?;
                Some((digest.hash, e.into_path()))
            })
    }

    /// Entries that do not decode as an `ActionResult` or are misnamed.
    pub fn check_entries(&self) -> Vec<(PathBuf, String)> {
        let mut bad = Vec::new();
        for e in walkdir::WalkDir::new(&self.root)
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .filter_map(|e| e.ok())
        {
            let named_ok = e
                .file_name()
                .to_str()
                .is_some_and(|n| Digest::from_hex(n, 0).is_some());
            if !named_ok {
                bad.push((e.into_path(), "not named by a key".into()));
                continue;
            }
            match fs::read(e.path()) {
                Ok(bytes) => {
                    if let Err(err) = <ActionResult as prost::Message>::decode(bytes.as_slice()) {
                        bad.push((e.into_path(), format!("does not decode: {err}")));
                    }
                }
                Err(err) => bad.push((e.into_path(), err.to_string())),
            }
        }
        bad
    }

    /// How many entries there are.
    pub fn count(&self) -> usize {
        walkdir::WalkDir::new(&self.root)
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .filter_map(|e| e.ok())
            .count()
    }
}

/// An action-cache entry written but not yet published; see
/// [`ActionCache::stage`]. Dropped unpublished, it leaves nothing.
#[derive(Debug)]
pub struct StagedEntry {
    cache: ActionCache,
    key: Digest,
    tmp: Option<tempfile::NamedTempFile>,
}

impl StagedEntry {
    /// Publishes the entry: waits for the group commit, so that the blobs
    /// the entry names (whoever wrote them: a blob found present may be
    /// another process's, still unsynced) and the entry's bytes reach the
    /// disk before its name does, then renames it into place. The rename
    /// itself is made durable by the next sync, any process's.
    pub fn publish(mut self) -> Result<()> {
        self.cache.durability.sync()?;
        let tmp = self.tmp.take().expect("published once");
        atomic::publish(tmp, &self.cache.path(&self.key), 0o444)
    }
}

impl Drop for StagedEntry {
    fn drop(&mut self) {
        self.cache.lock_staged().remove(&self.key.hash);
    }
}

/// Uses of action-cache entries not yet folded into the entries' times.
///
/// Each process writes its uses as one file in `dir` (published atomically,
/// so a reader sees a whole log or none), a line `<hex key> <unix ns>` per
/// use. `gc` takes the newest of an entry's time and its logged uses, sets
/// the times of the entries it keeps, then removes the logs it read.
#[derive(Debug)]
pub(crate) struct UseLog {
    dir: PathBuf,
    tmp: PathBuf,
    pending: Mutex<Vec<([u8; 32], SystemTime)>>,
}

fn unix_ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl UseLog {
    fn note(&self, hash: [u8; 32], at: SystemTime) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((hash, at));
    }

    fn flush(&self) -> Result<()> {
        let uses = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if uses.is_empty() {
            return Ok(());
        }
        let mut text = String::with_capacity(uses.len() * 86);
        for (hash, at) in &uses {
            text.push_str(&hex::encode(hash));
            text.push(' ');
            text.push_str(&unix_ns(*at).to_string());
            text.push('\n');
        }
        fs::create_dir_all(&self.dir)
            .map_err(|e| StoreError::io("cannot create folder", &self.dir, e))?;
        // Unique per process and flush: several builds may share the store.
        let name = format!("{}-{}", std::process::id(), unix_ns(SystemTime::now()));
        atomic::write_atomic(&self.tmp, &self.dir.join(name), text.as_bytes(), 0o644)
    }

    fn read_all(
        &self,
    ) -> (
        std::collections::HashMap<[u8; 32], SystemTime>,
        Vec<PathBuf>,
    ) {
        let mut last = std::collections::HashMap::new();
        let mut note = |hash: [u8; 32], at: SystemTime| {
            let t = last.entry(hash).or_insert(at);
            *t = (*t).max(at);
        };
        for (hash, at) in self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            note(*hash, *at);
        }
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            for (hash, at) in text.lines().filter_map(parse_use) {
                note(hash, at);
            }
            files.push(path);
        }
        (last, files)
    }
}

/// One line of a use log; a malformed line is skipped.
fn parse_use(line: &str) -> Option<([u8; 32], SystemTime)> {
    let (hex, ns) = line.split_once(' ')?;
    let hash = Digest::from_hex(hex, 0)?.hash;
    let ns: u64 = ns.parse().ok()?;
    Some((hash, UNIX_EPOCH + std::time::Duration::from_nanos(ns)))
}

impl Drop for UseLog {
    /// The last handle of a store writes what the process did not flush.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Removes use logs `gc` has folded into the entries' times.
pub(crate) fn remove_logs(files: &[PathBuf]) {
    for f in files {
        let _ = fs::remove_file(Path::new(f));
    }
}

#[cfg(test)]
mod tests {
    use crate::reapi::ActionResult;
    use crate::{DigestFunction, Store};

    fn result_for(s: &Store, output: &[u8]) -> ActionResult {
        let blob = s.cas().put_bytes(output).unwrap();
        ActionResult {
            stdout_digest: Some(blob.to_proto()),
            ..Default::default()
        }
    }

    #[test]
    fn a_staged_entry_is_seen_by_this_process_before_it_is_published() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), DigestFunction::Blake3).unwrap();
        let key = s.function().of_bytes(b"an action");
        let result = result_for(&s, b"its output");
        let staged = s.action_cache().stage(&key, &result).unwrap();
        assert_eq!(s.action_cache().get(&key).unwrap(), Some(result.clone()));
        // Another process (another handle on the folder) sees nothing yet.
        let other = Store::open(d.path(), DigestFunction::Blake3).unwrap();
        assert_eq!(other.action_cache().get(&key).unwrap(), None);
        staged.publish().unwrap();
        assert_eq!(other.action_cache().get(&key).unwrap(), Some(result));
    }

    #[test]
    fn a_staged_entry_dropped_unpublished_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), DigestFunction::Blake3).unwrap();
        let key = s.function().of_bytes(b"an action");
        let result = result_for(&s, b"its output");
        drop(s.action_cache().stage(&key, &result).unwrap());
        assert_eq!(s.action_cache().get(&key).unwrap(), None);
        assert_eq!(s.action_cache().count(), 0);
        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }
}
