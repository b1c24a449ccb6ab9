use std::io;
use std::path::PathBuf;

use crate::Digest;

/// Every failure of the store, with the object or path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("object {digest} is missing from the store")]
    Missing { digest: Digest },
    #[error("object {digest} is corrupt: its content hashes to {actual}")]
    Corrupt { digest: Digest, actual: Digest },
    #[error("object {digest} does not decode as {what}: {reason}")]
    Decode {
        digest: Digest,
        what: &'static str,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// A folder on disk nests deeper than a tree may (`tree::MAX_DEPTH`).
    #[error(
        "`{path}` holds folders more than {limit} levels deep; Strata stores trees at most {limit} levels deep"
    )]
    TooDeep {
        /// The first levels of the offending path, relative to the capture's base.
        path: String,
        limit: usize,
    },
    #[error("store at {path} has format `{found}`, this strata expects `{expected}`")]
    Version {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
}

impl StoreError {
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// True when the failure was the disk running out of space, so callers can
    /// say so plainly.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
