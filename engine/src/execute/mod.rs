//! One keyed action through the cache layers around its executor.
//!
//! On the way in, each lookup layer either serves the action (its output,
//! `ControlFlow::Break`) or passes it on (`Continue`), and the executor runs
//! what no layer served; on the way back, a success goes through the
//! publish layers, in order, each only once the one before it succeeded:
//!
//! ```text
//! local action cache -> remote cache -> (store a built-in's inputs) executor
//!                        store the action -> action-cache put -> remote upload
//! ```
//!
//! This is buck2's shape (`app/buck2_execute/src/execute/prepared.rs`: a
//! `PreparedCommandOptionalExecutor` answers `ControlFlow<result, manager>`,
//! a no-op one stands in for a cache that is off, and an `UploadCache` runs
//! after the executor), with one difference: the scheduler calls lookups
//! and execution separately, because a lookup takes no execution slot and
//! two nodes with one key run it once (`scheduler::OneRunPerKey`) between
//! the two.
//!
//! Which layers a build has is chosen once, at its start, from its
//! [`Policy`]; no step asks again. The scheduler decides what runs next;
//! this module what looking up and running one step means.

pub mod hits;
mod inputs;
pub mod lookup;
pub mod publish;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use strata_exec::{Executors, Request, StepFailure};
use strata_store::remote_cache::{RemoteCache, Warn};
use strata_store::{Digest, Store, reapi};

use crate::declared::DeclaredOutputs;
use crate::key::KeyedAction;
use hits::HitCache;
use lookup::{LocalActionCache, Lookup, RemoteLookup};
use publish::{ActionCachePut, Publish, RemoteUpload, StoreAction};

/// What a build does with the caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Looks up locally, then remotely; a success is written to both.
    Build,
    /// `--no-cache`: nothing is looked up, so every step runs; a success
    /// is written as in a build.
    NoCache,
    /// `strata audit`: only outputs pinned by digest are looked up, locally
    /// (rebuilding them can only give those bytes or fail), and nothing a
    /// build relies on is written: no action-cache entry, no upload.
    Audit,
}

impl Policy {
    pub fn of(no_cache: bool, audit: bool) -> Policy {
        match (audit, no_cache) {
            (true, _) => Policy::Audit,
            (false, true) => Policy::NoCache,
            (false, false) => Policy::Build,
        }
    }
}

/// A keyed action on its way through the layers.
pub struct PreparedAction {
    /// What messages call the target (its label in a matrix build).
    pub name: String,
    pub keyed: KeyedAction,
    /// What a cached result's tree must hold to be used.
    pub declared: Option<DeclaredOutputs>,
    /// Whether the output is named in advance (`Work::pinned`).
    pub pinned: bool,
}

impl PreparedAction {
    pub fn key(&self) -> Digest {
        self.keyed.key
    }
}

/// The layers of one build, around its executors.
pub struct Layers {
    lookups: Vec<Box<dyn Lookup>>,
    store: Store,
    executors: Executors,
    publishers: Vec<Box<dyn Publish>>,
    /// The hits a build keeps for the next (`Policy::Build` only): its
    /// lookups answer from it, and each step it runs is remembered there.
    hits: Option<Arc<HitCache>>,
    /// Results whose output files a remote executor held, by output: each
    /// is published (its action-cache entry written) once its output is
    /// whole, when a later step needed its bytes.
    held: Mutex<HashMap<Digest, Vec<Held>>>,
}

/// A result published only as far as its files allow.
struct Held {
    keyed: KeyedAction,
    result: reapi::ActionResult,
    declared: Option<DeclaredOutputs>,
}

impl Layers {
    /// The layers `policy` gives a build: a remote cache (if one is open)
    /// is looked up only after the local action cache, so it is never
    /// trusted further than the local store. `hits` (used by a build
    /// only) answers lookups it remembers and learns the others. `warn`
    /// says what a layer wants the user to know (an entry it dropped).
    pub fn new(
        store: Store,
        executors: Executors,
        remote: Option<Arc<dyn RemoteCache>>,
        policy: Policy,
        hits: Option<Arc<HitCache>>,
        warn: Warn,
    ) -> Layers {
        let hits = hits.filter(|_| policy == Policy::Build);
        let lookups: Vec<Box<dyn Lookup>> =
            match policy {
                Policy::Build => {
                    let mut lookups: Vec<Box<dyn Lookup>> = vec![Box::new(
                        LocalActionCache::every(store.clone(), hits.clone(), warn.clone()),
                    )];
                    if let Some(remote) = &remote {
                        lookups.push(Box::new(RemoteLookup::new(remote.clone(), store.clone())));
                    }
                    lookups
                }
                Policy::NoCache => Vec::new(),
                Policy::Audit => vec![Box::new(LocalActionCache::pinned_only(
                    store.clone(),
                    warn.clone(),
                ))],
            };
        // Only a succeeded step's action enters the store, ahead of the
        // action-cache entry that refers to it.
        let mut publishers: Vec<Box<dyn Publish>> = vec![Box::new(StoreAction::new(store.clone()))];
        if policy != Policy::Audit {
            publishers.push(Box::new(ActionCachePut::new(store.clone(), warn.clone())));
            if let Some(remote) = remote {
                publishers.push(Box::new(RemoteUpload::new(remote, store.clone())));
            }
        }
        Layers {
            lookups,
            store,
            executors,
            publishers,
            hits,
            held: Mutex::default(),
        }
    }

