//! What a workspace's last builds found in the action cache, kept so a
//! cache hit costs a stat of its entry and of each blob its output reaches
//! instead of reading the entry and the output's folder records.
//!
//! The action cache stays the truth: a remembered hit is used only while
//! its entry's stat (device, inode, size, mtime, ctime) is the one it had
//! when read, and older than the second it was read in (the stat cache's
//! racy-git rule), for a lookup declaring the same outputs it was checked
//! against, and only if every blob it reaches is still stored whole.
//! Anything else goes the long way, which reads the entry and removes it if
//! it reaches a missing blob. A missing, unreadable or damaged file is an
//! empty cache. Written atomically, once per build, only if it changed.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use foldhash::{HashMap, HashMapExt};
use strata_store::{Digest, Store, write_atomic};

use crate::statcache::{Reader, Stat, decode_stat, encode_stat, now_s};

const MAGIC: &[u8; 8] = b"HITS0001";
/// Remembered hits kept across builds, beyond those of this build.
const MAX_HITS: usize = 1_000_000;

/// An action-cache entry as a lookup found it.
#[derive(Clone, Debug)]
pub struct Found {
    /// The output tree the entry names.
    pub output: Digest,
    /// Every blob the output reaches: its folder records and files, each once.
    pub blobs: Vec<Digest>,
    /// The stat of the entry file read; none for an entry this process
    /// staged and has not published yet (stat'ed when the cache is saved).
    pub entry: Option<fs::Metadata>,
}

struct Hit {
    /// The entry's stat when read; none for one this build staged and had
    /// not published yet when it learned the hit (stat'ed when saved).
    entry: Option<Stat>,
    recorded_s: i64,
    /// [`crate::declared::DeclaredOutputs::fingerprint`] of what it was
    /// checked against.
    declared: [u8; 32],
    output: Digest,
    blobs: Box<[Digest]>,
    /// Used by this build (kept when the file is trimmed).
    used: AtomicBool,
}

/// The remembered hits of one workspace and digest function. Shared by the
/// lookup tasks: what they learn is kept aside and merged when saved.
pub struct HitCache {
    path: PathBuf,
    tmp: PathBuf,
    kept: HashMap<[u8; 32], Hit>,
    /// Learned this build, by key hash: a hit to remember, or `None` for
    /// one to forget.
    learned: Mutex<HashMap<[u8; 32], Option<Hit>>>,
}

impl HitCache {
    /// Loads the cache at `path`; a missing or unreadable one is empty.
    pub fn load(path: PathBuf, tmp: PathBuf) -> HitCache {
        let kept = fs::read(&path)
            .ok()
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        HitCache {
            path,
            tmp,
            kept,
            learned: Mutex::default(),
        }
    }

    /// The output of `key` if its remembered hit still holds: the entry is
    /// the file read then, `declared` what it was checked against, and the
    /// store holds every blob it reaches. One stat for the entry and one
    /// per blob; `None` sends the caller to the action cache itself.
    pub fn output(&self, store: &Store, key: &Digest, declared: &[u8; 32]) -> Option<Digest> {
        let hit = self.kept.get(&key.hash)?;
        if hit.declared != *declared {
            return None;
        }
        let entry = store.action_cache().stat(key).ok()?;
        if Some(Stat::of(&entry)) != hit.entry || entry.mtime() >= hit.recorded_s {
            return None;
        }
        if !hit.blobs.iter().all(|b| store.cas().contains(b)) {
            return None;
        }
        hit.used.store(true, Ordering::Relaxed);
        Some(hit.output)
    }

    /// Remembers `found`, the checked entry of `key`, for later builds. An
    /// entry not published yet is stat'ed when the cache is saved.
    pub fn remember(&self, key: &Digest, declared: &[u8; 32], found: &Found) {
        let hit = Hit {
            entry: found.entry.as_ref().map(Stat::of),
            // Taken after the entry was read and its blobs found.
            recorded_s: now_s(),
            declared: *declared,
            output: found.output,
            blobs: found.blobs.clone().into(),
            used: AtomicBool::new(true),
        };
        self.learned().insert(key.hash, Some(hit));
    }

    /// Forgets the hit of `key`: its entry is gone or not to be used.
    pub fn forget(&self, key: &Digest) {
        if self.kept.contains_key(&key.hash) {
            self.learned().insert(key.hash, None);
        }
    }

