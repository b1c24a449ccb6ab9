//! Folder trees on disk of any depth, removed and measured.
//!
//! A step can leave a folder nested 14,000 levels deep in `$TMPDIR` or
//! `$OUT`. Its whole path is far beyond PATH_MAX, so path-based calls fail
//! (ENAMETOOLONG); a recursive walk, `std::fs::remove_dir_all` included,
//! overflows a 2 MiB worker thread's stack and aborts the process; and one
//! open folder per level runs out of file descriptors. Here every call is
//! relative to an open folder, the descent is a loop whose path lives on
//! the heap, and at most two folders are open at once: going up reopens
//! `..` and checks it is the folder we came down from.

use std::ffi::{CStr, CString};
use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, fchmod, fchmodat, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Removes `path` and everything below it, whatever its depth, making
/// read-only folders writable on the way (steps leave them: Go's module
/// cache, `chmod -R a-w`). Best effort: what cannot be removed is left and
/// the rest still goes; callers that care check whether `path` is gone.
/// A symlink is removed, never followed.
pub fn remove_tree(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            let _ = fs::remove_file(path);
            return;
        }
        Err(_) => return,
    }
    let unlink = |dir: &Dir, name: &CStr, _: &FileStat| {
        let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    };
    let rmdir = |parent: &Dir, name: &CStr| {
        let _ = unlinkat(parent, name, UnlinkatFlags::RemoveDir);
    };
    if descend(path, Access::Writable, unlink, rmdir).is_ok() {
        let _ = fs::remove_dir(path);
    }
}

/// Removes everything below the folder `path`, whatever its depth, and
/// keeps the folder (a reused scratch folder's `out/`, `home/`, `tmp/`).
/// True when the folder is there and empty afterwards. Nothing to remove
/// costs one open and one listing.
pub fn empty_folder(path: &Path) -> bool {
    let unlink = |dir: &Dir, name: &CStr, _: &FileStat| {
        let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    };
    let rmdir = |parent: &Dir, name: &CStr| {
        let _ = unlinkat(parent, name, UnlinkatFlags::RemoveDir);
    };
    descend(path, Access::Writable, unlink, rmdir).is_ok()
        && fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

/// Bytes of the regular files at or below `path` (symlinks not followed),
/// whatever its depth; what cannot be read counts as nothing.
pub fn tree_bytes(path: &Path) -> u64 {
    let mut bytes = 0;
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(m) if m.is_file() => return m.len(),
        _ => return 0,
    }
    let add = |_: &Dir, _: &CStr, stat: &FileStat| {
        if stat.st_mode & libc::S_IFMT == libc::S_IFREG {
            bytes += stat.st_size as u64;
        }
    };
    let _ = descend(path, Access::AsIs, add, |_, _| {});
    bytes
}

