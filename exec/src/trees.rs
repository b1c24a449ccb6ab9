//! Input trees made once and bind-mounted into every sandboxed step that
//! needs them, instead of staged into each step's scratch folder.
//!
//! A dependency's output tree (hard links into the CAS) or a step's source
//! tree (copies of its sources, read-only) is written once to
//! `<store>/trees/<boot>/<fn>/<hex>-<size>`, named by its tree digest, and
//! the sandbox helper mounts it read-only at `deps/<name>` or `work/`. On
//! the journal-less file systems build machines often use, every inode
//! created and removed per step makes each later creation slower (ext4
//! skips inodes freed in the last seconds when it allocates); a tree made
//! once and kept creates nothing per step.
//!
//! What makes a folder there trustworthy:
//! - it is filled under a temporary name (`.tmp-*`) and renamed into place
//!   only when whole, without replacing one already there, so a build killed
//!   mid-way leaves only a temporary, never trusted (`gc` removes them);
//! - nothing in it is fsynced: it is only trusted during the boot that wrote
//!   it (`<boot>` is the kernel's boot id). A power cut, which can leave a
//!   folder renamed into place without all its entries, also ends the boot;
//!   the trees of other boots are never used, and `gc` removes them;
//! - a source tree is named by the digests the step is keyed with, and
//!   published only if every source still has the stat it was hashed with
//!   after its copy, so a source edited during the build never enters one;
//! - the first time a build uses a tree made before, each file is checked
//!   for its size and, if linked, for still being the blob the store holds
//!   (a blob written to through a link is replaced in the store when found
//!   of the wrong size; the tree would keep the written one): a tree that
//!   fails is set aside (`.stale-*`) and made again;
//! - files are read-only and the sandbox mounts trees read-only.
//!
//! Derived data only: `gc` may remove any of it (under its exclusive lock,
//! so no build uses it meanwhile).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strata_store::tree::{self, Node, Placement, TreeBuilder};
use strata_store::{Cas, Digest, Store};

use crate::fstree;
use crate::source::SourceFile;
use crate::step::Failure;

/// The folder of the store holding trees, one folder per boot below it.
pub const TREES: &str = "trees";
const TEMPORARY: &str = ".tmp-";
/// A tree found changed since it was made, set aside for `gc`.
const STALE: &str = ".stale-";

/// The trees of one store for this boot.
#[derive(Debug)]
pub struct Trees {
    store: Store,
    /// `<store>/trees/<boot>/<fn>`.
    dir: PathBuf,
    /// The same folder as the sandbox helper reaches it from a scratch
    /// folder (`<store>/scratch/<name>`, its working folder): relative, so
    /// the folders above the store need not be open to a root build's step
    /// user.
    from_scratch: PathBuf,
    /// Trees known whole, so each is looked for on disk once per build.
    present: Mutex<HashSet<Digest>>,
}

impl Trees {
    /// This boot's trees of `store`, or `None` where they cannot be used
    /// (no boot id to scope them by; a root build whose step user could
    /// not reach them) and steps stage their inputs as before.
    pub fn open(store: &Store) -> Option<Trees> {
        let boot = boot_id()?;
        let base = store.root().join(TREES);
        let dir = base.join(&boot).join(store.function().name());
        fs::create_dir_all(&dir).ok()?;
        // A root build's steps run as `sandbox::ROOT_STEP_ID`, which must
        // walk from the scratch folder to the tree: `..` twice, then down.
        if nix::unistd::geteuid().is_root() {
            let scratch = store.scratch_dir();
            let boot_dir = base.join(&boot);
            let walkable = [store.root(), &scratch, &base, &boot_dir, &dir]
                .iter()
                .all(|p| fs::metadata(p).is_ok_and(|m| m.mode() & 0o001 != 0));
            if !walkable {
                return None;
            }
        }
        let from_scratch = Path::new("../..")
            .join(TREES)
            .join(&boot)
            .join(store.function().name());
        Some(Trees {
            store: store.clone(),
            dir,
            from_scratch,
            present: Mutex::new(HashSet::new()),
        })
    }