    /// The output of the first layer holding `action`'s result, or
    /// `Continue` when it must run.
    pub async fn look_up(&self, action: &PreparedAction) -> ControlFlow<Digest> {
        for layer in &self.lookups {
            layer.look_up(action).await?;
        }
        ControlFlow::Continue(())
    }

    /// Runs `request` (the step of `action`) on its executor and publishes
    /// a success: its output tree. Work that reads its inputs from the
    /// store (or whose executor does: a remote one) has them stored first,
    /// and `request.input_root` set. An output whose files the executor
    /// held remotely is fetched at once if it is `placed` in `out/`;
    /// otherwise it is published without an action-cache entry until a
    /// later step makes it whole.
    pub async fn execute(
        &self,
        action: PreparedAction,
        mut request: Request,
        placed: bool,
    ) -> Result<Digest, StepFailure> {
        let PreparedAction {
            keyed, declared, ..
        } = action;
        let keyed = if inputs::read_from_store(&request.work)
            || self.executors.reads_inputs_from_store(&request.work)
        {
            request.input_root = Some(inputs::input_root(&keyed));
            inputs::store(&self.store, keyed, &request.sources)
                .await
                .map_err(step_failure)?
        } else {
            keyed
        };
        let deps: Vec<Digest> = request.deps.iter().map(|(_, d)| *d).collect();
        let outcome = self.executors.execute(request).await;
        // Dependencies this step needed whole are now (even if it failed):
        // their entries.
        self.publish_made_whole(&deps).map_err(step_failure)?;
        let success = outcome?;
        let mut held = success.held_remotely;
        if held && placed {
            self.executors
                .make_whole(&self.store, &[success.output])
                .await
                .map_err(|why| {
                    step_failure(strata_exec::Failure::Io(format!(
                        "cannot fetch its output, which the remote executor held: {why}"
                    )))
                })?;
            held = false;
        }
        self.publish(&keyed, &success.result, held)
            .map_err(step_failure)?;
        if held {
            // No entry was written: nothing for the next build to remember
            // until the output is whole.
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(success.output)
                .or_default()
                .push(Held {
                    keyed,
                    result: success.result,
                    declared,
                });
            return Ok(success.output);
        }
        self.remember(&keyed, declared.as_ref());
        Ok(success.output)
    }

    /// Fetches the files of every output among `trees` a remote executor
    /// held, for work outside the executors that reads them (an `sbom`
    /// target's facts), and publishes the results made whole.
    pub async fn make_whole(&self, trees: &[Digest]) -> Result<(), String> {
        self.executors.make_whole(&self.store, trees).await?;
        self.publish_made_whole(trees).map_err(|f| f.to_string())
    }

    /// Publishes a result through the layers, those needing its whole
    /// output only if it is whole. Publishing blocks: the action-cache
    /// entry waits for the store's group commit (a `syncfs`); the
    /// runtime's other tasks move to another worker meanwhile.
    fn publish(
        &self,
        keyed: &KeyedAction,
        result: &reapi::ActionResult,
        held: bool,
    ) -> Result<(), strata_exec::Failure> {
        tokio::task::block_in_place(|| {
            self.publishers
                .iter()
                .filter(|layer| !held || !layer.needs_whole_output())
                .try_for_each(|layer| layer.publish(keyed, result))
        })
    }

    /// Finishes publishing the held results among `outputs` that are whole
    /// now: their action-cache entries (and uploads), as any result's.
    fn publish_made_whole(&self, outputs: &[Digest]) -> Result<(), strata_exec::Failure> {
        let whole: Vec<Held> = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            outputs
                .iter()
                .filter(|d| !self.executors.is_held(d))
                .filter_map(|d| held.remove(d))
                .flatten()
                .collect()
        };
        for h in whole {
            tokio::task::block_in_place(|| {
                self.publishers
                    .iter()
                    .filter(|layer| layer.needs_whole_output())
                    .try_for_each(|layer| layer.publish(&h.keyed, &h.result))
            })?;
            self.remember(&h.keyed, h.declared.as_ref());
        }
        Ok(())
    }

    /// Notes the entry just written in the hits.
    fn remember(&self, keyed: &KeyedAction, declared: Option<&DeclaredOutputs>) {
        // The entry just written, as the next build's lookup would find it
        // (still staged while the group commit publishes it: then its stat
        // is taken when the hits are saved).
        if let Some(hits) = &self.hits
            && let Ok(Some(found)) = lookup::examine(&self.store, &keyed.key, declared)
        {
            let fingerprint = DeclaredOutputs::fingerprint(declared);
            hits.remember(&keyed.key, &fingerprint, &found);
        }
    }

    /// Waits for what the layers still do in the background (uploads).
    pub async fn finish(&self) {
        for layer in &self.publishers {
            layer.finish().await;
        }
    }

    /// Waits for what the layers must not leave half done, when the
    /// build was interrupted and `finish` is skipped (action-cache entries
    /// being published).
    pub async fn settle(&self) {
        for layer in &self.publishers {
            layer.settle().await;
        }
    }

    /// Shuts the executors down (after Ctrl-C).
    pub async fn shutdown(&self) {
        self.executors.shutdown().await;
    }
}

/// A failure of the layers themselves (the store), which has no logs.
fn step_failure(failure: strata_exec::Failure) -> StepFailure {
    StepFailure::without_logs(failure)
}

#[cfg(test)]
mod tests;
