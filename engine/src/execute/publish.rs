//! The layers a succeeded step's result goes back through: the action into
//! the store, then the action cache, then a remote cache. A failed step
//! reaches none of them, so it writes nothing to the action cache; a
//! result whose files are held remotely reaches only the first (it is
//! known to this build in memory, `strata_exec::held`).

use std::sync::{Arc, Mutex};

use strata_exec::Failure;
use strata_store::remote_cache::{BoxFuture, RemoteCache, Warn};
use strata_store::{Store, reapi};

use crate::key::KeyedAction;

/// A layer behind the executor. `Err` fails the step, and the layers after
/// this one are not reached.
pub trait Publish: Send + Sync {
    fn publish(&self, keyed: &KeyedAction, result: &reapi::ActionResult) -> Result<(), Failure>;

    /// Whether this layer needs every blob of the output stored, so a
    /// result whose files are held remotely (`StepSuccess::held_remotely`)
    /// skips it: an action-cache entry or an upload names only stored
    /// blobs.
    fn needs_whole_output(&self) -> bool {
        true
    }

    /// Waits for what the layer still does in the background.
    fn finish(&self) -> BoxFuture<'_, ()> {
        self.settle()
    }

    /// Waits for what the layer must not leave half done when the build
    /// ends, even interrupted (`finish` may be skipped then).
    fn settle(&self) -> BoxFuture<'_, ()> {
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

    fn needs_whole_output(&self) -> bool {
        false
    }
}

/// The result into the local action cache, under the action's key, in
/// the background: the entry is staged (this build's lookups see it at
/// once) and published by a blocking task once the store's group commit
/// has put what it names on disk, so the step's slot does not wait for
/// the `syncfs`. `settle` waits for every publication: the scheduler calls
/// it even after Ctrl-C, so none outlives the build's gc lock.
pub struct ActionCachePut {
    store: Store,
    warn: Warn,
    publishing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl ActionCachePut {
    pub fn new(store: Store, warn: Warn) -> ActionCachePut {
        ActionCachePut {
            store,
            warn,
            publishing: Mutex::default(),
        }
    }
}

impl Publish for ActionCachePut {
    fn publish(&self, keyed: &KeyedAction, result: &reapi::ActionResult) -> Result<(), Failure> {
        let staged = self
            .store
            .action_cache()
            .stage(&keyed.key, result)
            .map_err(Failure::Store)?;
        let warn = self.warn.clone();
        let task = tokio::task::spawn_blocking(move || {
            // A cache entry that cannot be written costs a later build a
            // rerun; the step itself succeeded.
            if let Err(e) = staged.publish() {
                warn(&format!("cannot write an action-cache entry: {e}"));
            }
        });
        let mut publishing = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        publishing.retain(|t| !t.is_finished());
        publishing.push(task);
        Ok(())
    }

    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            let tasks =
                std::mem::take(&mut *self.publishing.lock().unwrap_or_else(|p| p.into_inner()));
            for task in tasks {
                let _ = task.await;
            }
        })
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
