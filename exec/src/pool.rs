//! Scratch folders reused from one sandboxed step to the next.
//!
//! Creating a scratch folder (`.new-`, its lock, `exec/` and its five
//! folders, the sandbox root's mount point) and removing it after the step
//! is a dozen inodes made and freed per step, which slows every later
//! creation on a journal-less ext4 (see `trees`). A folder whose step
//! succeeded is emptied instead (`out/`, `home/`, `tmp/`, which the step
//! could write; their modes and extended attributes put back) and handed
//! to the next step, renamed `<prefix><random>` for the step it serves. It
//! stays locked while the build holds it, so reapers and `gc` leave it
//! alone; a failed step's folder leaves the pool and is kept as before. The
//! pool's idle folders are removed when the pool is dropped (the build
//! ends); a killed build leaves them unlocked, for the next build of their
//! target and `gc` to remove, as any leftover.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strata_rules::layout;
use strata_store::Store;

use crate::fstree::{empty_folder, remove_tree};
use crate::step;

/// The folders of an exec root a step may write.
const WRITABLE: [&str; 3] = [layout::OUT, layout::HOME, layout::TMP];

/// Idle scratch folders of one store, held by this build.
#[derive(Debug, Default)]
pub struct ScratchPool {
    idle: Mutex<Vec<Scratch>>,
}

/// A scratch folder this build holds (its lock lives as long as this).
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    _lock: fs::File,
    /// The modes `out/`, `home/` and `tmp/` were made with.
    modes: [u32; 3],
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ScratchPool {
    pub fn new() -> ScratchPool {
        ScratchPool::default()
    }

    /// An empty scratch folder named `<prefix><random>` with its exec root:
    /// an idle one renamed, or a new one.
    pub fn take(&self, store: &Store, prefix: &str) -> io::Result<Scratch> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut scratch) = idle {
            match rename_for(store, &scratch.path, prefix) {
                Ok(path) => {
                    scratch.path = path;
                    return Ok(scratch);
                }
                Err(_) => remove_tree(&scratch.path),
            }
        }
        let (path, lock) = step::create_scratch(store, prefix)?;
        let exec_root = path.join("exec");
        let made = step::create_exec_root(&exec_root).and_then(|()| {
            let mut modes = [0; 3];
            for (mode, sub) in modes.iter_mut().zip(WRITABLE) {
                *mode = fs::metadata(exec_root.join(sub))?.permissions().mode() & 0o7777;
            }
            Ok(modes)
        });
        match made {
            Ok(modes) => Ok(Scratch {
                path,
                _lock: lock,
                modes,
            }),
            Err(e) => {
                remove_tree(&path);
                Err(e)
            }
        }
    }

    /// Takes back the folder of a step that succeeded and whose outputs
    /// are stored: emptied for the next step, or removed if it cannot be.
    pub fn give_back(&self, scratch: Scratch) {
        if reset(&scratch) {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(scratch);
        } else {
            remove_tree(&scratch.path);
        }
    }
}

impl Drop for ScratchPool {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        for scratch in idle {
            remove_tree(&scratch.path);
        }
    }
}

