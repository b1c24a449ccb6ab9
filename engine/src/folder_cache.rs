//! A persistent cache of folder listings keyed by the folder's stat, so a
//! no-op build stats each folder its `srcs` patterns walk instead of
//! listing it.
//!
//! Creating, removing or renaming an entry changes its folder's
//! modification and change times, so a folder whose device, inode, size,
//! mtime and ctime all match the recorded ones holds the entries it held.
//! As in the stat cache, a listing is trusted only if the folder's mtime is
//! strictly older than the second it was recorded in: an entry added in
//! that same second may not have moved the mtime (the "racy git" problem).

use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use foldhash::{HashMap, HashMapExt};
use strata_load::globs::{EntryKind, FolderEntry, Folders, read_folder};
use strata_store::write_atomic;

use crate::statcache::{Reader, Stat, decode_stat, encode_stat, now_s};

const MAGIC: &[u8; 8] = b"FOLDC001";
/// Folders kept across builds, beyond those listed by this build.
const MAX_FOLDERS: usize = 1_000_000;

struct Listing {
    stat: Stat,
    recorded_s: i64,
    entries: Arc<[FolderEntry]>,
    /// Listed by this build (kept when the cache is trimmed).
    used: AtomicBool,
}

/// The folder listings of one workspace. Shared by the threads expanding
/// patterns: listings read from disk during a build are kept aside and
/// merged when it is saved.
pub struct FolderCache {
    path: PathBuf,
    tmp: PathBuf,
    kept: HashMap<OsString, Listing>,
    read: Mutex<Vec<(OsString, Listing)>>,
    /// Plain folders (no symlinks) met on the way to patterns' folders in
    /// this run, with their stat.
    on_the_way: RwLock<HashMap<OsString, Metadata>>,
}

impl FolderCache {
    /// Loads the cache at `path`; a missing or unreadable cache is empty.
    pub fn load(path: PathBuf, tmp: PathBuf) -> FolderCache {
        let kept = fs::read(&path)
            .ok()
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        FolderCache {
            path,
            tmp,
            kept,
            read: Mutex::default(),
            on_the_way: RwLock::default(),
        }
    }

    /// Writes the cache back atomically, if this build listed a folder.
    ///
    /// A folder listed in the second it last changed (an output folder just
    /// placed) would not be trusted by the next build: it is stat'ed and
    /// listed again here if a later second has begun, so the next no-op
    /// answers it from this cache.
    pub fn save(&mut self) -> io::Result<()> {
        self.save_as_of(now_s())
    }

    /// [`FolderCache::save`] in the second `now`.
    fn save_as_of(&mut self, now: i64) -> io::Result<()> {
        let read = std::mem::take(self.read.get_mut().expect("not poisoned"));
        if read.is_empty() {
            return Ok(());
        }
        for (path, mut listing) in read {
            if listing.stat.mtime_s >= listing.recorded_s
                && listing.stat.mtime_s < now
                && let Ok(meta) = fs::symlink_metadata(&path)
                && meta.is_dir()
                && meta.mtime() < now
                && let Ok(entries) = read_folder(Path::new(&path))
            {
                listing.stat = Stat::of(&meta);
                listing.recorded_s = now;
                listing.entries = entries.into();
            }
            self.kept.insert(path, listing);
        }
        if self.kept.len() > MAX_FOLDERS {
            self.kept.retain(|_, l| l.used.load(Ordering::Relaxed));
        }
        write_atomic(&self.tmp, &self.path, &encode(&self.kept), 0o644).map_err(io::Error::other)
    }
}

#[cfg(test)]
impl FolderCache {
    /// Keeps what this cache listed as if recorded long after each folder
    /// last changed, so it answers from those listings while the folders'
    /// stats are unchanged.
    pub(crate) fn trust_all(&mut self) {
        let read = std::mem::take(self.read.get_mut().expect("not poisoned"));
        self.kept.extend(read);
        for l in self.kept.values_mut() {
            l.recorded_s = i64::MAX;
        }
    }
}

