//! A finished container's file system as its parent tree plus the changes
//! in its overlay upper folder, read directly when the engine is local and
//! uses overlay2: only what the step wrote is read and hashed, where an
//! export streams and hashes the whole root file system.
//!
//! The upper folder holds new and changed entries whole (folders copied up
//! with their metadata), deletions as whiteouts (character devices 0:0) and
//! replaced folders marked opaque (`trusted.overlay.opaque=y`). Anything
//! else that overlayfs can write there (a metacopy file whose data stays
//! below, a renamed folder's redirect) means the upper folder alone does
//! not tell the whole story: the caller exports instead. So does an engine
//! whose folders this process cannot see (remote, rootless, another
//! driver).

use std::ffi::{CString, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use strata_store::tree::{DeviceKind, MAX_DEPTH, Meta, Node, TreeBuilder};
use strata_store::{Cas, Digest};

use super::{ContainerHandle, DockerError};

impl ContainerHandle {
    /// The container's root file system as `parent` (the tree its image was
    /// made from) plus its overlay changes, or `None` when they cannot be
    /// read here (export instead). Call [`super::restore_injected`] on the
    /// result, as on an export.
    pub async fn changes_on(
        &self,
        cas: &Cas,
        parent: &Digest,
    ) -> Result<Option<Digest>, DockerError> {
        let what = format!("reading the changes of container {}", self.name());
        let inspected = self
            .engine
            .quick()
            .inspect_container(self.name(), None)
            .await
            .map_err(DockerError::api(what.as_str()))?;
        let Some(driver) = inspected.graph_driver else {
            return Ok(None);
        };
        if driver.name != "overlay2" {
            return Ok(None);
        }
        let Some(upper) = driver.data.get("UpperDir").map(PathBuf::from) else {
            return Ok(None);
        };
        if !upper.is_dir() {
            return Ok(None);
        }
        let (cas, parent) = (cas.clone(), *parent);
        tokio::task::spawn_blocking(move || apply_upper(&cas, &parent, &upper))
            .await
            .map_err(|e| DockerError::refused(what.as_str(), e.to_string()))?
            .map_err(|e| DockerError::refused(what.as_str(), e))
    }
}

/// Why the upper folder cannot stand for the changes.
const UNSUPPORTED: Option<Digest> = None;

fn apply_upper(cas: &Cas, parent: &Digest, upper: &Path) -> Result<Option<Digest>, String> {
    let mut tree = TreeBuilder::load(cas, parent).map_err(|e| e.to_string())?;
    if !apply_dir(cas, &mut tree, upper)? {
        return Ok(UNSUPPORTED);
    }
    // An export lists no entry for the root, so an unpacked export's root
    // has no metadata, whatever the parent's.
    tree.set_meta(None);
    tree.store(cas).map(Some).map_err(|e| e.to_string())
}

/// Applies the upper folder `root` to the tree; `false` when it holds
/// something only overlayfs itself can interpret. A loop with the path on
/// the heap (a step may nest folders thousands deep); a folder deeper than
/// `tree::MAX_DEPTH` is an error, as for a `run` step's outputs.
fn apply_dir(cas: &Cas, tree: &mut TreeBuilder, root: &Path) -> Result<bool, String> {
    let mut levels = vec![(root.to_path_buf(), String::new(), sorted_names(root)?)];
    while let Some((dir, rel, names)) = levels.last_mut() {
        let Some(name) = names.next() else {
            levels.pop();
            continue;
        };
        let Some(name_str) = name.to_str() else {
            return Err(format!("{}: a name that is not UTF-8", dir.display()));
        };
        let path = dir.join(&name);
        let at = if rel.is_empty() {
            name_str.to_string()
        } else {
            format!("{rel}/{name_str}")
        };
        let m = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if has_xattr(&path, "trusted.overlay.metacopy")
            || has_xattr(&path, "trusted.overlay.redirect")
        {
            return Ok(false);
        }
        let meta = Some(Meta {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        });
        let kind = m.file_type();
        let edit = |e: strata_store::tree::EditError| format!("{at}: {e}");
        if kind.is_char_device() && m.rdev() == 0 {
            tree.remove(cas, &at).map_err(edit)?;
            continue;
        }
        if kind.is_dir() {
            if xattr_is(&path, "trusted.overlay.opaque", b"y") {
                tree.remove(cas, &at).map_err(edit)?;
            }
            let mut folder = TreeBuilder::new();
            folder.set_meta(meta);
            // Onto a folder this merges (its metadata replaced, its
            // entries kept); onto anything else it replaces.
            if levels.len() >= MAX_DEPTH {
                let shown: Vec<&str> = at.split('/').take(16).collect();
                return Err(format!(
                    "`{}/…` holds folders more than {MAX_DEPTH} levels deep; Strata stores trees at most {MAX_DEPTH} levels deep",
                    shown.join("/")
                ));
            }
            tree.insert_at(cas, &at, Node::Dir(folder), None)
                .map_err(edit)?;
            let names = sorted_names(&path)?;
            levels.push((path, at, names));
            continue;
        }
        let node = if kind.is_file() {
            let digest = cas.put_file_copy(&path).map_err(|e| e.to_string())?;
            Node::File {
                digest,
                executable: m.mode() & 0o111 != 0,
                meta,
            }
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let Some(target) = target.to_str() else {
                return Err(format!("{at}: the symlink target is not UTF-8"));
            };
            Node::Symlink {
                target: target.to_string(),
                meta,
            }
        } else if kind.is_char_device() || kind.is_block_device() || kind.is_fifo() {
            let rdev = m.rdev();
            Node::Device {
                kind: if kind.is_char_device() {
                    DeviceKind::Char
                } else if kind.is_block_device() {
                    DeviceKind::Block
                } else {
                    DeviceKind::Fifo
                },
                major: libc::major(rdev),
                minor: libc::minor(rdev),
                meta,
            }
        } else {
            // A socket: an export has no way to carry it either.
            continue;
        };
        tree.insert_at(cas, &at, node, None).map_err(edit)?;
    }
    Ok(true)
}

/// The names in the folder `dir`, sorted.
fn sorted_names(dir: &Path) -> Result<std::vec::IntoIter<OsString>, String> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    names.sort();
    Ok(names.into_iter())
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 256];
    // SAFETY: both strings are NUL-terminated and live across the call; the
    // buffer's length is passed with it.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

