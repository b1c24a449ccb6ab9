//! The remote cache during a build: looked up when the local store misses,
//! filled after a step runs, and never fatal.
//!
//! Every call has a timeout and is retried with backoff when the failure is
//! transient. The first failure costs one warning; after
//! `SWITCH_OFF_AFTER` failures in a row the remote is switched off for the
//! rest of the build, which then continues locally. Every downloaded blob is
//! hashed before it enters the local store; an entry whose blobs are
//! missing, or (with trusted keys) that no trusted key signed, is a miss.
//! An entry that does not decode, or whose tree is not what the target
//! declares, is rejected: counted, warned about once, and never recorded
//! locally. A blob refused for its bytes is uploaded again once a step has
//! made it, though the server says it has it, so the server heals.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_store::remote_cache::{self, BoxFuture, OutputCheck, RemoteStats, Warn};
use strata_store::tree::read_directory;
use strata_store::{Digest, DigestFunction, Store, reapi};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{Remote, RemoteError, without_credentials};
use crate::config::RemoteSettings;
use crate::{sign, store_function};

const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const SWITCH_OFF_AFTER: u32 = 3;

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    untrusted: AtomicU64,
    refused_blobs: AtomicU64,
    rejected_entries: AtomicU64,
    downloaded_bytes: AtomicU64,
    uploaded_bytes: AtomicU64,
    uploads: AtomicU64,
    errors: AtomicU64,
}

/// The remote cache of one build: [`remote_cache::RemoteCache`] over a
/// [`Remote`] client. Cheap to clone.
#[derive(Clone)]
pub struct RemoteCache {
    inner: Arc<Inner>,
}

struct Inner {
    remote: Remote,
    /// The URL as shown, without credentials.
    url: String,
    function: DigestFunction,
    settings: RemoteSettings,
    counters: Counters,
    consecutive_failures: Mutex<u32>,
    switched_off: AtomicBool,
    warned: AtomicBool,
    /// Rejected entries have their own warning: a failure warned about
    /// earlier must not hide that the cache holds wrong results.
    warned_rejected: AtomicBool,
    /// Blobs whose download did not hash to their digest: the server's copy
    /// is bad, so they are uploaded even when it says it has them.
    bad_on_server: Mutex<HashSet<Digest>>,
    warn: Warn,
    transfers: Arc<Semaphore>,
    uploads: Mutex<JoinSet<()>>,
}

/// Connects and agrees on a digest function. Returns the cache (`None` when
/// it cannot be used: one warning says why) and the function the build uses.
/// `held` is the function the local store holds its results in: when the
/// remote cannot be asked, the build goes on in it, so its results count.
pub async fn open(
    settings: RemoteSettings,
    held: Option<DigestFunction>,
    warn: Warn,
) -> (Option<RemoteCache>, DigestFunction) {
    // Shown in warnings and stats, so never with its user info.
    let url = without_credentials(&settings.config.url);
    let fallback = settings
        .digest_function
        .or(held)
        .unwrap_or(DigestFunction::Blake3);
    let unusable = |why: String| {
        warn(&format!(
            "remote cache {url} is not used: {why}; building with the local store only"
        ));
    };
    let remote = match tokio::time::timeout(
        settings.config.timeout,
        Remote::connect(&settings.config),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            unusable(e.to_string());
            return (None, fallback);
        }
        Err(_) => {
            unusable("connecting timed out".into());
            return (None, fallback);
        }
    };
    let function = match settings.digest_function {
        Some(f) => f,
        None => {
            match tokio::time::timeout(settings.config.timeout, remote.digest_functions()).await {
                Ok(Ok(offered)) => {
                    // An empty or absent list means SHA-256 only (REAPI).
                    let offered = offered
                        .filter(|l| !l.is_empty())
                        .unwrap_or_else(|| vec![DigestFunction::Sha256]);
                    if offered.contains(&DigestFunction::Blake3) {
                        DigestFunction::Blake3
                    } else if offered.contains(&DigestFunction::Sha256) {
                        DigestFunction::Sha256
                    } else {
                        unusable("it offers neither BLAKE3 nor SHA-256".into());
                        return (None, fallback);
                    }
                }
                Ok(Err(e)) => {
                    unusable(format!("GetCapabilities failed: {e}"));
                    return (None, fallback);
                }
                Err(_) => {
                    unusable("GetCapabilities timed out".into());
                    return (None, fallback);
                }
            }
        }
    };
    let transfers = Arc::new(Semaphore::new(settings.concurrency));
    let cache = Inner {
        remote,
        url,
        function,
        settings,
        counters: Counters::default(),
        consecutive_failures: Mutex::new(0),
        switched_off: AtomicBool::new(false),
        warned: AtomicBool::new(false),
        warned_rejected: AtomicBool::new(false),
        bad_on_server: Mutex::new(HashSet::new()),
        warn,
        transfers,
        uploads: Mutex::new(JoinSet::new()),
    };
    (
        Some(RemoteCache {
            inner: Arc::new(cache),
        }),
        function,
    )
}

