//! What can go wrong talking to the Docker Engine.

use strata_formats::FormatError;
use strata_store::StoreError;
use strata_store::tree::EditError;

/// Why a Docker operation failed; each names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No engine answers at `host`.
    #[error(
        "cannot reach the Docker Engine at {host}: {reason}\n  hint: start dockerd (e.g. scripts/docker-up.sh), or set DOCKER_HOST to a running engine"
    )]
    Unreachable { host: String, reason: String },
    /// The engine refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// A request succeeded but its outcome is not what was asked for
    /// (an image missing after a load, a reference that is not pinned, ...).
    #[error("{what}: {reason}")]
    Refused { what: String, reason: String },
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
    /// An exported file system that the `extract` rules refuse.
    #[error("{what}: {source}")]
    Archive {
        what: String,
        #[source]
        source: FormatError,
    },
    #[error("{what}: {source}")]
    Tree {
        what: String,
        #[source]
        source: EditError,
    },
    /// The container ran past its time limit and was removed.
    #[error("the container ran past its time limit of {limit:?} and was removed")]
    TimedOut { limit: std::time::Duration },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl DockerError {
    pub(crate) fn api(
        what: impl Into<String>,
    ) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        let what = what.into();
        move |source| DockerError::Api { what, source }
    }

    pub(crate) fn store(what: impl Into<String>) -> impl FnOnce(StoreError) -> DockerError {
        let what = what.into();
        move |source| DockerError::Store { what, source }
    }

    pub(crate) fn tree(what: impl Into<String>) -> impl FnOnce(EditError) -> DockerError {
        let what = what.into();
        move |source| DockerError::Tree { what, source }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DockerError {
        let what = what.into();
        move |source| DockerError::Io { what, source }
    }

    pub(crate) fn refused(what: impl Into<String>, reason: impl Into<String>) -> DockerError {
        DockerError::Refused {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// The HTTP status of an engine's error answer, if it was one.
pub(crate) fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}
