//! The worker's own CAS: a Strata store folder holding the blobs of recent
//! input roots and outputs, bounded by `--max-size`. Blobs a running lease
//! relies on never go: eviction waits until no lease holds the cache.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use strata_store::gc::Collector;
use strata_store::{Digest, DigestFunction, Store};
use tokio::sync::{RwLock, RwLockReadGuard};

pub(crate) struct LocalCas {
    store: Store,
    max_size: u64,
    /// Held shared by a lease while the blobs it fetched or made must stay
    /// (fetching inputs until they are staged, capturing outputs until they
    /// are uploaded), exclusively while evicting.
    gate: RwLock<()>,
    /// The bytes stored at the last count, plus those added since.
    bytes: AtomicU64,
}

impl LocalCas {
    /// Opens (or creates) the store at `dir` and brings it within
    /// `max_size`. Blocking.
    pub(crate) fn open(
        dir: &Path,
        function: DigestFunction,
        max_size: u64,
    ) -> Result<LocalCas, String> {
        let store = Store::open(dir, function)
            .map_err(|e| format!("cannot open the worker's cache {}: {e}", dir.display()))?;
        let cas = LocalCas {
            store,
            max_size,
            gate: RwLock::new(()),
            bytes: AtomicU64::new(0),
        };
        cas.evict();
        Ok(cas)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Keeps eviction away until the guard is dropped.
    pub(crate) async fn hold(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Counts blobs just stored towards the bound.
    pub(crate) fn added(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Marks a stored blob as just used, so eviction (least recently used
    /// first, by modification time) keeps it longer.
    pub(crate) fn used(&self, digest: &Digest) {
        let path = self.store.cas().path(digest);
        if let Ok(file) = std::fs::File::open(path) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Evicts least recently used blobs once the cache may hold more than
    /// its bound, waiting for leases to let go of it first.
    pub(crate) async fn trim(&self) {
        if self.bytes.load(Ordering::Relaxed) <= self.max_size {
            return;
        }
        let _alone = self.gate.write().await;
        // Another lease may have trimmed while this one waited.
        if self.bytes.load(Ordering::Relaxed) <= self.max_size {
            return;
        }
        tokio::task::block_in_place(|| self.evict());
    }

    /// Counts what is stored and removes the least recently used blobs
    /// above the bound. Blocking; the caller makes sure no lease holds the
    /// cache.
    fn evict(&self) {
        let collector = Collector::scan(vec![self.store.clone()]);
        let plan = collector.plan(self.max_size);
        let swept = collector.sweep(&plan);
        for e in &swept.errors {
            eprintln!("strata worker: cache eviction: {e}");
        }
        let left = collector.usage().bytes() - swept.removed.bytes();
        self.bytes.store(left, Ordering::Relaxed);
    }
}
