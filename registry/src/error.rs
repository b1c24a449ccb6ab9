//! Everything that can go wrong in a pull, worded for the person running the
//! build. No message ever contains a credential or a token: requests carry
//! them only in headers, and no header is ever quoted.

use std::fmt;

/// A failed pull. `registry` is `host[:port]`, `repository` the path in it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable { registry: String, reason: String },

    #[error("{what} not found in {registry}/{repository}")]
    NotFound {
        registry: String,
        repository: String,
        /// e.g. `manifest sha256:...` or `layer 2 sha256:...`
        what: String,
    },

    #[error("registry {registry} refused access to {repository}: {reason}")]
    Unauthorized {
        registry: String,
        repository: String,
        reason: String,
    },

    #[error("registry {registry} answered {status} for {what} of {repository}{detail}")]
    Status {
        registry: String,
        repository: String,
        what: String,
        status: u16,
        /// The registry's own error message, if it sent one (`: ...`).
        detail: Detail,
    },

    #[error(
        "{what} from {registry}: content does not match its digest: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        registry: String,
        /// Which blob, e.g. `layer 1 of 3` or `manifest`, with its media type.
        what: String,
        expected: String,
        actual: String,
    },

    #[error("{what} from {registry} is larger than the {limit} bytes allowed")]
    TooLarge {
        registry: String,
        what: String,
        limit: u64,
    },

    #[error("{what} from {registry} is not usable: {reason}")]
    BadManifest {
        registry: String,
        what: String,
        reason: String,
    },

    #[error(
        "image index {digest} in {registry}/{repository} has no manifest for platform {platform}; it has: {}",
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )]
    NoMatchingPlatform {
        registry: String,
        repository: String,
        digest: String,
        platform: String,
        available: Vec<String>,
    },

    #[error(
        "image {digest} in {registry}/{repository} is for {actual}, not {platform} (the platform asked for)"
    )]
    WrongPlatform {
        registry: String,
        repository: String,
        digest: String,
        platform: String,
        actual: String,
    },

    #[error("invalid platform `{0}`: expected os/architecture[/variant], e.g. linux/amd64")]
    BadPlatform(String),

    #[error("authentication with {registry} failed: {reason}")]
    Token { registry: String, reason: String },

    #[error("cannot store {what}: {source}")]
    Store {
        what: String,
        #[source]
        source: StoreFailure,
    },

    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// Either side of storing a blob can fail: the writes (plain I/O) or the
/// store's own bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] strata_store::StoreError),
}

/// The registry's explanation of an error status, rendered as `: <text>` or
/// nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Detail(pub Option<String>);

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(text) => write!(f, ": {text}"),
            None => Ok(()),
        }
    }
}

impl RegistryError {
    /// Whether trying again could help: a network failure or a server that
    /// said so (5xx, 429). Never a wrong digest, a 4xx or a local failure.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
