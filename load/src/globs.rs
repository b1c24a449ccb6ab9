//! Expanding `srcs` and `include` patterns inside the workspace.

use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use globset::GlobBuilder;

/// Why a pattern could not be expanded.
#[derive(Debug)]
pub enum GlobError {
    /// The pattern itself is malformed or leaves the workspace.
    Pattern(String),
    /// A file on the way could not be read, or has a name Strata cannot key.
    Path { path: PathBuf, reason: String },
}

pub fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Checks that `pattern` is relative and stays below its base folder.
pub fn check_relative(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("the pattern is empty".into());
    }
    let p = Path::new(pattern);
    if p.is_absolute() {
        return Err(format!("`{pattern}` is an absolute path"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("`{pattern}` leaves its folder with `..`"));
    }
    Ok(())
}

/// What a walk needs to know of a folder entry, as its folder lists it
/// (the kind of a symlink's target is looked up when it is met).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// Anything else (a fifo, a socket, a device): never a source.
    Other,
}

/// One entry of a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderEntry {
    pub name: OsString,
    pub kind: EntryKind,
}

/// How [`expand_in`] reads the folders it walks: [`Disk`] lists each one;
/// a cache (the engine's) may answer for a folder whose stat has not
/// changed since it listed it, as adding, removing or renaming an entry
/// changes its folder's modification time.
pub trait Folders: Sync {
    /// The entries of the folder `dir`, sorted by name bytes. `meta` is the
    /// folder's stat (its target's for a symlinked root), taken before.
    fn list(&self, dir: &Path, meta: &Metadata) -> io::Result<Arc<[FolderEntry]>>;

    /// The `lstat` of `dir`, a folder on the way to where a pattern starts
    /// (`src` of `src/app/*.c`). Patterns of many targets share those, so a
    /// reader may keep the stat of a plain folder for the rest of its run.
    fn on_the_way(&self, dir: &Path) -> io::Result<Metadata> {
        fs::symlink_metadata(dir)
    }
}

/// Reads every folder from the disk.
pub struct Disk;

impl Folders for Disk {
    fn list(&self, dir: &Path, _meta: &Metadata) -> io::Result<Arc<[FolderEntry]>> {
        read_folder(dir).map(Arc::from)
    }
}

/// The entries of `dir` as it is now, sorted by name bytes. The kind comes
/// from the listing itself where the file system gives it (`d_type`), so
/// a listing costs no stat per entry.
pub fn read_folder(dir: &Path) -> io::Result<Vec<FolderEntry>> {
    let mut entries = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        let kind = if ft.is_file() {
            EntryKind::File
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::Other
        };
        entries.push(FolderEntry {
            name: e.file_name(),
            kind,
        });
    }
    entries.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(entries)
}

/// The files under `base` that `pattern` matches, as sorted `/`-joined paths
/// relative to `base`. A pattern without wildcards naming a folder matches
/// every file below it. Folders in `skip` (the output folder, the store) and
/// `.git` are never entered by a wildcard. Symlinks to files are followed;
/// symlinks to folders are not descended into.
///
/// Nothing outside `confine` (the workspace root, canonical) is matched: a
/// symlink leading out of it, or a pattern folder reached through one, is an
/// error naming it, so a checked-out tree cannot hand a step a file such as
/// `~/.ssh/id_rsa`.
pub fn expand(
    base: &Path,
    pattern: &str,
    skip: &[PathBuf],
    confine: &Path,
) -> Result<Vec<String>, GlobError> {
    expand_in(&Disk, base, pattern, skip, confine)
}

