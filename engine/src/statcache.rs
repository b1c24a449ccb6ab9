//! A persistent cache of file digests keyed by stat data, so a no-op build
//! does not re-read source contents.
//!
//! An entry is trusted only if device, inode, size, mtime and ctime all match
//! and the file's mtime is strictly older than the second the entry was
//! recorded in: a file modified in that same second may have changed again
//! without its mtime moving (the "racy git" problem), so it counts as dirty.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use foldhash::{HashMap, HashMapExt};
use strata_store::{Digest, write_atomic};

const MAGIC: &[u8; 8] = b"STATC001";
/// Untouched entries kept across builds, beyond those used by this build.
const MAX_ENTRIES: usize = 1_000_000;
/// An entry after its path: stat (7 words), recorded second, digest hash.
const AFTER_PATH: usize = 7 * 8 + 8 + 32;

pub use strata_exec::source::Stat;

/// An entry recorded by this build.
#[derive(Debug)]
struct Entry {
    stat: Stat,
    recorded_s: i64,
    hash: [u8; 32],
}

/// The stat cache of one workspace and digest function.
///
/// The file's entries are looked up where they lie in its bytes, through
/// an index by path hash built in one pass: loading the cache of 100,000
/// sources allocates nothing per entry, and saving copies the entries it
/// keeps as they are.
pub struct StatCache {
    path: PathBuf,
    tmp: PathBuf,
    /// The file as read (empty if missing or damaged).
    bytes: Vec<u8>,
    /// Where each kept entry starts in `bytes`.
    offsets: Vec<u32>,
    /// Kept entry by its path's hash; `None` for a hash two paths share
    /// (both are then misses and hashed again: correct, and unheard of).
    index: HashMap<u64, Option<u32>>,
    /// Kept entries this build found current (kept when the cache is trimmed).
    touched: Vec<AtomicBool>,
    /// Kept entries this build recorded again.
    replaced: Vec<bool>,
    /// Entries this build recorded.
    recorded: HashMap<OsString, Entry>,
}

/// The current second, which entries are recorded in.
pub(crate) fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn path_hash(path: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x5354_4154_4331).hash_one(path)
}

impl StatCache {
    /// Loads the cache at `path`; a missing or unreadable cache is empty.
    pub fn load(path: PathBuf, tmp: PathBuf) -> StatCache {
        let bytes = fs::read(&path).unwrap_or_default();
        let offsets = entry_offsets(&bytes).unwrap_or_default();
        let mut index: HashMap<u64, Option<u32>> = HashMap::with_capacity(offsets.len());
        for (n, &at) in offsets.iter().enumerate() {
            index
                .entry(path_hash(path_at(&bytes, at)))
                .and_modify(|e| *e = None)
                .or_insert(Some(n as u32));
        }
        StatCache {
            path,
            tmp,
            touched: (0..offsets.len()).map(|_| AtomicBool::new(false)).collect(),
            replaced: vec![false; offsets.len()],
            bytes,
            offsets,
            index,
            recorded: HashMap::new(),
        }
    }

    /// The number of the kept entry of `path`.
    fn kept(&self, path: &[u8]) -> Option<usize> {
        let n = (*self.index.get(&path_hash(path))?)? as usize;
        (path_at(&self.bytes, self.offsets[n]) == path).then_some(n)
    }

    /// The cached digest of `path`, if the entry still describes the file
    /// (then marked as used by this build). `hint` is where the entry is
    /// likely to be: entries are saved in path order, so the n-th of a
    /// build's sources in path order is the n-th entry when the set of
    /// sources has not changed, found without hashing and in memory order.
    pub fn lookup(&self, path: &Path, meta: &Metadata, hint: usize) -> Option<Digest> {
        let current =
            |stat: Stat, recorded_s: i64| stat == Stat::of(meta) && meta.mtime() < recorded_s;
        if let Some(e) = self.recorded.get(path.as_os_str()) {
            return current(e.stat, e.recorded_s).then(|| Digest::new(e.hash, meta.size()));
        }
        let bytes = path.as_os_str().as_bytes();
        let n = match self.offsets.get(hint) {
            Some(&at) if path_at(&self.bytes, at) == bytes => hint,
            _ => self.kept(bytes)?,
        };
        let at = self.offsets[n] as usize + 4 + bytes.len();
        let (stat, recorded_s, hash) = fields_at(&self.bytes[at..at + AFTER_PATH]);
        if !current(stat, recorded_s) {
            return None;
        }
        self.touched[n].store(true, Ordering::Relaxed);
        Some(Digest::new(hash, meta.size()))
    }

