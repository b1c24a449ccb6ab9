//! Output trees held remotely ("build without the bytes"): a remote
//! executor may return a step's output with its folder records stored but
//! its files left on the service. Such trees are known for this build in
//! memory, here, and made whole (their missing files fetched, in batches,
//! through a [`BlobSource`]) only when something reads their bytes: a step
//! on an executor that needs whole inputs, or `out/`.
//!
//! Nothing else in the store is ever partial: a held tree gets no
//! action-cache entry, so the store's invariants (every entry's blobs
//! stored) hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strata_store::tree::{self, Entry};
use strata_store::{Cas, Digest, Store};

use crate::executor::BoxFuture;

/// Where held blobs come from: the remote executor that made them (the
/// engine never sees the network; `strata-remote` implements this).
pub trait BlobSource: Send + Sync {
    /// Fetches `blobs` into `store`'s CAS, each checked against its digest.
    /// `Err` says why they cannot be had (the service lost them).
    fn fetch<'a>(
        &'a self,
        store: &'a Store,
        blobs: Vec<Digest>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// The held output trees of one build, and where to fetch their files.
#[derive(Default)]
pub struct Held {
    /// Each held tree, and a lock its fetch holds, so two steps needing
    /// one tree fetch it once. `true` once whole.
    trees: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<bool>>>>,
    source: Mutex<Option<Arc<dyn BlobSource>>>,
}

impl Held {
    /// Sets where held files are fetched from.
    pub fn set_source(&self, source: Arc<dyn BlobSource>) {
        *lock(&self.source) = Some(source);
    }

    /// Notes that `tree`'s files may be held remotely.
    pub fn insert(&self, tree: Digest) {
        lock(&self.trees)
            .entry(tree)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(false)));
    }

    /// Whether `tree` was returned held and not made whole since.
    pub fn is_held(&self, tree: &Digest) -> bool {
        let entry = lock(&self.trees).get(tree).cloned();
        entry.is_some_and(|e| e.try_lock().map(|whole| !*whole).unwrap_or(true))
    }

    /// Fetches what the store lacks of every held tree among `trees`, so
    /// each is whole in the store afterwards. Trees not held are left
    /// alone (they are whole by the store's rules). `Err` names the first
    /// tree that cannot be made whole and why.
    pub async fn make_whole(&self, store: &Store, trees: &[Digest]) -> Result<(), String> {
        for tree in trees {
            let Some(entry) = lock(&self.trees).get(tree).cloned() else {
                continue;
            };
            let mut whole = entry.lock().await;
            if *whole {
                continue;
            }
            let cas = store.cas().clone();
            let root = *tree;
            let missing = tokio::task::spawn_blocking(move || missing_files(&cas, &root))
                .await
                .map_err(|e| e.to_string())??;
            if !missing.is_empty() {
                let source = lock(&self.source).clone().ok_or_else(|| {
                    format!("output {tree} is held remotely and nothing here can fetch it")
                })?;
                source.fetch(store, missing).await?;
                if let Some(d) = tree::first_missing(store.cas(), tree) {
                    return Err(format!(
                        "blob {d} of output {tree} is still missing after fetching it"
                    ));
                }
            }
            *whole = true;
        }
        Ok(())
    }
}

/// The files `root` names that `cas` lacks, each once. Its folder records
/// must be stored (a held tree's always are).
pub fn missing_files(cas: &Cas, root: &Digest) -> Result<Vec<Digest>, String> {
    let entries = tree::walk(cas, root)
        .map_err(|e| format!("the folder records of output {root} cannot be read: {e}"))?;
    let mut seen = std::collections::HashSet::new();
    Ok(entries
        .into_iter()
        .filter_map(|(_, e)| match e {
            Entry::File { digest, .. } if !cas.contains(&digest) && seen.insert(digest) => {
                Some(digest)
            }
            _ => None,
        })
        .collect())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
