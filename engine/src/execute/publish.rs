//! The layers a succeeded step's result goes back through: the action into
//! the store, then the action cache, then a remote cache. A failed step
//! reaches none of them, so it writes nothing to the action cache.

use std::sync::Arc;

use strata_exec::Failure;
use strata_store::remote_cache::{BoxFuture, RemoteCache};
use strata_store::{Store, reapi};

use crate::key::KeyedAction;

/// A layer behind the executor. `Err` fails the step, and the layers after
/// this one are not reached.
pub trait Publish: Send + Sync {
    fn publish(&self, keyed: &KeyedAction, result: &reapi::ActionResult) -> Result<(), Failure>;

    /// Waits for what the layer still does in the background.
    fn finish(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The action (its command and input root) into the store, where the
/// action-cache entry and `strata explain` find it.
pub struct StoreAction {
    store: Store,
}

impl StoreAction {
    pub fn new(store: Store) -> StoreAction {
        StoreAction { store }
    }
}

impl Publish for StoreAction {
    fn publish(&self, keyed: &KeyedAction, _: &reapi::ActionResult) -> Result<(), Failure> {
        keyed.store(self.store.cas()).map_err(Failure::Store)
    }
}

/// The result into the local action cache, under the action's key.
pub struct ActionCachePut {
    store: Store,
}

impl ActionCachePut {
    pub fn new(store: Store) -> ActionCachePut {
        ActionCachePut { store }
    }
}

impl Publish for ActionCachePut {
    fn publish(&self, keyed: &KeyedAction, result: &reapi::ActionResult) -> Result<(), Failure> {
        self.store
            .action_cache()
            .put(&keyed.key, result)
            .map_err(Failure::Store)
    }
}

/// The result to a remote cache, in the background. Never fails the step:
/// a remote cache never fails a build.
pub struct RemoteUpload {
    remote: Arc<dyn RemoteCache>,
    store: Store,
}

impl RemoteUpload {
    pub fn new(remote: Arc<dyn RemoteCache>, store: Store) -> RemoteUpload {
        RemoteUpload { remote, store }
    }
}

impl Publish for RemoteUpload {
    fn publish(&self, keyed: &KeyedAction, result: &reapi::ActionResult) -> Result<(), Failure> {
        self.remote.upload(&self.store, keyed.key, result.clone());
        Ok(())
    }

    fn finish(&self) -> BoxFuture<'_, ()> {
        self.remote.finish()
    }
}