    /// The folder holding the output tree `output`, made if missing, as
    /// the sandbox helper reaches it from a scratch folder.
    pub fn dependency(&self, output: &Digest) -> Result<PathBuf, Failure> {
        self.ensure(
            output,
            |dir| holds_output(self.store.cas(), output, dir),
            |dest| {
                tree::materialize(self.store.cas(), output, dest, Placement::HardLink)
                    .map_err(Failure::Store)
            },
        )
    }

    /// The folder holding `sources` at their relative paths (copies, 0444 or
    /// 0555), made if missing, as the sandbox helper reaches it from a
    /// scratch folder; `None` for no sources. Named by the tree the step's
    /// key holds as `work/`.
    pub fn sources(&self, sources: &[SourceFile]) -> Result<Option<PathBuf>, Failure> {
        if sources.is_empty() {
            return Ok(None);
        }
        let mut builder = TreeBuilder::new();
        for src in sources {
            builder
                .insert(&src.rel, Node::file(src.digest, src.executable))
                .map_err(|reason| {
                    Failure::Io(format!("cannot stage source {}: {reason}", src.rel))
                })?;
        }
        let digest = builder.encode(self.store.function()).root;
        self.ensure(
            &digest,
            |dir| holds_sources(sources, dir),
            |dest| copy_sources(sources, dest),
        )
        .map(Some)
    }

    /// Where the helper finds a folder of this tree.
    fn reached(&self, name: &str) -> PathBuf {
        self.from_scratch.join(name)
    }

    /// The tree `digest`: one made earlier in this boot if `whole` finds
    /// it as made (checked once per build), else filled by `fill` under a
    /// temporary name and renamed into place unless another writer got
    /// there first.
    fn ensure(
        &self,
        digest: &Digest,
        whole: impl FnOnce(&Path) -> bool,
        fill: impl FnOnce(&Path) -> Result<(), Failure>,
    ) -> Result<PathBuf, Failure> {
        let name = format!("{}-{}", digest.hex(), digest.size_bytes);
        let dest = self.dir.join(&name);
        if self.is_present(digest) {
            return Ok(self.reached(&name));
        }
        let io = |what: &str, p: &Path, e: io::Error| {
            Failure::Io(format!("{what} {}: {e}", p.display()))
        };
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
            if whole(&dest) {
                self.mark_present(digest);
                return Ok(self.reached(&name));
            }
            // Changed since it was made (a file edited, or linked to a blob
            // the store has since replaced because it was written to): set
            // aside for `gc`, so a step still mounting it keeps its view.
            let aside = self
                .dir
                .join(format!("{STALE}{:016x}", crate::step::rand_u64()));
            match fs::rename(&dest, &aside) {
                Ok(()) => {}
                // Another build set it aside first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot set aside", &dest, e)),
            }
        }
        let tmp = temporary_folder(&self.dir).map_err(|e| io("cannot create in", &self.dir, e))?;
        if let Err(f) = fill(&tmp) {
            fstree::remove_tree(&tmp);
            return Err(f);
        }
        match rename_no_replace(&tmp, &dest) {
            Ok(()) => {}
            // Another build or step published it meanwhile: the same tree.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                fstree::remove_tree(&tmp);
            }
            Err(e) => {
                fstree::remove_tree(&tmp);
                return Err(io("cannot publish", &dest, e));
            }
        }
        self.mark_present(digest);
        Ok(self.reached(&name))
    }

    fn is_present(&self, digest: &Digest) -> bool {
        self.present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(digest)
    }

    fn mark_present(&self, digest: &Digest) {
        self.present
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*digest);
    }

    /// The absolute path of a folder the helper reaches as `reached`.
    pub fn on_host(&self, reached: &Path) -> PathBuf {
        match reached.strip_prefix(&self.from_scratch) {
            Ok(name) => self.dir.join(name),
            Err(_) => reached.to_path_buf(),
        }
    }
}

