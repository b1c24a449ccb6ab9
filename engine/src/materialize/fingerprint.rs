//! A cheap summary of an output folder as placed: every entry's path, kind,
//! mode, inode, size, modification and change time. Any edit, addition,
//! removal or `chmod` under the folder changes the change time of something
//! in it (which no user can set back), so a different fingerprint means the
//! folder no longer is what Strata placed, without reading a byte of it.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The fingerprint of the folder `dir`, or `None` if it cannot be read.
pub(super) fn of(dir: &Path) -> Option<String> {
    let mut hasher = blake3::Hasher::new();
    // walkdir keeps its own stack of folders, so depth costs no call stack.
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.ok()?;
        let meta = entry.metadata().ok()?;
        let rel = entry.path().strip_prefix(dir).ok()?;
        hasher.update(&(rel.as_os_str().len() as u64).to_le_bytes());
        hasher.update(rel.as_os_str().as_bytes());
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
    Some(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn any_change_under_the_folder_changes_the_fingerprint() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/motd"), "hello\n").unwrap();
        let placed = of(d.path()).unwrap();
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
}
