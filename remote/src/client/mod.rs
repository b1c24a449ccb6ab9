//! Remote caches: REAPI v2 over gRPC and Bazel's HTTP cache protocol, behind
//! one async API. They move action results and blobs between a server and
//! the local store; when to ask, whom to trust and what to do on failure is
//! the caller's business. Nothing a server sends can make this module panic,
//! and no blob enters the local CAS unless it hashes to the digest asked for.

mod blob_io;
mod endpoint;
mod error;
mod grpc;
mod http;
mod stall;
mod tls;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use error::RemoteError;
pub(crate) use error::server_text;
pub(crate) use grpc::Transport;
pub(crate) use grpc::names;
pub use grpc::{ExecutionCapabilities, GrpcRemote};
pub use http::HttpRemote;

use endpoint::Endpoint;
use strata_store::{Cas, Digest, DigestFunction, reapi};

/// The empty blob, never transferred: stored locally when asked for.
fn empty_blob(function: DigestFunction, digest: &Digest, cas: &Cas) -> Result<(), RemoteError> {
    let empty = function.of_bytes(b"");
    if *digest != empty {
        return Err(RemoteError::DigestMismatch {
            server: String::new(),
            expected: *digest,
            actual: Some(empty),
        });
    }
    cas.put_bytes(b"").map(|_| ()).map_err(RemoteError::Store)
}

/// `url` as messages and reports show it: the same text, less any user
/// info (`user:password@`), which is a credential. A URL that does not
/// parse is shown only if it cannot hold user info.
pub fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            // Only fails for URLs that cannot have user info.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) if url.contains('@') => "<an invalid URL>".to_string(),
        Err(_) => url.to_string(),
    }
}

/// Where a remote cache is and how to talk to it.
#[derive(Clone)]
pub struct RemoteConfig {
    /// `grpc://`, `grpcs://` (a path names the REAPI instance), `http://` or
    /// `https://` (a path is a prefix of every object's URL).
    pub url: String,
    /// Extra HTTP headers or gRPC metadata; values are secrets.
    pub headers: Vec<(String, String)>,
    /// Sent as `authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// PEM certificates trusted in addition to the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for a request to move: a whole small request, or the
    /// next piece of a streamed blob.
    pub timeout: Duration,
}

impl RemoteConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RemoteConfig {
            url: url.into(),
            headers: Vec::new(),
            bearer_token: None,
            ca_file: None,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Shows header names, never values, and whether a token is set.
impl fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = match Endpoint::parse(&self.url) {
            Ok(Endpoint::Http { shown, .. } | Endpoint::Grpc { shown, .. }) => shown,
            Err(_) => "<invalid URL>".to_string(),
        };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, _)| format!("{name}: <redacted>"))
            .collect();
        f.debug_struct("RemoteConfig")
            .field("url", &shown)
            .field("headers", &headers)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A connected remote cache; cheap to clone and share between tasks.
#[derive(Clone, Debug)]
pub enum Remote {
    Http(HttpRemote),
    Grpc(GrpcRemote),
}

impl Remote {
    /// Sets up a client: for HTTP no request is made; for gRPC the
    /// connection is opened (and TLS negotiated) within the time limit.
    pub async fn connect(cfg: &RemoteConfig) -> Result<Remote, RemoteError> {
        match Endpoint::parse(&cfg.url)? {
            Endpoint::Http { base, shown } => Ok(Remote::Http(HttpRemote::new(cfg, base, shown)?)),
            Endpoint::Grpc {
                origin,
                tls,
                instance,
                shown,
            } => Ok(Remote::Grpc(
                GrpcRemote::connect(cfg, origin, tls, instance, shown).await?,
            )),
        }
    }

    /// The server as shown in messages (no credentials).
    pub fn server(&self) -> &str {
        match self {
            Remote::Http(r) => r.server(),
            Remote::Grpc(r) => r.server(),
        }
    }

    /// The digest functions the server's cache accepts (gRPC
    /// GetCapabilities; an empty list there means SHA-256 alone). `None`
    /// for HTTP, whose protocol cannot say.
    pub async fn digest_functions(&self) -> Result<Option<Vec<DigestFunction>>, RemoteError> {
        match self {
            Remote::Http(_) => Ok(None),
            Remote::Grpc(r) => r.digest_functions().await.map(Some),
        }
    }

    /// The result cached for action `key`; `Ok(None)` is a miss.
    pub async fn get_action_result(
        &self,
        function: DigestFunction,
        key: &Digest,
    ) -> Result<Option<reapi::ActionResult>, RemoteError> {
        match self {
            Remote::Http(r) => r.get_action_result(key).await,
            Remote::Grpc(r) => r.get_action_result(function, key).await,
        }
    }