    fn learned(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Option<Hit>>> {
        self.learned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the cache back atomically, if this build learned anything
    /// (what it learns afterwards is kept for the next save).
    ///
    /// A hit learned before its entry was published, or in its entry's own
    /// second (every step this build ran), would not be trusted by the next
    /// build: its entry is read here, in a later second, and if it names
    /// the same output the hit is remembered as of now (else forgotten).
    /// So the no-op after a build that ran everything is answered from
    /// this cache too.
    pub fn save(&self, store: &Store) -> io::Result<()> {
        self.save_as_of(store, now_s())
    }

    /// [`HitCache::save`] in the second `now`.
    fn save_as_of(&self, store: &Store, now: i64) -> io::Result<()> {
        let mut learned = std::mem::take(&mut *self.learned());
        if learned.is_empty() {
            return Ok(());
        }
        for (key, hit) in learned.iter_mut() {
            let Some(hit) = hit else { continue };
            if hit.entry.is_some_and(|e| e.mtime_s < hit.recorded_s) {
                continue;
            }
            let key = Digest::new(*key, 0);
            if let Ok(Some((result, entry))) = store.action_cache().get_with_stat(&key)
                && hit.entry.is_none_or(|e| e == Stat::of(&entry))
                && entry.mtime() < now
                && result
                    .output_directories
                    .first()
                    .and_then(|d| Digest::from_proto(d.root_directory_digest.as_ref()?))
                    == Some(hit.output)
            {
                hit.entry = Some(Stat::of(&entry));
                hit.recorded_s = now;
            }
        }
        let unchanged = self.kept.iter().filter(|(k, _)| !learned.contains_key(*k));
        let mut hits: Vec<(&[u8; 32], &Hit)> = learned
            .iter()
            .filter_map(|(k, h)| Some((k, h.as_ref().filter(|h| h.entry.is_some())?)))
            .chain(unchanged)
            .collect();
        if hits.len() > MAX_HITS {
            hits.retain(|(_, h)| h.used.load(Ordering::Relaxed));
        }
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent)?;
        }
        write_atomic(&self.tmp, &self.path, &encode(&hits), 0o644).map_err(io::Error::other)
    }
}

fn encode_digest(d: &Digest, out: &mut Vec<u8>) {
    out.extend_from_slice(&d.hash);
    out.extend_from_slice(&d.size_bytes.to_le_bytes());
}

fn decode_digest(r: &mut Reader) -> Option<Digest> {
    let hash: [u8; 32] = r.take(32)?.try_into().ok()?;
    Some(Digest::new(hash, r.u64()?))
}

fn encode(hits: &[(&[u8; 32], &Hit)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + hits.len() * 200);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(hits.len() as u64).to_le_bytes());
    for (key, h) in hits {
        out.extend_from_slice(*key);
        encode_stat(&h.entry.expect("only stat'ed hits are written"), &mut out);
        out.extend_from_slice(&h.recorded_s.to_le_bytes());
        out.extend_from_slice(&h.declared);
        encode_digest(&h.output, &mut out);
        out.extend_from_slice(&(h.blobs.len() as u64).to_le_bytes());
        for b in h.blobs.iter() {
            encode_digest(b, &mut out);
        }
    }
    out
}

fn decode(b: &[u8]) -> Option<HashMap<[u8; 32], Hit>> {
    let mut r = Reader::new(b);
    if r.take(8)? != MAGIC {
        return None;
    }
    let n = r.u64()? as usize;
    let mut kept = HashMap::with_capacity(n.min(MAX_HITS));
    for _ in 0..n {
        let key: [u8; 32] = r.take(32)?.try_into().ok()?;
        let entry = decode_stat(&mut r)?;
        let recorded_s = r.u64()? as i64;
        let declared: [u8; 32] = r.take(32)?.try_into().ok()?;
        let output = decode_digest(&mut r)?;
        let count = r.u64()? as usize;
        // A digest takes 40 bytes: a count beyond what is left is garbage.
        let mut blobs = Vec::with_capacity(count.min(b.len() / 40));
        for _ in 0..count {
            blobs.push(decode_digest(&mut r)?);
        }
        kept.insert(
            key,
            Hit {
                entry: Some(entry),
                recorded_s,
                declared,
                output,
                blobs: blobs.into(),
                used: AtomicBool::new(false),
            },
        );
    }
    Some(kept)
}

#[cfg(test)]
mod tests {
    use strata_store::reapi::{ActionResult, OutputDirectory};
    use strata_store::{DigestFunction, Store};

    use super::*;

