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

use crate::local::LocalExecutor;
use crate::perturb::Perturbation;
use crate::source::SourceFile;
use crate::step::{Failure, StepFailure, StepSuccess};

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
pub struct Request {
    /// What reports call the node (a matrix label such as `x86_64/app`).
    pub name: String,
    pub work: Work,
    pub store: Store,
    /// The action's input root, for work that reads its inputs from the
    /// store (built-in rules, `copy` steps): it and the sources are stored
    /// before the request is made. `None` for other work.
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

    /// Runs one step to completion: its output tree (stored) and action
    /// result. Cancel-safe: dropping the future stops the step (what cannot
    /// be stopped at once is finished by `shutdown`).
    fn execute(&self, request: Request) -> BoxFuture<'_, Result<StepSuccess, StepFailure>>;

    /// Awaits what dropped steps left to clean up (containers after Ctrl-C).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The executors of a build: the local one (whose isolation keys depend
/// on), then others; the first that runs a step runs it.
#[derive(Clone)]
pub struct Executors {
    local: Arc<LocalExecutor>,
    executors: Vec<Arc<dyn Executor>>,
}

impl Executors {
    pub fn new(local: Arc<LocalExecutor>) -> Executors {
        Executors {
            executors: vec![local.clone()],
            local,
        }
    }

    /// Adds `executor`, after those added before it.
    pub fn with(mut self, executor: Arc<dyn Executor>) -> Executors {
        self.executors.push(executor);
        self
    }

    /// The executor of steps on this machine.
    pub fn local(&self) -> &LocalExecutor {
        &self.local
    }

    /// The executor of `work`, if any runs it.
    pub fn of(&self, work: &Work) -> Option<&Arc<dyn Executor>> {
        self.executors.iter().find(|e| e.runs(work))
    }

    /// Runs `request` on its executor; a step no executor runs fails.
    pub async fn execute(&self, request: Request) -> Result<StepSuccess, StepFailure> {
        match self.of(&request.work) {
            Some(executor) => executor.execute(request).await,
            None => Err(StepFailure {
                failure: Failure::Io(format!(
                    "no executor of this build runs `{}` (a container step needs the Docker executor)",
                    request.name
                )),
                stdout: String::new(),
                stderr: String::new(),
                scratch: None,
            }),
        }
    }

    /// Shuts every executor down (after Ctrl-C).
    pub async fn shutdown(&self) {
        for executor in &self.executors {
            executor.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_rules::image_pull::PullParams;

    struct Quiet;

    impl StepEvents for Quiet {
        fn log(&self, _: &str) {}
        fn warn(&self, _: &str) {}
    }

    fn pull() -> Work {
        Work::ImagePull(PullParams {
            reference: format!("127.0.0.1:5000/base@sha256:{}", "0".repeat(64)),
            digest: format!("sha256:{}", "0".repeat(64)),
            platform: "linux/amd64".into(),
            auth_env: None,
        })
    }

    #[tokio::test]
    async fn work_no_executor_runs_fails_and_names_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), strata_store::DigestFunction::Blake3).unwrap();
        let executors = Executors::new(Arc::new(LocalExecutor::new()));
        assert!(executors.of(&pull()).is_none());
        let request = Request {
            name: "base".into(),
            work: pull(),
            store,
            input_root: None,
            sources: Vec::new(),
            deps: Vec::new(),
            dep_keys: BTreeMap::new(),
            scratch_prefix: "t-base-".into(),
            perturb: None,
            events: Arc::new(Quiet),
        };
        let failure = executors.execute(request).await.unwrap_err();
        let message = failure.failure.to_string();
        assert!(message.contains("no executor"), "{message}");
        assert!(message.contains("`base`"), "{message}");
    }
}
