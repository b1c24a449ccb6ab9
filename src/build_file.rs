//! Which BUILD file a command works on: the one named with `-f`, else the
//! nearest `BUILD.yaml` in the current folder or a folder above it, as git,
//! cargo and bazel find theirs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::report;

/// The BUILD file's name when none is given.
const NAME: &str = "BUILD.yaml";

/// `-f FILE` as given (relative to the current folder), else the nearest
/// `BUILD.yaml` upward; a usage error when there is none.
pub fn resolve(file: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    if let Some(file) = file {
        return Ok(file);
    }
    let cwd = std::env::current_dir()
        .map_err(|e| report::usage_error(&format!("cannot read the current folder: {e}")))?;
    nearest(&cwd).ok_or_else(|| {
        report::usage_error(&format!(
            "no {NAME} in {} or any folder above it (name one with -f FILE)",
            cwd.display()
        ))
    })
}

/// `BUILD.yaml` in `start` or the closest folder above it that has one.
fn nearest(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(NAME))
        .find(|file| file.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_build_file_upward_wins() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(d.path().join(NAME), "").unwrap();
        assert_eq!(nearest(&deep), Some(d.path().join(NAME)));
        std::fs::write(d.path().join("a").join(NAME), "").unwrap();
        assert_eq!(nearest(&deep), Some(d.path().join("a").join(NAME)));
        // A folder of that name is not a BUILD file.
        std::fs::create_dir_all(deep.join(NAME)).unwrap();
        assert_eq!(nearest(&deep), Some(d.path().join("a").join(NAME)));
    }
}
