//! A persistent cache of file digests keyed by stat data, so a no-op build
//! does not re-read source contents.
//!
//! An entry is trusted only if device, inode, size, mtime and ctime all match
//! and the file's mtime is strictly older than the second the entry was
//! recorded in: a file modified in that same second may have changed again
//! without its mtime moving (the "racy git" problem), so it counts as dirty.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use strata_store::{Digest, write_atomic};

const MAGIC: &[u8; 8] = b"STATC001";
/// Untouched entries kept across builds, beyond those used by this build.
const MAX_ENTRIES: usize = 1_000_000;

pub use strata_exec::source::Stat;

#[derive(Debug)]
struct Entry {
    stat: Stat,
    recorded_s: i64,
    hash: [u8; 32],
    /// Used by this build (kept when the cache is trimmed).
    touched: AtomicBool,
}

/// The stat cache of one workspace and digest function.
pub struct StatCache {
    path: PathBuf,
    tmp: PathBuf,
    /// By path bytes: hashing a `Path` compares it component by component.
    entries: HashMap<OsString, Entry>,
    changed: bool,
}

/// The current second, which entries are recorded in.
pub(crate) fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl StatCache {
    /// Loads the cache at `path`; a missing or unreadable cache is empty.
    pub fn load(path: PathBuf, tmp: PathBuf) -> StatCache {
        let entries = fs::read(&path)
            .ok()
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        StatCache {
            path,
            tmp,
            entries,
            changed: false,
        }
    }

    /// The cached digest of `path`, if the entry still describes the file
    /// (then marked as used by this build).
    pub fn lookup(&self, path: &Path, meta: &Metadata) -> Option<Digest> {
        let e = self.entries.get(path.as_os_str())?;
        if e.stat != Stat::of(meta) || meta.mtime() >= e.recorded_s {
            return None;
        }
        e.touched.store(true, Ordering::Relaxed);
        Some(Digest::new(e.hash, meta.size()))
    }

    /// Records the digest of `path`, which had `stat` when it was read.
    pub fn record(&mut self, path: PathBuf, stat: Stat, digest: Digest) {
        self.entries.insert(
            path.into_os_string(),
            Entry {
                stat,
                recorded_s: now_s(),
                hash: digest.hash,
                touched: AtomicBool::new(true),
            },
        );
        self.changed = true;
    }

    /// Writes the cache back atomically, if anything changed.
    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.changed {
            return Ok(());
        }
        if self.entries.len() > MAX_ENTRIES {
            self.entries
                .retain(|_, e| e.touched.load(Ordering::Relaxed));
        }
        let bytes = encode(&self.entries);
        write_atomic(&self.tmp, &self.path, &bytes, 0o644).map_err(std::io::Error::other)?;
        self.changed = false;
        Ok(())
    }
}

fn encode(entries: &HashMap<OsString, Entry>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + entries.len() * 120);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (path, e) in entries {
        let p = path.as_os_str().as_bytes();
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
        encode_stat(&e.stat, &mut out);
        out.extend_from_slice(&e.recorded_s.to_le_bytes());
        out.extend_from_slice(&e.hash);
    }
    out
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

fn decode(b: &[u8]) -> Option<HashMap<OsString, Entry>> {
    let mut r = Reader::new(b);
    if r.take(8)? != MAGIC {
        return None;
    }
    let n = r.u64()? as usize;
    let mut entries = HashMap::with_capacity(n.min(MAX_ENTRIES));
    for _ in 0..n {
        let len = r.u32()? as usize;
        let path = OsString::from_vec(r.take(len)?.to_vec());
        let stat = decode_stat(&mut r)?;
        let recorded_s = r.u64()? as i64;
        let hash: [u8; 32] = r.take(32)?.try_into().ok()?;
        entries.insert(
            path,
            Entry {
                stat,
                recorded_s,
                hash,
                touched: AtomicBool::new(false),
            },
        );
    }
    Some(entries)
}

/// Reads the little-endian fields of a cache file; `None` past its end.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
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

    #[test]
    fn entries_survive_a_round_trip_and_fresh_files_are_dirty() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a.txt");
        fs::write(&f, "hello").unwrap();
        let meta = fs::metadata(&f).unwrap();
        let digest = strata_store::DigestFunction::Blake3.of_bytes(b"hello");
        let mut c = StatCache::load(d.path().join("cache"), d.path().to_path_buf());
        c.record(f.clone(), Stat::of(&meta), digest);
        // Written within the current second: not trusted yet.
        assert_eq!(c.lookup(&f, &meta), None);
        c.save().unwrap();
        // Pretend it was recorded later than the file's mtime.
        let mut c = StatCache::load(d.path().join("cache"), d.path().to_path_buf());
        c.entries.get_mut(f.as_os_str()).unwrap().recorded_s = meta.mtime() + 5;
        assert_eq!(c.lookup(&f, &meta), Some(digest));
        // A different size (or inode, or time) invalidates it.
        fs::write(&f, "hello!").unwrap();
        assert_eq!(c.lookup(&f, &fs::metadata(&f).unwrap()), None);
    }

    #[test]
    fn garbage_is_an_empty_cache() {
        assert!(decode(b"STATC001\xff\xff\xff\xff\xff\xff\xff\xff").is_none());
        assert!(decode(b"nonsense").is_none());
    }
}