    /// Records the digest of `path`, which had `stat` when it was read.
    pub fn record(&mut self, path: PathBuf, stat: Stat, digest: Digest) {
        if let Some(n) = self.kept(path.as_os_str().as_bytes()) {
            self.replaced[n] = true;
        }
        self.recorded.insert(
            path.into_os_string(),
            Entry {
                stat,
                recorded_s: now_s(),
                hash: digest.hash,
            },
        );
    }

    /// Writes the cache back atomically, if this build recorded anything.
    pub fn save(&mut self) -> std::io::Result<()> {
        if self.recorded.is_empty() {
            return Ok(());
        }
        let still_kept = self.replaced.iter().filter(|r| !**r).count();
        let trim = still_kept + self.recorded.len() > MAX_ENTRIES;
        let keep =
            |n: usize| !self.replaced[n] && (!trim || self.touched[n].load(Ordering::Relaxed));
        // Every entry as its path and its bytes, in path order (the kept
        // ones already are, but for a file an older version wrote).
        let mut kept: Vec<(&[u8], &[u8])> = (0..self.offsets.len())
            .filter(|&n| keep(n))
            .map(|n| {
                let at = self.offsets[n];
                let path = path_at(&self.bytes, at);
                let at = at as usize;
                (path, &self.bytes[at..at + 4 + path.len() + AFTER_PATH])
            })
            .collect();
        if !kept.is_sorted_by(|a, b| a.0 <= b.0) {
            kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        let mut recorded: Vec<(&[u8], Vec<u8>)> = self
            .recorded
            .iter()
            .map(|(path, e)| {
                let p = path.as_bytes();
                let mut bytes = Vec::with_capacity(4 + p.len() + AFTER_PATH);
                bytes.extend_from_slice(&(p.len() as u32).to_le_bytes());
                bytes.extend_from_slice(p);
                encode_stat(&e.stat, &mut bytes);
                bytes.extend_from_slice(&e.recorded_s.to_le_bytes());
                bytes.extend_from_slice(&e.hash);
                (p, bytes)
            })
            .collect();
        recorded.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(self.bytes.len() + recorded.len() * 150);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&((kept.len() + recorded.len()) as u64).to_le_bytes());
        let (mut k, mut r) = (kept.into_iter().peekable(), recorded.into_iter().peekable());
        loop {
            let kept_first = match (k.peek(), r.peek()) {
                (Some(a), Some(b)) => a.0 <= b.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            match kept_first {
                true => out.extend_from_slice(k.next().expect("peeked").1),
                false => out.extend_from_slice(&r.next().expect("peeked").1),
            }
        }
        write_atomic(&self.tmp, &self.path, &out, 0o644).map_err(std::io::Error::other)
    }
}

/// Where each entry of a cache file starts; `None` if the bytes are not a
/// cache file (or one cut short).
fn entry_offsets(b: &[u8]) -> Option<Vec<u32>> {
    let mut r = Reader::new(b);
    if r.take(8)? != MAGIC {
        return None;
    }
    let n = r.u64()? as usize;
    // Offsets are 32-bit: a larger file is not one this version wrote.
    u32::try_from(b.len()).ok()?;
    let mut offsets = Vec::with_capacity(n.min(b.len() / (4 + AFTER_PATH)));
    for _ in 0..n {
        offsets.push(r.pos as u32);
        let len = r.u32()? as usize;
        r.take(len)?;
        r.take(AFTER_PATH)?;
    }
    Some(offsets)
}

/// The path of the entry at `at` (an offset [`entry_offsets`] checked).
fn path_at(b: &[u8], at: u32) -> &[u8] {
    let at = at as usize;
    let len = u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize;
    &b[at + 4..at + 4 + len]
}

/// The stat, recorded second and digest hash of an entry, after its path.
fn fields_at(b: &[u8]) -> (Stat, i64, [u8; 32]) {
    let mut r = Reader::new(b);
    let stat = decode_stat(&mut r).expect("checked length");
    let recorded_s = r.u64().expect("checked length") as i64;
    let hash = r
        .take(32)
        .expect("checked length")
        .try_into()
        .expect("32 bytes");
    (stat, recorded_s, hash)
}

/// Appends `stat` as seven little-endian words.
pub(crate) fn encode_stat(stat: &Stat, out: &mut Vec<u8>) {
    for v in [stat.dev, stat.ino, stat.size] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [stat.mtime_s, stat.mtime_ns, stat.ctime_s, stat.ctime_ns] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn decode_stat(r: &mut Reader) -> Option<Stat> {
    Some(Stat {
        dev: r.u64()?,
        ino: r.u64()?,
        size: r.u64()?,
        mtime_s: r.u64()? as i64,
        mtime_ns: r.u64()? as i64,
        ctime_s: r.u64()? as i64,
        ctime_ns: r.u64()? as i64,
    })
}

/// Reads the little-endian fields of a cache file; `None` past its end.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(d: &Path) -> StatCache {
        StatCache::load(d.join("cache"), d.to_path_buf())
    }

