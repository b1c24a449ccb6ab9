//! Why bytes could not be read into a tree, or a tree written as bytes.

use strata_store::StoreError;

/// Why reading or writing a format failed. Its messages are the ones the
/// built-in rules show (`strata_rules::builtin::BuiltinError` wraps each
/// variant in its own of the same text).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// An archive entry (or similar) refused for safety, naming it.
    #[error("refused entry `{entry}`: {reason}")]
    Refused { entry: String, reason: String },
    /// Malformed or unsupported input.
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