/// [`expand`], reading folders through `folders`.
pub fn expand_in(
    folders: &dyn Folders,
    base: &Path,
    pattern: &str,
    skip: &[PathBuf],
    confine: &Path,
) -> Result<Vec<String>, GlobError> {
    check_relative(pattern).map_err(GlobError::Pattern)?;
    let pattern = pattern.trim_start_matches("./");
    let parts: Vec<&str> = pattern
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let literal: Vec<&str> = parts.iter().take_while(|p| !has_meta(p)).copied().collect();
    let start = literal.iter().fold(base.to_path_buf(), |p, c| p.join(c));
    // The start folder's path relative to `base`, which its files' paths
    // begin with.
    let prefix = literal.join("/");
    // The stat of `start` (following a symlink).
    let start_meta = match plainly_inside(folders, &start, confine) {
        Plainly::Inside(lstat) => lstat,
        Plainly::NotProven => {
            if let Ok(real) = fs::canonicalize(&start)
                && !real.starts_with(confine)
            {
                return Err(outside(&start, &real));
            }
            fs::metadata(&start)
        }
    };

    if literal.len() == parts.len() {
        // No wildcard: a file, or every file of a folder.
        return match start_meta {
            Ok(m) if m.is_dir() => {
                let found = walk(
                    folders,
                    &start,
                    &m,
                    &|_| true,
                    skip,
                    true,
                    usize::MAX,
                    confine,
                )?;
                Ok(prefixed(&prefix, found))
            }
            Ok(_) => Ok(vec![rel_string(base, &start)?]),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A dangling symlink is an error worth naming; a missing file matches nothing.
                if fs::symlink_metadata(&start).is_ok() {
                    Err(GlobError::Path {
                        path: start,
                        reason: "symlink points to nothing".into(),
                    })
                } else {
                    Ok(Vec::new())
                }
            }
            Err(e) => Err(io_error(&start, e)),
        };
    }
    // Match the wildcard part relative to the literal folder it starts in:
    // patterns of many targets share it (`src/<target>/*.txt`), so one
    // compiled matcher serves them all.
    let suffix = parts[literal.len()..].join("/");
    let glob = matcher(&suffix)?;
    let Some(start_meta) = start_meta.ok().filter(|m| m.is_dir()) else {
        return Ok(Vec::new());
    };
    let depth = if suffix.contains("**") {
        usize::MAX
    } else {
        parts.len() - literal.len()
    };
    let found = walk(
        folders,
        &start,
        &start_meta,
        &|rel: &str| glob.is_match(rel),
        skip,
        false,
        depth,
        confine,
    )?;
    Ok(prefixed(&prefix, found))
}

/// `found` (paths relative to a folder) relative to `base`, the folder
/// being `prefix` below it.
fn prefixed(prefix: &str, found: Vec<String>) -> Vec<String> {
    if prefix.is_empty() {
        return found;
    }
    found
        .into_iter()
        .map(|rel| format!("{prefix}/{rel}"))
        .collect()
}

/// What [`plainly_inside`] found.
enum Plainly {
    /// Inside, with the path's own stat (`lstat`, which is its stat, as it
    /// is no symlink); `NotFound` if it does not exist.
    Inside(io::Result<Metadata>),
    /// A symlink on the way, a component that cannot be read, or a path
    /// not spelled below `confine`: the caller resolves it.
    NotProven,
}

/// Whether `path` is inside `confine` (canonical) without a symlink on the
/// way: spelled below it with plain names, none of them a symlink. Then it
/// is its own canonical form, and resolving it (a `readlink` per component
/// from `/`, for each of thousands of patterns) would find nothing new. One
/// `lstat` per component below `confine` instead, the last of which is the
/// path's own stat.
fn plainly_inside(folders: &dyn Folders, path: &Path, confine: &Path) -> Plainly {
    let Ok(rest) = path.strip_prefix(confine) else {
        return Plainly::NotProven;
    };
    let mut at = confine.to_path_buf();
    let mut last = None;
    let mut components = rest.components().peekable();
    while let Some(c) = components.next() {
        let Component::Normal(name) = c else {
            return Plainly::NotProven;
        };
        at.push(name);
        let lstat = match components.peek() {
            Some(_) => folders.on_the_way(&at),
            None => fs::symlink_metadata(&at),
        };
        match lstat {
            Ok(m) if m.file_type().is_symlink() => return Plainly::NotProven,
            Ok(m) => last = Some(m),
            // Missing: nothing to resolve; what exists above was checked.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Plainly::Inside(Err(e)),
            Err(_) => return Plainly::NotProven,
        }
    }
    match last {
        Some(m) => Plainly::Inside(Ok(m)),
        // `path` is `confine` itself.
        None => Plainly::Inside(fs::metadata(path)),
    }
}