impl Folders for FolderCache {
    fn list(&self, dir: &Path, meta: &Metadata) -> io::Result<Arc<[FolderEntry]>> {
        let stat = Stat::of(meta);
        if let Some(l) = self.kept.get(dir.as_os_str())
            && l.stat == stat
            && meta.mtime() < l.recorded_s
        {
            l.used.store(true, Ordering::Relaxed);
            return Ok(l.entries.clone());
        }
        let entries: Arc<[FolderEntry]> = read_folder(dir)?.into();
        let listing = Listing {
            stat,
            // Taken after the listing: an entry added since is either in it
            // or changed the folder's stat.
            recorded_s: now_s(),
            entries: entries.clone(),
            used: AtomicBool::new(true),
        };
        self.read
            .lock()
            .expect("not poisoned")
            .push((dir.as_os_str().to_owned(), listing));
        Ok(entries)
    }

    fn on_the_way(&self, dir: &Path) -> io::Result<Metadata> {
        let key = dir.as_os_str();
        if let Some(meta) = self.on_the_way.read().expect("not poisoned").get(key) {
            return Ok(meta.clone());
        }
        let meta = fs::symlink_metadata(dir)?;
        if meta.is_dir() {
            self.on_the_way
                .write()
                .expect("not poisoned")
                .insert(key.to_owned(), meta.clone());
        }
        Ok(meta)
    }
}

fn kind_byte(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::File => 0,
        EntryKind::Dir => 1,
        EntryKind::Symlink => 2,
        EntryKind::Other => 3,
    }
}

fn kind_of(byte: u8) -> Option<EntryKind> {
    Some(match byte {
        0 => EntryKind::File,
        1 => EntryKind::Dir,
        2 => EntryKind::Symlink,
        3 => EntryKind::Other,
        _ => return None,
    })
}

fn encode(kept: &HashMap<OsString, Listing>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + kept.len() * 200);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(kept.len() as u64).to_le_bytes());
    for (path, l) in kept {
        let p = path.as_bytes();
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
        encode_stat(&l.stat, &mut out);
        out.extend_from_slice(&l.recorded_s.to_le_bytes());
        out.extend_from_slice(&(l.entries.len() as u32).to_le_bytes());
        for e in l.entries.iter() {
            let name = e.name.as_bytes();
            out.push(kind_byte(e.kind));
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name);
        }
    }
    out
}

