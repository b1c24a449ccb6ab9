use std::error::Error;

use strata_store::{Digest, StoreError};

/// Every failure of a remote cache, naming the server (never a secret: no
/// user info, header value or token) and the action or blob concerned.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server could not be reached in time, or said it cannot serve now
    /// (5xx, UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED): the same
    /// request may succeed later.
    #[error("remote cache {server}: {what}: {reason}")]
    Unavailable {
        server: String,
        what: String,
        reason: String,
    },
    /// The server answered and said no (4xx, PERMISSION_DENIED,
    /// INVALID_ARGUMENT, ...): asking again will not help.
    #[error("remote cache {server} refused {what}: {reason}")]
    Refused {
        server: String,
        what: String,
        reason: String,
    },
    /// The server does not hold a blob that was asked for.
    #[error("remote cache {server}: {what}: not found")]
    NotFound { server: String, what: String },
    /// The server's answer does not follow the protocol.
    #[error("remote cache {server}: malformed answer to {what}: {reason}")]
    Protocol {
        server: String,
        what: String,
        reason: String,
    },
    /// The server sent bytes that are not the blob asked for; nothing was
    /// stored. `actual` is `None` when it sent more bytes than the blob has.
    #[error(
        "remote cache {server} sent wrong bytes for blob {expected}: {}",
        describe(actual)
    )]
    DigestMismatch {
        server: String,
        expected: Digest,
        actual: Option<Digest>,
    },
    /// The configuration cannot work (URL, CA file, header, digest function).
    #[error("remote cache: {reason}")]
    Config { reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn describe(actual: &Option<Digest>) -> String {
    match actual {
        Some(d) => format!("they hash to {d}"),
        None => "more bytes than its size".to_string(),
    }
}

impl RemoteError {
    /// Whether the same request may succeed later; everything else will fail
    /// again until something changes.
    pub fn is_transient(&self) -> bool {
        matches!(self, RemoteError::Unavailable { .. })
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        RemoteError::Config {
            reason: reason.into(),
        }
    }
}

/// Longest piece of server-supplied text kept in an error.
const TEXT_LIMIT: usize = 300;

/// Server-supplied text made safe to print: bounded, one line, no control
/// characters (a hostile server must not be able to flood or rewrite a
/// terminal).
pub(crate) fn server_text(text: &str) -> String {
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(TEXT_LIMIT)
        .collect();
    if text.trim().chars().count() > TEXT_LIMIT {
        out.push('…');
    }
    out
}

/// An error and its sources on one line: transport errors keep the useful
/// part ("connection refused") several sources down.
pub(crate) fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    server_text(&text)
}