fn has_xattr(path: &Path, name: &str) -> bool {
    let (Ok(p), Ok(n)) = (
        CString::new(path.as_os_str().as_bytes()),
        CString::new(name),
    ) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated and live across the call; a
    // null buffer of length 0 asks only for the value's size.
    unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

fn xattr_is(path: &Path, name: &str, value: &[u8]) -> bool {
    xattr(path, name).is_some_and(|v| v == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upper_folder_nested_too_deep_is_refused_not_a_stack_overflow() {
        let tmp = tempfile::tempdir().unwrap();
        let store = strata_store::Store::open(
            &tmp.path().join("store"),
            strata_store::DigestFunction::Blake3,
        )
        .unwrap();
        let cas = store.cas().clone();
        let parent = TreeBuilder::new().store(&cas).unwrap();
        // 3,000 levels: the whole path is beyond PATH_MAX only past ~2,000.
        let upper = tmp.path().join("upper");
        let mut dir = upper.clone();
        fs::create_dir(&dir).unwrap();
        for _ in 0..3000 {
            dir.push("d");
            if fs::create_dir(&dir).is_err() {
                break;
            }
        }
        assert!(upper.join("d/d/d").is_dir());
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || apply_upper(&cas, &parent, &upper))
            .unwrap()
            .join()
            .unwrap();
        let err = outcome.unwrap_err();
        assert!(
            err.contains("more than 1024 levels deep") && err.starts_with("`d/d/d/"),
            "{err}"
        );
    }
}
