//! Reversing the order in which folders list their entries.
//!
//! A program that reads a folder without sorting it (`find`, `ls -U`, a
//! tar without `--sort=name`, `os.listdir`) depends on the file system's
//! listing order. That order is not ours to choose, but how it follows from
//! the order of creation is measurable: some file systems list in creation
//! order (btrfs), some in reverse (tmpfs on many kernels), some by a hash of
//! the name (ext4), on which creation order changes nothing.
//!
//! `relist` re-creates a tree so that each folder lists its entries in the
//! reverse of the source folder's listing, provided the destination's file
//! system lists by creation order either way. The sandbox does this onto a
//! fresh tmpfs, which always does, so there the reversal holds whatever the
//! store's file system is.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How entries get from the source to the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// Renamed (same file system; the source is left with empty folders).
    Move,
    /// Copied, with their permissions (another file system).
    Copy,
}

/// How a folder of the destination's file system lists new entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listing {
    CreationOrder,
    ReverseCreationOrder,
}

/// Creates two entries in a probe folder inside `dir` and sees in which
/// order they are listed.
fn probe(dir: &Path) -> io::Result<Listing> {
    let probe = dir.join(".strata-order-probe");
    fs::create_dir(&probe)?;
    let result = (|| {
        fs::write(probe.join("1"), b"")?;
        fs::write(probe.join("2"), b"")?;
        let first = fs::read_dir(&probe)?
            .next()
            .transpose()?
            .map(|e| e.file_name());
        Ok(if first.as_deref() == Some("2".as_ref()) {
            Listing::ReverseCreationOrder
        } else {
            Listing::CreationOrder
        })
    })();
    let _ = fs::remove_dir_all(&probe);
    result
}

/// Re-creates the contents of `from` in the existing empty folder `to`,
/// each folder with its entries created so that `to` lists them in the
/// reverse of `from`'s listing. Folder modes are kept and set last, so
/// read-only folders can be filled.
pub fn relist(from: &Path, to: &Path, how: How) -> io::Result<()> {
    let listing = probe(to)?;
    let mut pending: Vec<(PathBuf, PathBuf)> = vec![(from.to_path_buf(), to.to_path_buf())];
    let mut modes: Vec<(PathBuf, u32)> = Vec::new();
    while let Some((src, dst)) = pending.pop() {
        let mut names: Vec<_> = fs::read_dir(&src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        // Entries created in listing order come out reversed where new
        // entries go first; elsewhere they must be created reversed.
        if listing == Listing::CreationOrder {
            names.reverse();
        }
        for name in names {
            let (s, d) = (src.join(&name), dst.join(&name));
            let meta = fs::symlink_metadata(&s)?;
            let kind = meta.file_type();
            if kind.is_dir() {
                fs::create_dir(&d)?;
                modes.push((d.clone(), meta.permissions().mode()));
                pending.push((s, d));
            } else if how == How::Move {
                fs::rename(&s, &d)?;
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
            } else if kind.is_file() {
                fs::copy(&s, &d)?;
            }
            // Anything else (a socket a step left behind) is not an input.
        }
    }
    for (dir, mode) in modes.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Reverses the listing order of every folder under `dir` in place, by
/// moving its contents out and back (where the file system lists by
/// creation order; elsewhere the order stays what it was).
pub fn reverse_in_place(dir: &Path) -> io::Result<()> {
    let name = dir
        .file_name()
        .ok_or_else(|| io::Error::other("cannot reorder a root folder"))?;
    let aside = dir.with_file_name(format!(".{}.reorder", name.to_string_lossy()));
    let mode = fs::metadata(dir)?.permissions().mode();
    fs::rename(dir, &aside)?;
    fs::create_dir(dir)?;
    relist(&aside, dir, How::Move)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    fs::remove_dir_all(&aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn sample(root: &Path) {
        for n in ["c", "a", "d", "b", "e"] {
            fs::write(root.join(n), n).unwrap();
        }
        fs::create_dir(root.join("sub")).unwrap();
        for n in ["y", "x", "z"] {
            fs::write(root.join("sub").join(n), n).unwrap();
        }
        std::os::unix::fs::symlink("a", root.join("link")).unwrap();
    }

    #[test]
    fn copies_keep_contents_links_and_modes() {
        let t = tempfile::tempdir().unwrap();
        let (from, to) = (t.path().join("from"), t.path().join("to"));
        fs::create_dir(&from).unwrap();
        fs::create_dir(&to).unwrap();
        sample(&from);
        fs::set_permissions(from.join("a"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(from.join("sub"), fs::Permissions::from_mode(0o555)).unwrap();
        relist(&from, &to, How::Copy).unwrap();
        let mut names = listing(&to);
        names.sort();
        assert_eq!(names, ["a", "b", "c", "d", "e", "link", "sub"]);
        assert_eq!(fs::read_to_string(to.join("sub/x")).unwrap(), "x");
        assert_eq!(fs::read_link(to.join("link")).unwrap(), Path::new("a"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&to.join("a")), 0o555);
        assert_eq!(mode(&to.join("sub")), 0o555);
        fs::set_permissions(from.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(to.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// On tmpfs (/dev/shm), which lists by creation order one way or the
    /// other, the listing comes out exactly reversed.
    #[test]
    fn in_place_keeps_every_entry_and_reverses_on_tmpfs() {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let on_tmpfs = nix::sys::statfs::statfs(base.path())
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        let dir = base.path().join("d");
        fs::create_dir(&dir).unwrap();
        sample(&dir);
        let before = listing(&dir);
        let sub_before = listing(&dir.join("sub"));
        reverse_in_place(&dir).unwrap();
        let after = listing(&dir);
        let (mut b, mut a) = (before.clone(), after.clone());
        b.sort();
        a.sort();
        assert_eq!(a, b);
        assert_eq!(fs::read_to_string(dir.join("sub/z")).unwrap(), "z");
        assert!(!base.path().join(".d.reorder").exists());
        if on_tmpfs {
            let rev = |mut v: Vec<String>| {
                v.reverse();
                v
            };
            assert_eq!(after, rev(before));
            assert_eq!(listing(&dir.join("sub")), rev(sub_before));
        }
    }
}