/// Whether `dir` holds the output tree `root` as `materialize` made it:
/// every file of its size, and one linked to a blob (not copied) still
/// the blob the store holds. A stat or two per file, no reading.
fn holds_output(cas: &Cas, root: &Digest, dir: &Path) -> bool {
    let Ok(entries) = tree::walk(cas, root) else {
        return false;
    };
    entries.into_iter().all(|(path, entry)| {
        let on_disk = fs::symlink_metadata(tree::rel_join(dir, &path));
        match entry {
            tree::Entry::File { digest, .. } => on_disk.is_ok_and(|m| {
                let copied = m.nlink() == 1;
                m.is_file()
                    && m.len() == digest.size_bytes
                    && (copied || fs::metadata(cas.path(&digest)).is_ok_and(|b| b.ino() == m.ino()))
            }),
            tree::Entry::Dir { .. } => on_disk.is_ok_and(|m| m.is_dir()),
            tree::Entry::Symlink { .. } => on_disk.is_ok_and(|m| m.file_type().is_symlink()),
            tree::Entry::Device { .. } => true,
        }
    })
}

/// Whether `dir` holds each source as `copy_sources` made it: a file of its
/// size with its executable bit.
fn holds_sources(sources: &[SourceFile], dir: &Path) -> bool {
    sources.iter().all(|src| {
        fs::symlink_metadata(tree::rel_join(dir, &src.rel)).is_ok_and(|m| {
            m.is_file()
                && m.len() == src.digest.size_bytes
                && (m.mode() & 0o111 != 0) == src.executable
        })
    })
}

/// Copies the sources into `dest` at their relative paths, read-only, each
/// checked to be the file that was hashed once copied.
fn copy_sources(sources: &[SourceFile], dest: &Path) -> Result<(), Failure> {
    let io =
        |what: &str, p: &Path, e: io::Error| Failure::Io(format!("{what} {}: {e}", p.display()));
    // Sources come folder by folder: make each folder once.
    let mut made: Option<PathBuf> = None;
    for src in sources {
        let to = tree::rel_join(dest, &src.rel);
        if let Some(parent) = to.parent()
            && made.as_deref() != Some(parent)
        {
            fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
            made = Some(parent.to_path_buf());
        }
        fs::copy(&src.abs, &to).map_err(|e| io("cannot stage source", &src.abs, e))?;
        let mode = if src.executable { 0o555 } else { 0o444 };
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))
            .map_err(|e| io("cannot set mode of", &to, e))?;
        if !src.unchanged() {
            return Err(Failure::SourceChanged {
                path: src.abs.clone(),
            });
        }
    }
    Ok(())
}

/// A new folder `.tmp-<random>` in `dir`, with the mode a plain `mkdir`
/// gives (a temporary directory's 0700 would keep a root build's step
/// user out once renamed).
fn temporary_folder(dir: &Path) -> io::Result<PathBuf> {
    loop {
        let path = dir.join(format!("{TEMPORARY}{:016x}", crate::step::rand_u64()));
        match fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `rename(2)` that fails rather than replace an (empty) folder at `to`.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE).map_err(io::Error::from)
}

/// The kernel's id of this boot.
fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    let clean = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    clean.then(|| id.to_string())
}

/// Copies the tree at `from` into the existing empty folder `to`: hard
/// links where the file system allows, copies otherwise, folders made
/// anew, symlinks as they are. For a failed step's kept scratch folder,
/// which then shows the inputs the step saw. Best effort.
pub fn link_copy(from: &Path, to: &Path) -> io::Result<()> {
    let mut pending = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src, dst)) = pending.pop() {
        for entry in fs::read_dir(&src)? {
            let entry = entry?;
            let (s, d) = (entry.path(), dst.join(entry.file_name()));
            let kind = entry.file_type()?;
            if kind.is_dir() {
                fs::create_dir(&d)?;
                pending.push((s, d));
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
            } else if fs::hard_link(&s, &d).is_err() {
                fs::copy(&s, &d)?;
            }
        }
    }
    Ok(())
}