/// Gives `path` and everything below it, whatever its depth, to `uid` and
/// `gid`, changing symlinks themselves (never what they point to). Returns
/// the first failure; the walk goes on past it.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use nix::unistd::{Gid, Uid, fchownat};
    let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    let first: std::cell::Cell<Option<Errno>> = std::cell::Cell::new(None);
    let give = |dir: &Dir, name: &CStr| {
        if let Err(e) = fchownat(dir, name, owner.0, owner.1, AtFlags::AT_SYMLINK_NOFOLLOW)
            && first.get().is_none()
        {
            first.set(Some(e));
        }
    };
    if fs::symlink_metadata(path)?.is_dir() {
        let walked = descend(
            path,
            Access::AsIs,
            |dir, name, _| give(dir, name),
            |dir, name| give(dir, name),
        );
        if let Err(e) = walked
            && first.get().is_none()
        {
            first.set(Some(e));
        }
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    match first.get() {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Whether folders are made readable and writable for their owner on the
/// way down (for removal) or left as they are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Writable,
    AsIs,
}

/// A folder on the path from the root to the one being listed.
struct Level {
    /// Its name in its parent.
    name: CString,
    /// Its parent's device and inode, to check `..` leads back there.
    parent: (u64, u64),
    /// The parent's subfolders still to visit.
    parent_pending: Vec<CString>,
}

/// Visits every entry below `root` depth first: `entry` for each one that
/// is not a folder (in its open parent, with its `lstat`), `left` for each
/// folder once everything below it has been visited (in its open parent).
/// Errors on one entry skip that entry; the walk stops only when `..` does
/// not lead back to the folder it came from (something moved the tree).
fn descend(
    root: &Path,
    access: Access,
    mut entry: impl FnMut(&Dir, &CStr, &FileStat),
    mut left: impl FnMut(&Dir, &CStr),
) -> nix::Result<()> {
    let mut dir = open_dir(AT_FDCWD, root, access)?;
    let mut pending = list(&mut dir, &mut entry);
    let mut path: Vec<Level> = Vec::new();
    loop {
        if let Some(name) = pending.pop() {
            let Ok(child) = open_dir(&dir, name.as_c_str(), access) else {
                continue;
            };
            let parent = identity(&fstat(&dir)?);
            path.push(Level {
                name,
                parent,
                parent_pending: std::mem::take(&mut pending),
            });
            dir = child;
            pending = list(&mut dir, &mut entry);
            continue;
        }
        let Some(level) = path.pop() else {
            return Ok(());
        };
        let parent = Dir::openat(
            &dir,
            c"..",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        if identity(&fstat(&parent)?) != level.parent {
            return Err(Errno::ESTALE);
        }
        dir = parent;
        left(&dir, &level.name);
        pending = level.parent_pending;
    }
}

/// Opens the folder `name` in `parent` without following a symlink. With
/// `Access::Writable` a folder its owner may not read is made readable
/// first, and the opened folder writable, so its entries can be removed.
fn open_dir<P: ?Sized + nix::NixPath>(
    parent: impl AsFd + Copy,
    name: &P,
    access: Access,
) -> nix::Result<Dir> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir = match Dir::openat(parent, name, flags, Mode::empty()) {
        Err(Errno::EACCES) if access == Access::Writable => {
            // O_NOFOLLOW | O_DIRECTORY got as far as permissions: a folder.
            fchmodat(parent, name, Mode::S_IRWXU, FchmodatFlags::FollowSymlink)?;
            Dir::openat(parent, name, flags, Mode::empty())?
        }
        other => other?,
    };
    if access == Access::Writable {
        let mode = fstat(&dir)?.st_mode & 0o7777;
        if mode & 0o700 != 0o700 {
            fchmod(&dir, Mode::from_bits_truncate(mode | 0o700))?;
        }
    }
    Ok(dir)
}

/// The subfolders of `dir`; `entry` is called for everything else. Entries
/// are gathered before any is handed out, so removing them does not
/// disturb the listing.
fn list(dir: &mut Dir, entry: &mut impl FnMut(&Dir, &CStr, &FileStat)) -> Vec<CString> {
    let names: Vec<(CString, Option<Type>)> = dir
        .iter()
        .flatten()
        .filter(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
        .map(|e| (e.file_name().to_owned(), e.file_type()))
        .collect();
    let mut folders = Vec::new();
    for (name, kind) in names {
        if kind == Some(Type::Directory) {
            folders.push(name);
            continue;
        }
        let Ok(stat) = fstatat(&*dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
            folders.push(name);
        } else {
            entry(dir, &name, &stat);
        }
    }
    folders
}

fn identity(stat: &FileStat) -> (u64, u64) {
    (stat.st_dev, stat.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Nests `levels` folders named `d` below `root`, each holding a file,
    /// descending by relative `mkdir`/`open` calls (the whole path would be
    /// longer than PATH_MAX).
    fn nest(root: &Path, levels: usize) {
        fs::create_dir(root).unwrap();
        let mut dir = Dir::open(root, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..levels {
            nix::sys::stat::mkdirat(&dir, c"d", Mode::S_IRWXU).unwrap();
            let file = nix::fcntl::openat(
                &dir,
                c"f",
                OFlag::O_CREAT | OFlag::O_WRONLY,
                Mode::S_IRUSR | Mode::S_IWUSR,
            )
            .unwrap();
            nix::unistd::write(&file, b"12345").unwrap();
            dir = Dir::openat(
                &dir,
                c"d",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                Mode::empty(),
            )
            .unwrap();
        }
    }

    /// On a thread with a tokio worker's stack (2 MiB).
    fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn a_tree_deeper_than_path_max_is_measured_and_removed_on_a_small_stack() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("deep");
        nest(&root, 5_000);
        let (bytes, gone) = on_worker_stack({
            let root = root.clone();
            move || {
                let bytes = tree_bytes(&root);
                remove_tree(&root);
                (bytes, fs::symlink_metadata(&root).is_err())
            }
        });
        assert_eq!(bytes, 5_000 * 5);
        assert!(gone, "the deep tree was not removed");
    }

    #[test]
    fn read_only_folders_are_removed_and_symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        let root = tmp.path().join("tree");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/file"), "y").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
        fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o000)).unwrap();
        assert_eq!(tree_bytes(&root), if is_root() { 1 } else { 0 });
        remove_tree(&root);
        assert!(fs::symlink_metadata(&root).is_err());
        assert_eq!(fs::read_to_string(outside.join("keep")).unwrap(), "x");
        // A symlink given as the root is removed, not what it points to.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        remove_tree(&link);
        assert!(fs::symlink_metadata(&link).is_err());
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn a_folder_is_emptied_whatever_it_holds_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("home");
        fs::create_dir(&root).unwrap();
        assert!(empty_folder(&root), "an empty folder stays empty");
        nest(&root.join("deep"), 3_000);
        fs::write(root.join("file"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        fs::create_dir(root.join("ro")).unwrap();
        fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
        let emptied = on_worker_stack({
            let root = root.clone();
            move || empty_folder(&root)
        });
        assert!(emptied);
        assert!(root.is_dir());
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
        assert!(Path::new("/etc").is_dir(), "the link was not followed");
        assert!(!empty_folder(&tmp.path().join("missing")));
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }
}