    /// A store holding one entry whose output is one blob.
    fn stored(dir: &std::path::Path) -> (Store, Digest, Digest) {
        let store = Store::open(&dir.join("store"), DigestFunction::Blake3).unwrap();
        let blob = store.cas().put_bytes(b"output").unwrap();
        let key = DigestFunction::Blake3.of_bytes(b"action");
        let result = ActionResult {
            output_directories: vec![OutputDirectory {
                path: String::new(),
                root_directory_digest: Some(blob.to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        store.action_cache().put(&key, &result).unwrap();
        (store, key, blob)
    }

    fn found(store: &Store, key: &Digest, blob: Digest) -> Found {
        let (_, entry) = store.action_cache().get_with_stat(key).unwrap().unwrap();
        Found {
            output: blob,
            blobs: vec![blob],
            entry: Some(entry),
        }
    }

    /// Pretends every hit was remembered long after its entry was written.
    fn age(c: &mut HitCache) {
        for h in c.kept.values_mut() {
            h.recorded_s = i64::MAX;
        }
    }

    #[test]
    fn a_remembered_hit_holds_only_while_its_entry_and_blobs_are_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let (store, key, blob) = stored(d.path());
        let path = d.path().join("hits");
        let declared = [7; 32];
        let c = HitCache::load(path.clone(), store.tmp_dir());
        c.remember(&key, &declared, &found(&store, &key, blob));
        c.save(&store).unwrap();

        // Remembered in the entry's own second: not trusted yet.
        let c = HitCache::load(path.clone(), store.tmp_dir());
        assert_eq!(c.output(&store, &key, &declared), None);

        let mut c = HitCache::load(path.clone(), store.tmp_dir());
        age(&mut c);
        assert_eq!(c.output(&store, &key, &declared), Some(blob));
        // Checked against other declared outputs: the long way.
        assert_eq!(c.output(&store, &key, &[8; 32]), None);
        // Another key: never remembered.
        let other = DigestFunction::Blake3.of_bytes(b"other");
        assert_eq!(c.output(&store, &other, &declared), None);

        // A blob gone from the store.
        let blob_path = store.cas().path(&blob);
        fs::rename(&blob_path, d.path().join("aside")).unwrap();
        assert_eq!(c.output(&store, &key, &declared), None);
        fs::rename(d.path().join("aside"), &blob_path).unwrap();
        assert_eq!(c.output(&store, &key, &declared), Some(blob));

        // The entry replaced (another inode, even with the same bytes), or removed.
        let (result, _) = store.action_cache().get_with_stat(&key).unwrap().unwrap();
        store.action_cache().remove(&key).unwrap();
        assert_eq!(c.output(&store, &key, &declared), None);
        store.action_cache().put(&key, &result).unwrap();
        assert_eq!(c.output(&store, &key, &declared), None);
    }

    #[test]
    fn a_hit_learned_in_its_entrys_second_is_checked_again_when_saved_later() {
        let d = tempfile::tempdir().unwrap();
        let (store, key, blob) = stored(d.path());
        let path = d.path().join("hits");
        let declared = [7; 32];
        let c = HitCache::load(path.clone(), store.tmp_dir());
        c.remember(&key, &declared, &found(&store, &key, blob));
        c.save_as_of(&store, now_s() + 2).unwrap();
        let c = HitCache::load(path.clone(), store.tmp_dir());
        assert_eq!(c.output(&store, &key, &declared), Some(blob));

        // An entry that no longer names the output it was remembered with
        // stays untrusted.
        let c = HitCache::load(path.clone(), store.tmp_dir());
        let mut other = found(&store, &key, blob);
        other.output = store.cas().put_bytes(b"another output").unwrap();
        c.remember(&key, &declared, &other);
        c.save_as_of(&store, now_s() + 2).unwrap();
        let c = HitCache::load(path, store.tmp_dir());
        assert_eq!(c.output(&store, &key, &declared), None);
    }

    #[test]
    fn a_hit_learned_before_its_entry_was_published_is_stated_when_saved() {
        let d = tempfile::tempdir().unwrap();
        let (store, key, blob) = stored(d.path());
        let path = d.path().join("hits");
        let declared = [7; 32];
        let unpublished = Found {
            entry: None,
            ..found(&store, &key, blob)
        };
        let c = HitCache::load(path.clone(), store.tmp_dir());
        c.remember(&key, &declared, &unpublished);
        c.save_as_of(&store, now_s() + 2).unwrap();
        let c = HitCache::load(path.clone(), store.tmp_dir());
        assert_eq!(c.output(&store, &key, &declared), Some(blob));

        // Never published: not remembered at all.
        let other = DigestFunction::Blake3.of_bytes(b"never published");
        let c = HitCache::load(path.clone(), store.tmp_dir());
        c.remember(&other, &declared, &unpublished);
        c.save_as_of(&store, now_s() + 2).unwrap();
        let c = HitCache::load(path, store.tmp_dir());
        assert!(!c.kept.contains_key(&other.hash));
        assert!(c.kept.contains_key(&key.hash));
    }

    #[test]
    fn forgotten_hits_are_dropped_and_garbage_is_an_empty_cache() {
        let d = tempfile::tempdir().unwrap();
        let (store, key, blob) = stored(d.path());
        let path = d.path().join("hits");
        let c = HitCache::load(path.clone(), store.tmp_dir());
        c.remember(&key, &[1; 32], &found(&store, &key, blob));
        c.save(&store).unwrap();
        let c = HitCache::load(path.clone(), store.tmp_dir());
        assert_eq!(c.kept[&key.hash].output, blob);
        assert_eq!(&*c.kept[&key.hash].blobs, [blob]);
        c.forget(&key);
        c.save(&store).unwrap();
        assert!(
            HitCache::load(path.clone(), store.tmp_dir())
                .kept
                .is_empty()
        );
        assert!(decode(b"HITS0001\xff\xff\xff\xff\xff\xff\xff\xff").is_none());
        assert!(decode(b"nonsense").is_none());
    }
}