/// What `<store>/trees/` holds, for `strata store stats` and `gc`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Trees (folders named by a digest), of every boot.
    pub trees: u64,
    /// Bytes of the files that only these folders hold: copies (sources,
    /// executables, files the file system would not link) and links to
    /// blobs the CAS no longer holds. A file hard-linked to a stored blob
    /// is counted with the store's objects, not here.
    pub bytes: u64,
}

/// Counts `<store>/trees/`. Reads only.
pub fn usage(store: &Store) -> Usage {
    use std::collections::HashMap;
    let mut usage = Usage::default();
    // Inode -> (size, links found here, links in all).
    let mut inodes: HashMap<(u64, u64), (u64, u64, u64)> = HashMap::new();
    for tree in list(store) {
        if !tree.temporary {
            usage.trees += 1;
        }
        for entry in walkdir::WalkDir::new(&tree.path)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
        {
            if let Ok(m) = entry.metadata() {
                let seen = inodes
                    .entry((m.dev(), m.ino()))
                    .or_insert((m.len(), 0, m.nlink()));
                seen.1 += 1;
            }
        }
    }
    usage.bytes = inodes
        .values()
        .filter(|(_, here, all)| here >= all)
        .map(|(size, _, _)| size)
        .sum();
    usage
}

/// Bytes of the files at or below `path` that no other folder links: what
/// removing it frees.
pub fn own_bytes(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.nlink() == 1)
        .map(|m| m.len())
        .sum()
}

/// One folder under `<store>/trees/<boot>/<fn>/`.
#[derive(Clone, Debug)]
pub struct Tree {
    pub path: PathBuf,
    /// Written during this boot (others are never used again).
    pub this_boot: bool,
    /// A temporary being filled, or left by a killed build.
    pub temporary: bool,
    /// The digest function folder it is in.
    pub function: String,
    /// The tree's digest, from its name (none for a temporary).
    pub digest: Option<Digest>,
}

/// Every folder under `<store>/trees/<boot>/<fn>/`, and anything else found
/// at those levels (as a temporary: not named like a tree).
pub fn list(store: &Store) -> Vec<Tree> {
    let boot = boot_id();
    let mut found = Vec::new();
    let Ok(boots) = fs::read_dir(store.root().join(TREES)) else {
        return found;
    };
    for b in boots.flatten() {
        let this_boot = boot.as_deref() == b.file_name().to_str();
        let Ok(functions) = fs::read_dir(b.path()) else {
            found.push(stray(b.path(), this_boot));
            continue;
        };
        for f in functions.flatten() {
            let function = f.file_name().to_string_lossy().into_owned();
            let Ok(trees) = fs::read_dir(f.path()) else {
                found.push(stray(f.path(), this_boot));
                continue;
            };
            for t in trees.flatten() {
                let digest = t
                    .file_name()
                    .to_str()
                    .and_then(|n| n.split_once('-'))
                    .and_then(|(hex, size)| Digest::from_hex(hex, size.parse().ok()?));
                found.push(Tree {
                    path: t.path(),
                    this_boot,
                    temporary: digest.is_none(),
                    function: function.clone(),
                    digest,
                });
            }
        }
    }
    found
}

fn stray(path: PathBuf, this_boot: bool) -> Tree {
    Tree {
        path,
        this_boot,
        temporary: true,
        function: String::new(),
        digest: None,
    }
}

/// Removes one tree (or leftover) and the boot and function folders it
/// leaves empty. Only under `gc`'s exclusive lock: a build may be using it.
pub fn remove(store: &Store, tree: &Tree) -> bool {
    fstree::remove_tree(&tree.path);
    let gone = fs::symlink_metadata(&tree.path).is_err();
    let base = store.root().join(TREES);
    let mut dir = tree.path.parent();
    while let Some(d) = dir {
        if d == base || !d.starts_with(&base) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    gone
}

#[cfg(test)]
mod tests;
