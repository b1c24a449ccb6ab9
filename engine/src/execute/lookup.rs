//! The layers that may serve a keyed action without running it: the local
//! action cache, then a remote cache.

use std::ops::ControlFlow;
use std::sync::Arc;

use strata_store::remote_cache::{BoxFuture, RemoteCache, Warn};
use strata_store::{Cas, Digest, Store, tree};

use super::PreparedAction;
use super::hits::{Found, HitCache};
use crate::declared::DeclaredOutputs;

/// A layer in front of the executor: `Break` with the action's output when
/// it holds its result, else `Continue` to the next layer.
pub trait Lookup: Send + Sync {
    fn look_up<'a>(&'a self, action: &'a PreparedAction) -> BoxFuture<'a, ControlFlow<Digest>>;
}

/// The store's action cache.
pub struct LocalActionCache {
    store: Store,
    /// An audit rebuilds everything but what is pinned by its digest.
    pinned_only: bool,
    /// The hits earlier builds of the workspace found, if kept.
    hits: Option<Arc<HitCache>>,
    warn: Warn,
}

impl LocalActionCache {
    /// Serves every action whose result it holds, answering those `hits`
    /// remembers from it, and remembering the others it serves there.
    pub fn every(store: Store, hits: Option<Arc<HitCache>>, warn: Warn) -> LocalActionCache {
        LocalActionCache {
            store,
            pinned_only: false,
            hits,
            warn,
        }
    }

    /// Serves only actions whose output is pinned by its digest.
    pub fn pinned_only(store: Store, warn: Warn) -> LocalActionCache {
        LocalActionCache {
            store,
            pinned_only: true,
            hits: None,
            warn,
        }
    }

    fn find(&self, action: &PreparedAction) -> ControlFlow<Digest> {
        if self.pinned_only && !action.pinned {
            return ControlFlow::Continue(());
        }
        let key = action.key();
        let declared = DeclaredOutputs::fingerprint(action.declared.as_ref());
        if let Some(hits) = &self.hits
            && let Some(output) = hits.output(&self.store, &key, &declared)
        {
            self.store.action_cache().note_use(&key);
            return ControlFlow::Break(output);
        }
        match found_entry(&self.store, &key, action.declared.as_ref()) {
            Ok(Some(found)) => {
                self.store.action_cache().note_use(&key);
                if let Some(hits) = &self.hits {
                    hits.remember(&key, &declared, &found);
                }
                return ControlFlow::Break(found.output);
            }
            Ok(None) => {}
            Err(why) => (self.warn)(&format!(
                "the action-cache entry of `{}` is not its result ({why}); it was dropped and the step runs again",
                action.name
            )),
        }
        if let Some(hits) = &self.hits {
            hits.forget(&key);
        }
        ControlFlow::Continue(())
    }
}

impl Lookup for LocalActionCache {
    fn look_up<'a>(&'a self, action: &'a PreparedAction) -> BoxFuture<'a, ControlFlow<Digest>> {
        // A lookup stats one small action-cache entry and the output tree's
        // blobs (or reads the entry and the tree's folder records): inline
        // is cheaper than a trip to the blocking pool.
        Box::pin(std::future::ready(self.find(action)))
    }
}

/// A remote cache, asked on a local miss; what it serves it has downloaded,
/// checked and entered into the local store and action cache.
pub struct RemoteLookup {
    remote: Arc<dyn RemoteCache>,
    store: Store,
}

impl RemoteLookup {
    pub fn new(remote: Arc<dyn RemoteCache>, store: Store) -> RemoteLookup {
        RemoteLookup { remote, store }
    }
}

impl Lookup for RemoteLookup {
    fn look_up<'a>(&'a self, action: &'a PreparedAction) -> BoxFuture<'a, ControlFlow<Digest>> {
        Box::pin(async move {
            let check = action.declared.as_ref().map(|d| d as _);
            match self
                .remote
                .lookup(&self.store, &action.keyed.key, check)
                .await
            {
                Some(output) => ControlFlow::Break(output),
                None => ControlFlow::Continue(()),
            }
        })
    }
}

/// The output of a cached action, if its whole output tree is still stored
/// and holds what the target declares. An entry reaching a blob that is
/// gone or no longer whole (a corrupt blob is dropped when read) is
/// removed: it is a miss, now and until the step runs again. An entry whose
/// tree does not hold what the target declares is another action's result
/// (planted at this key on a remote and trusted by an older version): it is
/// dropped too, and `Err` says what is wrong with it. The entry's use is
/// noted: its last use is what `gc` evicts by.
pub fn cached_output(
    store: &Store,
    key: &Digest,
    declared: Option<&DeclaredOutputs>,
) -> Result<Option<Digest>, String> {
    let found = found_entry(store, key, declared)?;
    if found.is_some() {
        store.action_cache().note_use(key);
    }
    Ok(found.map(|f| f.output))
}

/// [`cached_output`] without noting a use, with what a [`HitCache`] keeps
/// of the entry.
pub(crate) fn found_entry(
    store: &Store,
    key: &Digest,
    declared: Option<&DeclaredOutputs>,
) -> Result<Option<Found>, String> {
    match examine(store, key, declared) {
        Ok(found) => Ok(found),
        Err(unusable) => {
            let _ = store.action_cache().remove(key);
            match unusable {
                Unusable::ReachesMissing => Ok(None),
                Unusable::NotDeclared(why) => Err(why),
            }
        }
    }
}

/// Why an entry of the action cache cannot be used.
pub(crate) enum Unusable {
    /// Its output reaches a blob the store does not hold whole.
    ReachesMissing,
    /// Its output does not hold what the target declares.
    NotDeclared(String),
}

/// The entry of `key` and what it reaches, if usable; changes nothing
/// (but for a corrupt folder record, dropped when read).
pub(crate) fn examine(
    store: &Store,
    key: &Digest,
    declared: Option<&DeclaredOutputs>,
) -> Result<Option<Found>, Unusable> {
    let cache = store.action_cache();
    let (result, entry) = match cache.get_with_stat(key).ok().flatten() {
        Some((result, entry)) => (result, Some(entry)),
        // Staged by this build, still waiting for the group commit.
        None => match cache.get(key).ok().flatten() {
            Some(result) => (result, None),
            None => return Ok(None),
        },
    };
    let Some(output) = result
        .output_directories
        .first()
        .and_then(|d| Digest::from_proto(d.root_directory_digest.as_ref()?))
    else {
        return Ok(None);
    };
    let blobs = stored_blobs(store.cas(), &output).ok_or(Unusable::ReachesMissing)?;
    if let Some(declared) = declared {
        declared
            .check(store.cas(), &output)
            .map_err(Unusable::NotDeclared)?;
    }
    Ok(Some(Found {
        output,
        blobs,
        entry,
    }))
}

/// Every blob the stored tree `root` reaches (itself, its folders' records
/// and its files, each once), if the store holds them all whole: the
/// records are read (a corrupt one is dropped), the files stat'ed.
fn stored_blobs(cas: &Cas, root: &Digest) -> Option<Vec<Digest>> {
    let entries = tree::walk(cas, root).ok()?;
    let mut blobs = vec![*root];
    for (_, entry) in entries {
        match entry {
            tree::Entry::Dir { digest, .. } => blobs.push(digest),
            tree::Entry::File { digest, .. } => {
                if !cas.contains(&digest) {
                    return None;
                }
                blobs.push(digest);
            }
            _ => {}
        }
    }
    blobs.sort_unstable();
    blobs.dedup();
    Some(blobs)
}
