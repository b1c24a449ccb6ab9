//! The executor seam: what the scheduler hands a keyed step that missed the
//! cache, and what comes back.
//!
//! An executor runs a step and returns its output tree and action result;
//! it never reads or writes the action cache (the layers around it do), so
//! an executor on another machine could stand in for one here.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use strata_rules::Work;
use strata_store::{Digest, Store};

use crate::perturb::Perturbation;
use crate::source::SourceFile;
use crate::step::{StepFailure, StepSuccess};

/// A future an executor returns (boxed, so `Executor` stays object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a running step tells the build, for one target.
pub trait StepEvents: Send + Sync {
    /// A line the step printed (secrets it received already masked).
    fn log(&self, line: &str);
    /// Something the user should know (waiting for a cache another step holds).
    fn warn(&self, message: &str);
}

/// One keyed step to execute.
#[derive(Clone)]
pub struct Request {
    /// What reports call the node (a matrix label such as `x86_64/app`).
    pub name: String,
    pub work: Work,
    pub store: Store,
    /// The action's input root, for work that reads its inputs from the
    /// store (built-in rules, `copy` steps, and any step an executor sends
    /// elsewhere: see [`Executor::reads_inputs_from_store`]): it, the
    /// sources and the action are stored before the request is made.
    /// `None` for other work.
    pub input_root: Option<Digest>,
    pub sources: Vec<SourceFile>,
    /// Dependency names and their output trees, in declaration order.
    pub deps: Vec<(String, Digest)>,
    /// Dependency names and their keys (built-in rules record them).
    pub dep_keys: BTreeMap<String, Digest>,
    /// Scratch folders of this step are named `<prefix><random>`.
    pub scratch_prefix: String,
    /// Set by `strata audit`. A `run` step's environment is already
    /// perturbed (see `Perturbation::step_env`); this is the rest.
    pub perturb: Option<Perturbation>,
    pub events: Arc<dyn StepEvents>,
}

/// Runs steps. Object safe: the build holds executors as `Arc<dyn Executor>`.
pub trait Executor: Send + Sync {
    /// Whether this executor runs `work`.
    fn runs(&self, work: &Work) -> bool;

    /// Whether this executor reads `work`'s inputs from the store (a remote
    /// executor uploads them from there), so the build stores them, and
    /// the action, before handing the step over.
    fn reads_inputs_from_store(&self, _work: &Work) -> bool {
        false
    }

    /// Whether this executor runs `work` from its inputs' digests alone,
    /// so dependencies' outputs held remotely need not be fetched first
    /// (a remote executor: the service holds them).
    fn takes_held_inputs(&self, _work: &Work) -> bool {
        false
    }

    /// Runs one step to completion: its output tree (stored, or its files
    /// held remotely: `StepSuccess::held_remotely`) and action
    /// result. Cancel-safe: dropping the future stops the step (what cannot
    /// be stopped at once is finished by `shutdown`).
    fn execute(&self, request: Request) -> BoxFuture<'_, Result<StepSuccess, StepFailure>>;

    /// Awaits what dropped steps left to clean up (containers after Ctrl-C).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
