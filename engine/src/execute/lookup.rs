//! The layers that may serve a keyed action without running it: the local
//! action cache, then a remote cache.

use std::ops::ControlFlow;
use std::sync::Arc;

use strata_store::remote_cache::{BoxFuture, RemoteCache, Warn};
use strata_store::{Digest, Store, tree};

use super::PreparedAction;
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
    warn: Warn,
}

impl LocalActionCache {
    /// Serves every action whose result it holds.
    pub fn every(store: Store, warn: Warn) -> LocalActionCache {
        LocalActionCache {
            store,
            pinned_only: false,
            warn,
        }
    }

    /// Serves only actions whose output is pinned by its digest.
    pub fn pinned_only(store: Store, warn: Warn) -> LocalActionCache {
        LocalActionCache {
            store,
            pinned_only: true,
            warn,
        }
    }

    fn find(&self, action: &PreparedAction) -> ControlFlow<Digest> {
        if self.pinned_only && !action.pinned {
            return ControlFlow::Continue(());
        }
        match cached_output(&self.store, &action.key(), action.declared.as_ref()) {
            Ok(Some(output)) => return ControlFlow::Break(output),
            Ok(None) => {}
            Err(why) => (self.warn)(&format!(
                "the action-cache entry of `{}` is not its result ({why}); it was dropped and the step runs again",
                action.name
            )),
        }
        ControlFlow::Continue(())
    }
}

impl Lookup for LocalActionCache {
    fn look_up<'a>(&'a self, action: &'a PreparedAction) -> BoxFuture<'a, ControlFlow<Digest>> {
        // A lookup reads one small action-cache entry and stats the output
        // tree's blobs: inline is cheaper than a trip to the blocking pool.
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
/// dropped too, and `Err` says what is wrong with it.
pub fn cached_output(
    store: &Store,
    key: &Digest,
    declared: Option<&DeclaredOutputs>,
) -> Result<Option<Digest>, String> {
    // The entry's time is the last use `gc` evicts by.
    let Some(result) = store.action_cache().get_used(key).ok().flatten() else {
        return Ok(None);
    };
    let Some(output) = result
        .output_directories
        .first()
        .and_then(|d| Digest::from_proto(d.root_directory_digest.as_ref()?))
    else {
        return Ok(None);
    };
    if tree::first_missing(store.cas(), &output).is_some() {
        let _ = store.action_cache().remove(key);
        return Ok(None);
    }
    if let Some(declared) = declared
        && let Err(why) = declared.check(store.cas(), &output)
    {
        let _ = store.action_cache().remove(key);
        return Err(why);
    }
    Ok(Some(output))
}
