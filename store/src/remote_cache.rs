//! The remote cache as a build sees it: the seam between the engine, which
//! decides when to ask, and `strata-remote`, which speaks the protocols.
//!
//! Defined here, below both, so that the engine links no network crate: it
//! holds an `Arc<dyn RemoteCache>` and never learns whether the cache is
//! gRPC, HTTP or absent. The binary opens the cache (through a
//! [`RemoteOpener`], because the remote decides the digest function the
//! store is opened with) and hands it over.
//!
//! Every method is infallible by design: a remote cache never fails a
//! build. A failure is the implementation's to count and warn about; the
//! caller sees a miss.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;

use crate::{Cas, Digest, DigestFunction, Store, reapi};

/// A remote call's future, boxed so a trait object can return it and the
/// tasks awaiting it stay `Send`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a remote cache's warnings go (the build's observer).
pub type Warn = Arc<dyn Fn(&str) + Send + Sync>;

/// A check a cached result's output tree must pass before it is used,
/// supplied by the caller (the engine's declared outputs). It sees the
/// tree's folders only: it runs before any file is fetched, so a wrong
/// tree costs little. `Err` says why the entry is rejected.
pub trait OutputCheck: Send + Sync {
    fn check(&self, cas: &Cas, tree: &Digest) -> Result<(), String>;
}

/// A connected remote cache during one build.
pub trait RemoteCache: Send + Sync {
    /// The digest function agreed with the server; the store is opened in it.
    fn function(&self) -> DigestFunction;

    /// Called once the store is open in [`RemoteCache::function`]: the
    /// function is remembered beside the store, for later builds whose
    /// remote cannot be asked.
    fn remember_function(&self, store: &Store) -> std::io::Result<()>;

    /// On a local miss: the output tree cached for action `key`, downloaded
    /// and checked into `store` (with its local action-cache entry), or
    /// `None`. With `check`, an entry whose tree fails it is rejected.
    fn lookup<'a>(
        &'a self,
        store: &'a Store,
        key: &'a Digest,
        check: Option<&'a dyn OutputCheck>,
    ) -> BoxFuture<'a, Option<Digest>>;

    /// After a step ran: uploads its result in the background.
    fn upload(&self, store: &Store, key: Digest, result: reapi::ActionResult);

    /// Waits for the background uploads still running.
    fn finish(&self) -> BoxFuture<'_, ()>;

    /// What the cache did so far.
    fn stats(&self) -> RemoteStats;
}

/// What a build gets from [`RemoteOpener::open`].
pub struct Opened {
    /// `None` when no remote is configured, or it cannot be used (one
    /// warning said why).
    pub cache: Option<Arc<dyn RemoteCache>>,
    /// The digest function to open the store with.
    pub function: DigestFunction,
}

/// Opens the remote cache of a workspace, before the store: the remote
/// decides the digest function the store is opened in.
pub trait RemoteOpener: Send + Sync + fmt::Debug {
    /// Reads the workspace's remote settings (in `workspace_root`) and
    /// connects. `Err` is a usage error (bad settings); a remote that
    /// cannot be reached is no error, only a warning through `warn`.
    fn open<'a>(
        &'a self,
        workspace_root: &'a Path,
        store_dir: &'a Path,
        warn: Warn,
    ) -> BoxFuture<'a, Result<Opened, String>>;
}

/// What the remote cache did during a build.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RemoteStats {
    pub url: String,
    pub digest_function: String,
    pub hits: u64,
    pub misses: u64,
    /// Entries refused because no trusted key signed them.
    pub untrusted: u64,
    /// Downloaded blobs refused because their bytes did not match.
    pub refused_blobs: u64,
    /// Entries refused because they do not decode as an action result or
    /// their tree is not what the target declares.
    pub rejected_entries: u64,
    pub downloaded_bytes: u64,
    pub uploaded_bytes: u64,
    /// Action results uploaded.
    pub uploads: u64,
    pub errors: u64,
    /// Switched off after repeated failures (or unreachable at the start).
    pub switched_off: bool,
}