thread_local! {
    static MATCHERS: std::cell::RefCell<std::collections::HashMap<String, Arc<globset::GlobMatcher>>> =
        std::cell::RefCell::default();
}

/// The compiled matcher of `pattern`, shared by the patterns of one thread
/// that end alike (`*.txt`). Shared, not cloned: a clone of a matcher
/// starts with a cold regex cache, which costs more than the match.
fn matcher(pattern: &str) -> Result<Arc<globset::GlobMatcher>, GlobError> {
    MATCHERS.with(|m| {
        if let Some(g) = m.borrow().get(pattern) {
            return Ok(g.clone());
        }
        let g = Arc::new(
            GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| GlobError::Pattern(e.kind().to_string()))?
                .compile_matcher(),
        );
        m.borrow_mut().insert(pattern.to_string(), g.clone());
        Ok(g)
    })
}

/// A folder being walked: its entries and how far through them.
struct Frame {
    dir: PathBuf,
    /// The folder's path relative to the walk's start (`None` if it is not
    /// UTF-8: a file below it is an error, as its path could not be keyed).
    rel: Option<String>,
    entries: Arc<[FolderEntry]>,
    next: usize,
    /// The depth of its entries (the start's are 1).
    depth: usize,
}

impl Frame {
    /// The path of `name` (an entry of this folder) relative to the start.
    fn rel_of(&self, name: &OsStr) -> Result<String, GlobError> {
        let not_utf8 = || GlobError::Path {
            path: self.dir.join(name),
            reason: "file name is not valid UTF-8 (keys and trees need UTF-8 names)".into(),
        };
        let name = name.to_str().ok_or_else(not_utf8)?;
        match &self.rel {
            Some(rel) if rel.is_empty() => Ok(name.to_string()),
            Some(rel) => Ok(format!("{rel}/{name}")),
            None => Err(not_utf8()),
        }
    }
}

