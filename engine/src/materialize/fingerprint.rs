//! A cheap summary of an output folder as placed: every entry's path, kind,
//! mode, inode, size, modification and change time. Any edit, addition,
//! removal or `chmod` under the folder changes the change time of something
//! in it (which no user can set back), so a different fingerprint means the
//! folder no longer is what Strata placed, without reading a byte of it.
//!
//! The folders are listed through a [`Folders`] reader: a cache of
//! listings answers a folder whose stat is unchanged (an entry added,
//! removed or renamed changes it), so a fingerprint of an untouched folder
//! costs one `lstat` per entry.

use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_load::globs::{EntryKind, FolderEntry, Folders};

/// The fingerprint of the folder `dir`, or `None` if it cannot be read or
/// is not a folder.
pub(super) fn of(dir: &Path, folders: &dyn Folders) -> Option<String> {
    let mut hasher = blake3::Hasher::new();
    let meta = fs::symlink_metadata(dir).ok()?;
    if !meta.is_dir() {
        return None;
    }
    add(&mut hasher, b"", &meta);
    // Depth first, each folder's entries in name order; the folders on the
    // way kept on the heap, so depth costs no call stack.
    struct Level {
        dir: PathBuf,
        rel: Vec<u8>,
        entries: Arc<[FolderEntry]>,
        next: usize,
    }
    let mut stack = vec![Level {
        entries: folders.list(dir, &meta).ok()?,
        dir: dir.to_path_buf(),
        rel: Vec::new(),
        next: 0,
    }];
    while let Some(level) = stack.last_mut() {
        let Some(entry) = level.entries.get(level.next) else {
            stack.pop();
            continue;
        };
        level.next += 1;
        let path = level.dir.join(&entry.name);
        let mut rel = level.rel.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(entry.name.as_bytes());
        let meta = fs::symlink_metadata(&path).ok()?;
        add(&mut hasher, &rel, &meta);
        if entry.kind == EntryKind::Dir && meta.is_dir() {
            let entries = folders.list(&path, &meta).ok()?;
            stack.push(Level {
                dir: path,
                rel,
                entries,
                next: 0,
            });
        }
    }
    Some(hasher.finalize().to_hex().to_string())
}

/// One entry: its path below the folder and its stat.
fn add(hasher: &mut blake3::Hasher, rel: &[u8], meta: &Metadata) {
    hasher.update(&(rel.len() as u64).to_le_bytes());
    hasher.update(rel);
    for n in [
        u64::from(meta.mode()),
        meta.ino(),
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
        meta.ctime() as u64,
        meta.ctime_nsec() as u64,
    ] {
        hasher.update(&n.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use strata_load::globs::Disk;

    use super::*;
    use crate::folder_cache::FolderCache;

    /// The fingerprint as walkdir gave it before listings were cached:
    /// fingerprints recorded then still vouch for their folders.
    fn as_walkdir_gave_it(dir: &Path) -> String {
        let mut hasher = blake3::Hasher::new();
        for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
            let entry = entry.unwrap();
            let rel = entry.path().strip_prefix(dir).unwrap();
            add(
                &mut hasher,
                rel.as_os_str().as_bytes(),
                &entry.metadata().unwrap(),
            );
        }
        hasher.finalize().to_hex().to_string()
    }

    #[test]
    fn any_change_under_the_folder_changes_the_fingerprint() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/motd"), "hello\n").unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        fs::write(d.path().join("a/b/c"), "c").unwrap();
        fs::write(d.path().join("z"), "z").unwrap();
        std::os::unix::fs::symlink("etc", d.path().join("link")).unwrap();
        let of = |dir: &Path| of(dir, &Disk);
        let placed = of(d.path()).unwrap();
        assert_eq!(placed, as_walkdir_gave_it(d.path()));
        assert_eq!(of(d.path()).unwrap(), placed, "reading changes nothing");
        let changes: [&dyn Fn(&Path); 3] = [
            // Same size, same mtime set back: the change time still moves.
            &|p| {
                let mtime = fs::metadata(p.join("etc/motd"))
                    .unwrap()
                    .modified()
                    .unwrap();
                fs::write(p.join("etc/motd"), "HELLO\n").unwrap();
                let f = fs::File::options()
                    .write(true)
                    .open(p.join("etc/motd"))
                    .unwrap();
                f.set_modified(mtime).unwrap();
            },
            &|p| fs::write(p.join("etc/extra"), "").unwrap(),
            &|p| {
                fs::set_permissions(p.join("etc/motd"), fs::Permissions::from_mode(0o600)).unwrap()
            },
        ];
        let mut seen = placed;
        for change in changes {
            std::thread::sleep(std::time::Duration::from_millis(10));
            change(d.path());
            let now = of(d.path()).unwrap();
            assert_ne!(now, seen);
            seen = now;
        }
    }

    #[test]
    fn listings_kept_by_a_cache_give_the_same_fingerprint_and_miss_no_change() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        fs::create_dir_all(out.join("etc/deep")).unwrap();
        fs::write(out.join("etc/deep/motd"), "hello\n").unwrap();
        fs::write(out.join("top"), "top\n").unwrap();
        let mut cache = FolderCache::load(d.path().join("cache"), d.path().to_path_buf());
        let placed = of(&out, &cache).unwrap();
        cache.trust_all();
        assert_eq!(of(&out, &cache).unwrap(), placed);
        assert_eq!(of(&out, &Disk).unwrap(), placed);
        let changes: [&dyn Fn(&Path); 4] = [
            &|p| fs::write(p.join("etc/deep/extra"), "").unwrap(),
            &|p| fs::remove_file(p.join("etc/deep/motd")).unwrap(),
            &|p| fs::rename(p.join("top"), p.join("top2")).unwrap(),
            &|p| fs::remove_dir_all(p.join("etc/deep")).unwrap(),
        ];
        let mut seen = placed;
        for change in changes {
            std::thread::sleep(std::time::Duration::from_millis(10));
            change(&out);
            let now = of(&out, &cache).unwrap();
            assert_eq!(now, of(&out, &Disk).unwrap());
            assert_ne!(now, seen);
            seen = now;
            cache.trust_all();
        }
        fs::remove_dir_all(&out).unwrap();
        fs::write(&out, "a file now").unwrap();
        assert_eq!(of(&out, &cache), None);
    }
}