    /// Rewrites the recorded second of every entry of the cache file in
    /// `d`, as if the entries had been recorded then.
    fn set_recorded(d: &Path, recorded_s: i64) {
        let mut b = fs::read(d.join("cache")).unwrap();
        for at in entry_offsets(&b).unwrap() {
            let at = at as usize + 4 + path_at(&b, at).len() + 7 * 8;
            b[at..at + 8].copy_from_slice(&recorded_s.to_le_bytes());
        }
        fs::write(d.join("cache"), b).unwrap();
    }

    #[test]
    fn entries_survive_a_round_trip_and_fresh_files_are_dirty() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.txt");
        fs::write(&f, "hello").unwrap();
        let meta = fs::metadata(&f).unwrap();
        let digest = strata_store::DigestFunction::Blake3.of_bytes(b"hello");
        let mut c = load(d.path());
        c.record(f.clone(), Stat::of(&meta), digest);
        // Written within the current second: not trusted yet.
        assert_eq!(c.lookup(&f, &meta, 0), None);
        c.save().unwrap();
        assert_eq!(load(d.path()).lookup(&f, &meta, 0), None);
        // Pretend it was recorded later than the file's mtime.
        set_recorded(d.path(), meta.mtime() + 5);
        let c = load(d.path());
        assert_eq!(c.lookup(&f, &meta, 0), Some(digest));
        assert!(c.touched[0].load(Ordering::Relaxed));
        // Another path, or a different size (or inode, or time): a miss.
        assert_eq!(c.lookup(&d.path().join("b.txt"), &meta, 0), None);
        fs::write(&f, "hello!").unwrap();
        assert_eq!(c.lookup(&f, &fs::metadata(&f).unwrap(), 0), None);
    }

    #[test]
    fn a_save_keeps_the_other_entries_and_replaces_those_recorded_again() {
        let d = tempfile::tempdir().unwrap();
        let function = strata_store::DigestFunction::Blake3;
        let files: Vec<PathBuf> = (0..50).map(|i| d.path().join(format!("f{i}"))).collect();
        let mut c = load(d.path());
        for (i, f) in files.iter().enumerate() {
            fs::write(f, format!("{i}")).unwrap();
            let meta = fs::metadata(f).unwrap();
            c.record(
                f.clone(),
                Stat::of(&meta),
                function.of_bytes(format!("{i}").as_bytes()),
            );
        }
        c.save().unwrap();
        set_recorded(d.path(), i64::MAX);
        // One file changes: recorded again, the others kept as they were.
        fs::write(&files[7], "seven").unwrap();
        let mut c = load(d.path());
        let meta = fs::metadata(&files[7]).unwrap();
        assert_eq!(c.lookup(&files[7], &meta, 7), None);
        c.record(
            files[7].clone(),
            Stat::of(&meta),
            function.of_bytes(b"seven"),
        );
        c.save().unwrap();
        let c = load(d.path());
        assert_eq!(c.offsets.len(), 50);
        // Saved in path order, which the hints of a build's lookups follow.
        let paths: Vec<&[u8]> = c.offsets.iter().map(|&at| path_at(&c.bytes, at)).collect();
        assert!(paths.is_sorted());
        for (i, f) in files.iter().enumerate() {
            let found = c.lookup(f, &fs::metadata(f).unwrap(), i);
            match i {
                // Dirty while recorded in the file's own second.
                7 => assert!(found.is_none() || found == Some(function.of_bytes(b"seven"))),
                _ => assert_eq!(found, Some(function.of_bytes(format!("{i}").as_bytes()))),
            }
        }
    }

    #[test]
    fn garbage_is_an_empty_cache() {
        assert!(entry_offsets(b"STATC001\xff\xff\xff\xff\xff\xff\xff\xff").is_none());
        assert!(entry_offsets(b"STATC001\x01\0\0\0\0\0\0\0\xff\xff\xff\xff").is_none());
        assert!(entry_offsets(b"nonsense").is_none());
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("cache"), b"STATC001\x05\0\0\0\0\0\0\0").unwrap();
        assert!(load(d.path()).offsets.is_empty());
    }
}