/// Why a lookup did not give a result.
enum Miss {
    /// Not there, not trusted, incomplete: counted, no warning.
    Quiet,
    /// The remote failed: already counted and warned about.
    Failed,
    /// The entry is garbage or not this target's result.
    Rejected(String),
}

impl remote_cache::RemoteCache for RemoteCache {
    fn function(&self) -> DigestFunction {
        self.inner.function
    }

    fn remember_function(&self, store: &Store) -> std::io::Result<()> {
        store_function::remember(store)
    }

    fn lookup<'a>(
        &'a self,
        store: &'a Store,
        key: &'a Digest,
        check: Option<&'a dyn OutputCheck>,
    ) -> BoxFuture<'a, Option<Digest>> {
        Box::pin(self.inner.lookup(store, key, check))
    }

    fn upload(&self, store: &Store, key: Digest, result: reapi::ActionResult) {
        self.inner.upload(store, key, result);
    }

    fn finish(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.inner.finish())
    }

    fn stats(&self) -> RemoteStats {
        self.inner.stats()
    }
}

impl Inner {
    fn stats(&self) -> RemoteStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RemoteStats {
            url: self.url.clone(),
            digest_function: self.function.to_string(),
            hits: get(&c.hits),
            misses: get(&c.misses),
            untrusted: get(&c.untrusted),
            refused_blobs: get(&c.refused_blobs),
            rejected_entries: get(&c.rejected_entries),
            downloaded_bytes: get(&c.downloaded_bytes),
            uploaded_bytes: get(&c.uploaded_bytes),
            uploads: get(&c.uploads),
            errors: get(&c.errors),
            switched_off: self.switched_off.load(Ordering::Relaxed),
        }
    }

    fn warn_once(&self, message: String) {
        if !self.warned.swap(true, Ordering::SeqCst) {
            (self.warn)(&message);
        }
    }

    /// Records a failed call: one warning for the build, and the remote is
    /// switched off after repeated failures.
    fn failed(&self, what: &str, e: &RemoteError) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let mut n = self.consecutive_failures.lock().expect("not poisoned");
        *n += 1;
        self.warn_once(format!(
            "remote cache {}: {what} failed ({e}); the build goes on locally, and the remote is switched off after {SWITCH_OFF_AFTER} failures in a row",
            self.url
        ));
        if *n >= SWITCH_OFF_AFTER {
            self.switched_off.store(true, Ordering::SeqCst);
        }
    }

    /// One remote call with timeout and retries; `Err` after a transient
    /// failure that exhausted its retries (already counted) or a refusal.
    async fn call<'a, T, F>(&'a self, what: &str, f: F) -> Result<T, RemoteError>
    where
        F: Fn() -> BoxFuture<'a, Result<T, RemoteError>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            if self.switched_off.load(Ordering::SeqCst) {
                return Err(RemoteError::Unavailable {
                    server: self.url.clone(),
                    what: what.to_string(),
                    reason: "switched off after repeated failures".into(),
                });
            }
            let outcome = match tokio::time::timeout(self.settings.config.timeout, f()).await {
                Ok(r) => r,
                Err(_) => Err(RemoteError::Unavailable {
                    server: self.url.clone(),
                    what: what.to_string(),
                    reason: format!(
                        "no answer within {} s",
                        self.settings.config.timeout.as_secs()
                    ),
                }),
            };
            match outcome {
                Ok(v) => {
                    *self.consecutive_failures.lock().expect("not poisoned") = 0;
                    return Ok(v);
                }
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                    attempt += 1;
                }
                Err(e) => {
                    if e.is_transient() {
                        self.failed(what, &e);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The output of `key` from the remote, downloaded and checked into the
    /// local store (with its local action-cache entry), or `None`. With
    /// `declared` (the outputs the target declares), the entry's tree must pass it.
    async fn lookup(
        self: &Arc<Self>,
        store: &Store,
        key: &Digest,
        declared: Option<&dyn OutputCheck>,
    ) -> Option<Digest> {
        if self.switched_off.load(Ordering::SeqCst) {
            return None;
        }
        match self.fetch(store, key, declared).await {
            Ok(output) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(output)
            }
            Err(Miss::Quiet) => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(Miss::Failed) => None,
            Err(Miss::Rejected(why)) => {
                self.counters
                    .rejected_entries
                    .fetch_add(1, Ordering::Relaxed);
                if !self.warned_rejected.swap(true, Ordering::SeqCst) {
                    (self.warn)(&format!(
                        "remote cache {}: rejected the entry for action {} ({why}); such steps run locally and their results are never recorded from it",
                        self.url,
                        key.hex()
                    ));
                }
                None
            }
        }
    }

    async fn fetch(
        self: &Arc<Self>,
        store: &Store,
        key: &Digest,
        declared: Option<&dyn OutputCheck>,
    ) -> Result<Digest, Miss> {
        let f = self.function;
        let failed = |e: RemoteError| match e {
            e if e.is_transient() => Miss::Failed,
            RemoteError::Protocol { reason, .. } => Miss::Rejected(reason),
            _ => Miss::Quiet,
        };
        let result = self
            .call("looking up a result", || {
                Box::pin(self.remote.get_action_result(f, key))
            })
            .await
            .map_err(failed)?
            .ok_or(Miss::Quiet)?;
        if result.exit_code != 0 {
            return Err(Miss::Quiet);
        }
        if !self.settings.trusted_keys.is_empty() && !self.trusted(store, key, &result).await? {
            self.counters.untrusted.fetch_add(1, Ordering::Relaxed);
            return Err(Miss::Quiet);
        }
        // Strata's results name their tree; an entry without one is not
        // a result it can use (nor one it wrote).
        let output = result
            .output_directories
            .first()
            .and_then(|d| d.root_directory_digest.as_ref())
            .and_then(Digest::from_proto)
            .ok_or_else(|| Miss::Rejected("it names no output tree".into()))?;
        // The tree's folders first (they name everything else), then every
        // file and the logs, concurrently.
        let mut folders = vec![output];
        let mut files: Vec<Digest> = Vec::new();
        while let Some(d) = folders.pop() {
            self.download(store, &d).await?;
            let dir = read_directory(store.cas(), &d)
                .map_err(|e| Miss::Rejected(format!("its tree is malformed: {e}")))?;
            for sub in &dir.directories {
                folders.push(
                    sub.digest
                        .as_ref()
                        .and_then(Digest::from_proto)
                        .ok_or(Miss::Quiet)?,
                );
            }
            for file in &dir.files {
                files.push(
                    file.digest
                        .as_ref()
                        .and_then(Digest::from_proto)
                        .ok_or(Miss::Quiet)?,
                );
            }
        }
        // Before any file is fetched: a wrong tree costs its folders only.
        if let Some(declared) = declared {
            declared
                .check(store.cas(), &output)
                .map_err(Miss::Rejected)?;
        }
        files.extend(result.stdout_digest.as_ref().and_then(Digest::from_proto));
        files.extend(result.stderr_digest.as_ref().and_then(Digest::from_proto));
        files.sort_by_key(|d| d.hash);
        files.dedup();
        let mut set = JoinSet::new();
        for d in files {
            if store.cas().contains(&d) {
                continue;
            }
            let this = self.clone();
            let store = store.clone();
            set.spawn(async move { this.download(&store, &d).await });
        }
        while let Some(done) = set.join_next().await {
            done.map_err(|_| Miss::Quiet)??;
        }
        store
            .action_cache()
            .put(key, &result)
            .map_err(|_| Miss::Quiet)?;
        Ok(output)
    }

    /// Whether a trusted key signed `result` for `key`.
    async fn trusted(
        &self,
        store: &Store,
        key: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<bool, Miss> {
        let Some(sig) = sign::reference(result) else {
            return Ok(false);
        };
        self.download(store, &sig).await?;
        let blob = store.cas().read(&sig).map_err(|_| Miss::Quiet)?;
        Ok(sign::verify(
            &self.settings.trusted_keys,
            self.function,
            key,
            result,
            &blob,
        )
        .is_ok())
    }

    /// Downloads one blob unless it is already stored.
    async fn download(&self, store: &Store, d: &Digest) -> Result<(), Miss> {
        if store.cas().contains(d) {
            return Ok(());
        }
        let _slot = self.transfers.acquire().await.map_err(|_| Miss::Quiet)?;
        match self
            .call("downloading a blob", || {
                Box::pin(self.remote.download(self.function, d, store.cas()))
            })
            .await
        {
            Ok(()) => {
                self.counters
                    .downloaded_bytes
                    .fetch_add(d.size_bytes, Ordering::Relaxed);
                Ok(())
            }
            Err(RemoteError::DigestMismatch { .. }) => {
                self.counters.refused_blobs.fetch_add(1, Ordering::Relaxed);
                self.bad_on_server.lock().expect("not poisoned").insert(*d);
                self.warn_once(format!(
                    "remote cache {}: refused blob {} whose bytes do not match their digest (a tampered or corrupt cache)",
                    self.url,
                    self.function.qualified(d)
                ));
                Err(Miss::Quiet)
            }
            Err(e) if e.is_transient() => Err(Miss::Failed),
            Err(_) => Err(Miss::Quiet),
        }
    }

    /// Uploads an executed action's result in the background: missing
    /// blobs first, then the (signed) action-cache entry, so the entry never
    /// names a blob the server lacks.
    fn upload(self: &Arc<Self>, store: &Store, key: Digest, result: reapi::ActionResult) {
        if !self.settings.upload || self.switched_off.load(Ordering::SeqCst) {
            return;
        }
        let (this, store) = (self.clone(), store.clone());
        self.uploads
            .lock()
            .expect("not poisoned")
            .spawn(async move { this.push(&store, &key, result).await });
    }

    async fn push(self: &Arc<Self>, store: &Store, key: &Digest, result: reapi::ActionResult) {
        let f = self.function;
        let Some(blobs) = result_blobs(store, &result) else {
            return;
        };
        let Ok(mut missing) = self
            .call("finding missing blobs", || {
                Box::pin(self.remote.find_missing(f, &blobs))
            })
            .await
        else {
            return;
        };
        // The server says it has these, but what it sent did not hash to
        // them (same size, other bytes): only an upload repairs its copy.
        {
            let bad = self.bad_on_server.lock().expect("not poisoned");
            if !bad.is_empty() {
                let listed: HashSet<Digest> = missing.iter().copied().collect();
                missing.extend(
                    blobs
                        .iter()
                        .filter(|d| bad.contains(d) && !listed.contains(d))
                        .copied(),
                );
            }
        }
        let mut set = JoinSet::new();
        for d in missing {
            let (this, store) = (self.clone(), store.clone());
            set.spawn(async move { this.send(&store, &d).await });
        }
        let mut sent_all = true;
        while let Some(done) = set.join_next().await {
            sent_all &= done.unwrap_or(false);
        }
        if !sent_all {
            return;
        }
        let result = match &self.settings.signer {
            None => result,
            Some(signer) => {
                let blob = signer.sign(f, key, &result);
                let Ok(sig) = store.cas().put_bytes(&blob) else {
                    return;
                };
                if !self.send(store, &sig).await {
                    return;
                }
                sign::attach(&result, &sig)
            }
        };
        if self
            .call("uploading a result", || {
                Box::pin(self.remote.update_action_result(f, key, &result))
            })
            .await
            .is_ok()
        {
            self.counters.uploads.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn send(self: &Arc<Self>, store: &Store, d: &Digest) -> bool {
        let Ok(_slot) = self.transfers.acquire().await else {
            return false;
        };
        match self
            .call("uploading a blob", || {
                Box::pin(self.remote.upload(self.function, d, store.cas()))
            })
            .await
        {
            Ok(()) => {
                self.counters
                    .uploaded_bytes
                    .fetch_add(d.size_bytes, Ordering::Relaxed);
                self.bad_on_server.lock().expect("not poisoned").remove(d);
                true
            }
            Err(e) => {
                if !e.is_transient() {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    self.warn_once(format!(
                        "remote cache {}: an upload was refused ({e}); the build goes on",
                        self.url
                    ));
                }
                false
            }
        }
    }

    /// Waits for the uploads still running (each bounded by its timeouts).
    async fn finish(&self) {
        let mut set = std::mem::take(&mut *self.uploads.lock().expect("not poisoned"));
        while set.join_next().await.is_some() {}
    }
}

/// Every blob a result names: its output tree's folders and files, and its
/// logs (from the local store).
fn result_blobs(store: &Store, result: &reapi::ActionResult) -> Option<Vec<Digest>> {
    let root = result
        .output_directories
        .first()?
        .root_directory_digest
        .as_ref()
        .and_then(Digest::from_proto)?;
    let mut blobs = crate::client::tree_blobs(store.cas(), &root).ok()?;
    blobs.extend(result.stdout_digest.as_ref().and_then(Digest::from_proto));
    blobs.extend(result.stderr_digest.as_ref().and_then(Digest::from_proto));
    blobs.sort_by_key(|d| d.hash);
    blobs.dedup();
    Some(blobs)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use strata_store::remote_cache::RemoteCache as _;

    use super::*;
    use crate::client::RemoteConfig;
    use crate::config::RemoteCli;

    #[tokio::test]
    async fn credentials_in_the_url_are_never_shown() {
        // A port nothing listens on: the lookup fails and is warned about.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://builder:hunter2@127.0.0.1:{port}/team");
        let mut config = RemoteConfig::new(url.clone());
        config.timeout = Duration::from_secs(2);
        let settings = RemoteSettings {
            config,
            upload: true,
            digest_function: Some(DigestFunction::Sha256),
            signer: None,
            trusted_keys: Vec::new(),
            concurrency: 1,
        };
        let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = warnings.clone();
        let warn: Warn = Arc::new(move |m: &str| sink.lock().unwrap().push(m.to_string()));
        let (cache, _) = open(settings, None, warn).await;
        let cache = cache.expect("an HTTP remote opens without a request");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DigestFunction::Sha256).unwrap();
        let key = DigestFunction::Sha256.of_bytes(b"an action");
        assert_eq!(cache.lookup(&store, &key, None).await, None);

        let stats = cache.stats();
        assert_eq!(stats.url, format!("http://127.0.0.1:{port}/team"));
        assert_eq!(stats.errors, 1, "{stats:?}");
        let cli = RemoteCli {
            url: Some(url),
            ..RemoteCli::default()
        };
        let mut shown = warnings.lock().unwrap().clone();
        assert_eq!(
            shown.len(),
            1,
            "the failed lookup is warned about: {shown:?}"
        );
        shown.push(stats.url);
        shown.push(format!("{cli:?}"));
        for text in shown {
            assert!(
                !text.contains("hunter2") && !text.contains("builder"),
                "{text}"
            );
        }
    }
}
