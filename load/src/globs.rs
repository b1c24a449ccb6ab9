//! Expanding `srcs` and `include` patterns inside the workspace.

use std::fs;
use std::path::{Component, Path, PathBuf};

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
    check_relative(pattern).map_err(GlobError::Pattern)?;
    let pattern = pattern.trim_start_matches("./");
    let parts: Vec<&str> = pattern
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let literal: Vec<&str> = parts.iter().take_while(|p| !has_meta(p)).copied().collect();
    let start = literal.iter().fold(base.to_path_buf(), |p, c| p.join(c));
    if !plainly_inside(&start, confine)
        && let Ok(real) = fs::canonicalize(&start)
        && !real.starts_with(confine)
    {
        return Err(outside(&start, &real));
    }

    if literal.len() == parts.len() {
        // No wildcard: a file, or every file of a folder.
        return match fs::metadata(&start) {
            Ok(m) if m.is_dir() => walk(base, &start, &|_| true, skip, true, usize::MAX, confine),
            Ok(_) => Ok(vec![rel_string(base, &start)?]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
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
    if !start.is_dir() {
        return Ok(Vec::new());
    }
    let depth = if suffix.contains("**") {
        usize::MAX
    } else {
        parts.len() - literal.len()
    };
    let found = walk(
        &start,
        &start,
        &|rel: &str| glob.is_match(rel),
        skip,
        false,
        depth,
        confine,
    )?;
    let prefix = rel_string(base, &start)?;
    Ok(found
        .into_iter()
        .map(|rel| {
            if prefix.is_empty() {
                rel
            } else {
                format!("{prefix}/{rel}")
            }
        })
        .collect())
}

/// Whether `path` is inside `confine` (canonical) without a symlink on the
/// way: spelled below it with plain names, none of them a symlink. Then it
/// is its own canonical form, and resolving it (a `readlink` per component
/// from `/`, for each of thousands of patterns) would find nothing new. One
/// `lstat` per component below `confine` instead; `false` sends the caller
/// to the full resolution.
fn plainly_inside(path: &Path, confine: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(confine) else {
        return false;
    };
    let mut at = confine.to_path_buf();
    for c in rest.components() {
        let Component::Normal(name) = c else {
            return false;
        };
        at.push(name);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return false,
            Ok(_) => {}
            // Missing: nothing to resolve; what exists above was checked.
            Err(_) => return true,
        }
    }
    true
}

thread_local! {
    static MATCHERS: std::cell::RefCell<std::collections::HashMap<String, globset::GlobMatcher>> =
        std::cell::RefCell::default();
}

fn matcher(pattern: &str) -> Result<globset::GlobMatcher, GlobError> {
    MATCHERS.with(|m| {
        if let Some(g) = m.borrow().get(pattern) {
            return Ok(g.clone());
        }
        let g = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| GlobError::Pattern(e.kind().to_string()))?
            .compile_matcher();
        m.borrow_mut().insert(pattern.to_string(), g.clone());
        Ok(g)
    })
}

fn walk(
    base: &Path,
    start: &Path,
    keep: &dyn Fn(&str) -> bool,
    skip: &[PathBuf],
    enter_hidden: bool,
    max_depth: usize,
    confine: &Path,
) -> Result<Vec<String>, GlobError> {
    let mut found = Vec::new();
    let walker = walkdir::WalkDir::new(start)
        .follow_links(false)
        .max_depth(max_depth)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !(e.file_type().is_dir()
                    && ((!enter_hidden && e.file_name() == ".git")
                        || skip.iter().any(|s| s == e.path())))
        });
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| start.to_path_buf());
            GlobError::Path {
                path,
                reason: e
                    .io_error()
                    .map(|io| io.to_string())
                    .unwrap_or_else(|| e.to_string()),
            }
        })?;
        let ft = entry.file_type();
        let is_file = if ft.is_symlink() {
            match fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => {
                    let real =
                        fs::canonicalize(entry.path()).map_err(|e| io_error(entry.path(), e))?;
                    if !real.starts_with(confine) && keep(&rel_string(base, entry.path())?) {
                        return Err(outside(entry.path(), &real));
                    }
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    let rel = rel_string(base, entry.path())?;
                    if !keep(&rel) {
                        continue;
                    }
                    let reason = if e.raw_os_error() == Some(libc::ELOOP) {
                        "symlink loop".to_string()
                    } else {
                        format!("symlink cannot be followed: {e}")
                    };
                    return Err(GlobError::Path {
                        path: entry.into_path(),
                        reason,
                    });
                }
            }
        } else {
            ft.is_file()
        };
        if !is_file {
            continue;
        }
        let rel = rel_string(base, entry.path())?;
        if keep(&rel) {
            found.push(rel);
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