/// The files below `start` (whose stat is `start_meta`) that `keep`
/// accepts, as `/`-joined paths relative to it, depth first with each
/// folder's entries in name order, at most `max_depth` levels down.
#[allow(clippy::too_many_arguments)]
fn walk(
    folders: &dyn Folders,
    start: &Path,
    start_meta: &Metadata,
    keep: &dyn Fn(&str) -> bool,
    skip: &[PathBuf],
    enter_hidden: bool,
    max_depth: usize,
    confine: &Path,
) -> Result<Vec<String>, GlobError> {
    let mut found = Vec::new();
    if max_depth == 0 {
        return Ok(found);
    }
    let entries = folders
        .list(start, start_meta)
        .map_err(|e| io_error(start, e))?;
    let mut stack = vec![Frame {
        dir: start.to_path_buf(),
        rel: Some(String::new()),
        entries,
        next: 0,
        depth: 1,
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(entry) = frame.entries.get(frame.next) else {
            stack.pop();
            continue;
        };
        frame.next += 1;
        let frame = &*frame;
        match entry.kind {
            EntryKind::File => {
                let rel = frame.rel_of(&entry.name)?;
                if keep(&rel) {
                    found.push(rel);
                }
            }
            EntryKind::Dir => {
                if frame.depth >= max_depth || (!enter_hidden && entry.name == ".git") {
                    continue;
                }
                let dir = frame.dir.join(&entry.name);
                if skip.contains(&dir) {
                    continue;
                }
                let meta = fs::symlink_metadata(&dir).map_err(|e| io_error(&dir, e))?;
                let entries = folders.list(&dir, &meta).map_err(|e| io_error(&dir, e))?;
                let rel = frame.rel_of(&entry.name).ok();
                let depth = frame.depth + 1;
                stack.push(Frame {
                    dir,
                    rel,
                    entries,
                    next: 0,
                    depth,
                });
            }
            EntryKind::Symlink => {
                let path = frame.dir.join(&entry.name);
                match fs::metadata(&path) {
                    Ok(m) if m.is_file() => {
                        let real = fs::canonicalize(&path).map_err(|e| io_error(&path, e))?;
                        let rel = frame.rel_of(&entry.name)?;
                        if !keep(&rel) {
                            continue;
                        }
                        if !real.starts_with(confine) {
                            return Err(outside(&path, &real));
                        }
                        found.push(rel);
                    }
                    // A symlink to a folder is not descended into.
                    Ok(_) => {}
                    Err(e) => {
                        let rel = frame.rel_of(&entry.name)?;
                        if !keep(&rel) {
                            continue;
                        }
                        let reason = if e.raw_os_error() == Some(libc::ELOOP) {
                            "symlink loop".to_string()
                        } else {
                            format!("symlink cannot be followed: {e}")
                        };
                        return Err(GlobError::Path { path, reason });
                    }
                }
            }
            EntryKind::Other => {}
        }
    }
    Ok(found)
}

fn outside(path: &Path, real: &Path) -> GlobError {
    GlobError::Path {
        path: path.to_path_buf(),
        reason: format!(
            "leads outside the workspace (to {}) through a symlink",
            real.display()
        ),
    }
}

fn rel_string(base: &Path, path: &Path) -> Result<String, GlobError> {
    let rel = path.strip_prefix(base).unwrap_or(path);
    let s = rel.to_str().ok_or_else(|| GlobError::Path {
        path: path.to_path_buf(),
        reason: "file name is not valid UTF-8 (keys and trees need UTF-8 names)".into(),
    })?;
    Ok(s.to_string())
}

fn io_error(path: &Path, e: std::io::Error) -> GlobError {
    GlobError::Path {
        path: path.to_path_buf(),
        reason: if e.raw_os_error() == Some(libc::ELOOP) {
            "symlink loop".into()
        } else {
            e.to_string()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_in_one_folder_and_double_star_descends() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a.txt", "b.txt", "sub/c.txt", "sub/deep/d.txt", "e.md"] {
            let p = d.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        assert_eq!(
            expand(d.path(), "*.txt", &[], d.path()).unwrap(),
            ["a.txt", "b.txt"]
        );
        assert_eq!(
            expand(d.path(), "**/*.txt", &[], d.path()).unwrap(),
            ["a.txt", "b.txt", "sub/c.txt", "sub/deep/d.txt"]
        );
        assert_eq!(
            expand(d.path(), "sub", &[], d.path()).unwrap(),
            ["sub/c.txt", "sub/deep/d.txt"]
        );
        assert!(
            expand(d.path(), "nothing/*.c", &[], d.path())
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            expand(d.path(), "../x", &[], d.path()),
            Err(GlobError::Pattern(_))
        ));
        assert!(matches!(
            expand(d.path(), "/etc/passwd", &[], d.path()),
            Err(GlobError::Pattern(_))
        ));
    }

    #[test]
    fn symlink_loops_are_errors_not_hangs() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("b", d.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", d.path().join("b")).unwrap();
        assert!(matches!(
            expand(d.path(), "*", &[], d.path()),
            Err(GlobError::Path { .. })
        ));
    }

    #[test]
    fn symlinks_out_of_the_workspace_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("id_rsa"), "secret").unwrap();
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("ok.txt"), "fine").unwrap();
        std::os::unix::fs::symlink(outside.path().join("id_rsa"), d.path().join("key.txt"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("dir")).unwrap();
        std::os::unix::fs::symlink("ok.txt", d.path().join("inside.txt")).unwrap();
        let ws = fs::canonicalize(d.path()).unwrap();
        assert!(matches!(
            expand(&ws, "*.txt", &[], &ws),
            Err(GlobError::Path { .. })
        ));
        assert!(matches!(
            expand(&ws, "key.txt", &[], &ws),
            Err(GlobError::Path { .. })
        ));
        assert!(matches!(
            expand(&ws, "dir/*", &[], &ws),
            Err(GlobError::Path { .. })
        ));
        assert_eq!(expand(&ws, "inside.txt", &[], &ws).unwrap(), ["inside.txt"]);
    }
}