fn decode(b: &[u8]) -> Option<HashMap<OsString, Listing>> {
    let mut r = Reader::new(b);
    if r.take(8)? != MAGIC {
        return None;
    }
    let n = r.u64()? as usize;
    let mut kept = HashMap::with_capacity(n.min(MAX_FOLDERS));
    for _ in 0..n {
        let len = r.u32()? as usize;
        let path = OsString::from_vec(r.take(len)?.to_vec());
        let stat = decode_stat(&mut r)?;
        let recorded_s = r.u64()? as i64;
        let count = r.u32()? as usize;
        // Each entry takes at least 5 bytes: a count beyond what is left
        // is garbage, not an allocation to attempt.
        let mut entries = Vec::with_capacity(count.min(b.len() / 5));
        for _ in 0..count {
            let kind = kind_of(r.take(1)?[0])?;
            let len = r.u32()? as usize;
            let name = OsStr::from_bytes(r.take(len)?).to_owned();
            entries.push(FolderEntry { name, kind });
        }
        kept.insert(
            path,
            Listing {
                stat,
                recorded_s,
                entries: entries.into(),
                used: AtomicBool::new(false),
            },
        );
    }
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[FolderEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.to_str().unwrap()).collect()
    }

    /// Pretends every listing was recorded long after its folder changed.
    fn age(cache: &mut FolderCache) {
        for l in cache.kept.values_mut() {
            l.recorded_s = i64::MAX;
        }
    }

    #[test]
    fn an_unchanged_folder_is_answered_from_the_cache_and_a_changed_one_read_again() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("src");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("b.txt"), "b").unwrap();
        fs::write(dir.join("a.txt"), "a").unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        let cache_path = d.path().join("cache");
        let mut c = FolderCache::load(cache_path.clone(), d.path().to_path_buf());
        let meta = fs::symlink_metadata(&dir).unwrap();
        let listed = c.list(&dir, &meta).unwrap();
        assert_eq!(names(&listed), ["a.txt", "b.txt", "sub"]);
        assert_eq!(listed[2].kind, EntryKind::Dir);
        c.save().unwrap();

        // Recorded in the folder's own second: not trusted, so a file
        // added in that second is seen even if the stat did not move.
        let mut c = FolderCache::load(cache_path.clone(), d.path().to_path_buf());
        let kept = c.kept.get_mut(dir.as_os_str()).unwrap();
        kept.recorded_s = meta.mtime();
        kept.entries = Arc::from(Vec::new());
        assert_eq!(
            names(&c.list(&dir, &meta).unwrap()),
            ["a.txt", "b.txt", "sub"]
        );

        // Trusted once older: the kept listing is what is answered.
        let mut c = FolderCache::load(cache_path.clone(), d.path().to_path_buf());
        age(&mut c);
        let planted: Arc<[FolderEntry]> = Arc::from(vec![FolderEntry {
            name: "kept".into(),
            kind: EntryKind::File,
        }]);
        c.kept.get_mut(dir.as_os_str()).unwrap().entries = planted;
        assert_eq!(names(&c.list(&dir, &meta).unwrap()), ["kept"]);

        // Any entry added, removed or renamed changes the folder's stat.
        let changes: [&dyn Fn(&Path); 3] = [
            &|p| fs::write(p.join("c.txt"), "c").unwrap(),
            &|p| fs::remove_file(p.join("a.txt")).unwrap(),
            &|p| fs::rename(p.join("b.txt"), p.join("d.txt")).unwrap(),
        ];
        for change in changes {
            std::thread::sleep(std::time::Duration::from_millis(10));
            change(&dir);
            let meta = fs::symlink_metadata(&dir).unwrap();
            let now = read_folder(&dir).unwrap();
            assert_eq!(*c.list(&dir, &meta).unwrap(), *now);
        }
    }

    #[test]
    fn a_folder_listed_in_the_second_it_changed_is_listed_again_when_saved_later() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("out");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("a"), "a").unwrap();
        let cache_path = d.path().join("cache");
        let mut c = FolderCache::load(cache_path.clone(), d.path().to_path_buf());
        c.list(&dir, &fs::symlink_metadata(&dir).unwrap()).unwrap();
        // Changed after it was listed, in the same second.
        fs::write(dir.join("b"), "b").unwrap();
        c.save_as_of(now_s() + 2).unwrap();
        let c = FolderCache::load(cache_path, d.path().to_path_buf());
        let kept = &c.kept[dir.as_os_str()];
        assert_eq!(names(&kept.entries), ["a", "b"]);
        assert_eq!(kept.stat, Stat::of(&fs::symlink_metadata(&dir).unwrap()));
        assert!(kept.recorded_s > kept.stat.mtime_s);
    }

    #[test]
    fn listings_survive_a_round_trip_and_garbage_is_an_empty_cache() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), "").unwrap();
        let mut c = FolderCache::load(d.path().join("cache"), d.path().to_path_buf());
        let meta = fs::symlink_metadata(d.path()).unwrap();
        c.list(d.path(), &meta).unwrap();
        c.save().unwrap();
        let again = FolderCache::load(d.path().join("cache"), d.path().to_path_buf());
        let l = &again.kept[d.path().as_os_str()];
        assert_eq!(l.stat, Stat::of(&meta));
        assert_eq!(names(&l.entries), ["f"]);
        assert!(decode(b"FOLDC001\xff\xff\xff\xff\xff\xff\xff\xff").is_none());
        assert!(decode(b"nonsense").is_none());
    }
}