    pub async fn update_action_result(
        &self,
        function: DigestFunction,
        key: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), RemoteError> {
        match self {
            Remote::Http(r) => r.update_action_result(key, result).await,
            Remote::Grpc(r) => r.update_action_result(function, key, result).await,
        }
    }

    /// Which of `digests` the server lacks, each once, in the order given.
    pub async fn find_missing(
        &self,
        function: DigestFunction,
        digests: &[Digest],
    ) -> Result<Vec<Digest>, RemoteError> {
        // The empty blob is always present (REAPI), and some servers refuse
        // to store it (nginx answers an empty PUT with 500).
        let digests: Vec<Digest> = digests
            .iter()
            .copied()
            .filter(|d| d.size_bytes > 0)
            .collect();
        match self {
            Remote::Http(r) => r.find_missing(&digests).await,
            Remote::Grpc(r) => r.find_missing(function, &digests).await,
        }
    }

    /// Fetches one blob into `cas` (whose function must be `function`). Bytes
    /// that do not hash to `digest` are refused with
    /// [`RemoteError::DigestMismatch`] and nothing is stored. A blob already
    /// stored is not fetched.
    pub async fn download(
        &self,
        function: DigestFunction,
        digest: &Digest,
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        if digest.size_bytes == 0 {
            return empty_blob(function, digest, cas);
        }
        match self {
            Remote::Http(r) => r.download(function, digest, cas).await,
            Remote::Grpc(r) => r.download(function, digest, cas).await,
        }
    }

    /// [`Remote::download`] of several blobs, batched (gRPC) or concurrent;
    /// stops at the first failure, blobs already fetched staying stored.
    pub async fn download_many(
        &self,
        function: DigestFunction,
        digests: &[Digest],
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        let (empty, digests) = split_empty(digests);
        if let Some(empty) = empty {
            empty_blob(function, &empty, cas)?;
        }
        match self {
            Remote::Http(r) => r.download_many(function, &digests, cas).await,
            Remote::Grpc(r) => r.download_many(function, &digests, cas).await,
        }
    }

    /// Sends one stored blob. It is checked against `digest` as it is read:
    /// a corrupt local copy fails with [`RemoteError::Store`] before the
    /// server has received it whole.
    pub async fn upload(
        &self,
        function: DigestFunction,
        digest: &Digest,
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        if digest.size_bytes == 0 {
            return Ok(());
        }
        match self {
            Remote::Http(r) => r.upload(function, digest, cas).await,
            Remote::Grpc(r) => r.upload(function, digest, cas).await,
        }
    }

    /// [`Remote::upload`] of several blobs, batched (gRPC) or concurrent.
    pub async fn upload_many(
        &self,
        function: DigestFunction,
        digests: &[Digest],
        cas: &Cas,
    ) -> Result<(), RemoteError> {
        let (_, digests) = split_empty(digests);
        match self {
            Remote::Http(r) => r.upload_many(function, &digests, cas).await,
            Remote::Grpc(r) => r.upload_many(function, &digests, cas).await,
        }
    }
}

/// Every blob the stored tree `root` reaches: its folder records and its
/// files, each once (what an upload of it sends, or a download fetches).
pub fn tree_blobs(cas: &Cas, root: &Digest) -> Result<Vec<Digest>, String> {
    let mut blobs = vec![*root];
    for (_, entry) in strata_store::tree::walk(cas, root).map_err(|e| e.to_string())? {
        if let strata_store::tree::Entry::Dir { digest, .. }
        | strata_store::tree::Entry::File { digest, .. } = entry
        {
            blobs.push(digest);
        }
    }
    blobs.sort_by_key(|d| d.hash);
    blobs.dedup();
    Ok(blobs)
}

/// An empty blob among `digests` (never transferred, as by the single
/// calls), and the others.
fn split_empty(digests: &[Digest]) -> (Option<Digest>, Vec<Digest>) {
    let (empty, rest): (Vec<Digest>, Vec<Digest>) = digests.iter().partition(|d| d.size_bytes == 0);
    (empty.first().copied(), rest)
}

/// `digests` without repeats, in their first order.
fn dedup(digests: &[Digest]) -> Vec<Digest> {
    let mut seen = std::collections::HashSet::new();
    digests
        .iter()
        .filter(|d| seen.insert(**d))
        .copied()
        .collect()
}