/// Renames a held folder to `<prefix><random>` (another name if taken).
fn rename_for(store: &Store, from: &Path, prefix: &str) -> io::Result<PathBuf> {
    loop {
        let to = store
            .scratch_dir()
            .join(format!("{prefix}{:016x}", step::rand_u64()));
        match fs::rename(from, &to) {
            Ok(()) => return Ok(to),
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes a used folder as a new one is, as far as a step can tell: `out/`,
/// `home/` and `tmp/` empty, with their first modes and no extended
/// attributes (a default ACL left on `$HOME` would shape the next step's
/// files). The logs are truncated when the next step starts; `work/`,
/// `deps/` and the sandbox root are mount points the step cannot write.
fn reset(scratch: &Scratch) -> bool {
    let exec_root = scratch.path.join("exec");
    WRITABLE.iter().zip(scratch.modes).all(|(sub, mode)| {
        let dir = exec_root.join(sub);
        empty_folder(&dir)
            && fs::symlink_metadata(&dir).is_ok_and(|m| {
                m.is_dir()
                    && (m.permissions().mode() & 0o7777 == mode
                        || fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).is_ok())
            })
            && drop_step_attributes(&dir).is_ok()
    })
}

/// Removes the extended attributes a step may have set on a folder it
/// owns: `user.*` and POSIX ACLs. Security labels are the system's.
fn drop_step_attributes(dir: &Path) -> io::Result<()> {
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: llistxattr(2) with a NUL-terminated path and no buffer asks
    // for the size of the list.
    let size = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
    if size <= 0 {
        // None, or extended attributes unsupported here.
        return Ok(());
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: the buffer is `names.len()` bytes long.
    let size = unsafe {
        libc::llistxattr(
            path.as_ptr(),
            names.as_mut_ptr() as *mut libc::c_char,
            names.len(),
        )
    };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(size as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let step_set = name.starts_with(b"user.") || name.starts_with(b"system.posix_acl_");
        if !step_set {
            continue;
        }
        let name = CString::new(name).map_err(io::Error::other)?;
        // SAFETY: both arguments are NUL-terminated strings.
        if unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), strata_store::DigestFunction::Blake3).unwrap();
        (d, s)
    }

    fn names(store: &Store) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(store.scratch_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_folder_given_back_is_emptied_renamed_for_the_next_step_and_removed_with_the_pool() {
        let (_d, store) = store();
        let pool = ScratchPool::new();
        let first = pool.take(&store, "ws-a-").unwrap();
        let exec = first.path().join("exec");
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let out_inode = ino(&exec.join("out"));
        fs::create_dir_all(exec.join("out/sub/deeper")).unwrap();
        fs::write(exec.join("home/.cache"), "left by the step").unwrap();
        fs::write(exec.join("tmp/x"), "x").unwrap();
        fs::set_permissions(exec.join("home"), fs::Permissions::from_mode(0o500)).unwrap();
        let home_mode = first.modes[1];
        // What a step may set on a folder it owns (where the file system has them).
        let tmp_dir = CString::new(exec.join("tmp").as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a live value buffer.
        let xattr_set = unsafe {
            libc::lsetxattr(
                tmp_dir.as_ptr(),
                c"user.left".as_ptr(),
                b"1".as_ptr() as *const libc::c_void,
                1,
                0,
            )
        } == 0;
        let first_path = first.path().to_path_buf();
        assert!(names(&store)[0].starts_with("ws-a-"));
        pool.give_back(first);

        let second = pool.take(&store, "ws-b-").unwrap();
        assert!(!first_path.exists(), "renamed, not copied");
        assert!(
            second
                .path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("ws-b-")
        );
        let exec = second.path().join("exec");
        assert_eq!(ino(&exec.join("out")), out_inode, "the same folder, reused");
        for sub in WRITABLE {
            assert_eq!(fs::read_dir(exec.join(sub)).unwrap().count(), 0, "{sub}");
        }
        let mode = fs::metadata(exec.join("home"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, home_mode);
        if xattr_set {
            let tmp_dir = CString::new(exec.join("tmp").as_os_str().as_bytes()).unwrap();
            // SAFETY: a NUL-terminated path and no buffer.
            let left = unsafe { libc::llistxattr(tmp_dir.as_ptr(), std::ptr::null_mut(), 0) };
            assert_eq!(left, 0, "the step's extended attribute is gone");
        }
        // Held: a reaper of its target leaves it alone.
        step::remove_stale_scratch(&store, "ws-b-");
        assert!(second.path().exists());
        // A second folder while the first is taken.
        let third = pool.take(&store, "ws-c-").unwrap();
        assert_eq!(names(&store).len(), 2);
        pool.give_back(second);
        pool.give_back(third);
        drop(pool);
        assert!(names(&store).is_empty(), "{:?}", names(&store));
    }
}
