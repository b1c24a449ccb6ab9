//! A step's declared source files, as executors stage them: where the step
//! sees each, its digest, and the stat it had when hashed (so an edit during
//! the build is caught rather than run or stored).

use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use strata_store::Digest;

/// What the stat cache compares: a file whose stat differs may have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_s: i64,
    pub mtime_ns: i64,
    pub ctime_s: i64,
    pub ctime_ns: i64,
}

impl Stat {
    pub fn of(m: &Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_s: m.mtime(),
            mtime_ns: m.mtime_nsec(),
            ctime_s: m.ctime(),
            ctime_ns: m.ctime_nsec(),
        }
    }
}

/// One declared source of a target.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Where the step sees it, relative to its working folder.
    pub rel: String,
    pub abs: PathBuf,
    pub digest: Digest,
    pub executable: bool,
    /// The file's stat when hashed, to detect edits during the build.
    pub fingerprint: Stat,
}

impl SourceFile {
    /// Whether the file on disk is still the one that was hashed.
    pub fn unchanged(&self) -> bool {
        fs::metadata(&self.abs)
            .map(|m| Stat::of(&m) == self.fingerprint)
            .unwrap_or(false)
    }
}
