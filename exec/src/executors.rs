//! The executors of a build, and which one runs a step.

use std::sync::Arc;

use strata_rules::Work;

use strata_store::{Digest, Store};

use crate::executor::{Executor, Request};
use crate::held::{BlobSource, Held};
use crate::local::LocalExecutor;
use crate::step::{Failure, StepFailure, StepSuccess};

/// The executors of a build: those preferred to the local one (a remote
/// executor), the local one (whose isolation keys depend on), then others;
/// the first that runs a step runs it.
#[derive(Clone)]
pub struct Executors {
    local: Arc<LocalExecutor>,
    executors: Vec<Arc<dyn Executor>>,
    /// How many executors come before the local one.
    preferred: usize,
    /// Output trees of this build whose files are held remotely.
    held: Arc<Held>,
}

impl Executors {
    pub fn new(local: Arc<LocalExecutor>) -> Executors {
        Executors {
            executors: vec![local.clone()],
            local,
            preferred: 0,
            held: Arc::default(),
        }
    }

    /// Where the files of outputs held remotely are fetched from (the
    /// remote executor that returns such outputs).
    pub fn with_blob_source(self, source: Arc<dyn BlobSource>) -> Executors {
        self.held.set_source(source);
        self
    }

    /// Fetches the files of every output among `trees` held remotely, so
    /// each is whole in the store: before anything reads their bytes (the
    /// engine calls it before placing outputs in `out/`).
    pub async fn make_whole(&self, store: &Store, trees: &[Digest]) -> Result<(), String> {
        self.held.make_whole(store, trees).await
    }

    /// Whether `tree` is an output of this build whose files are held
    /// remotely.
    pub fn is_held(&self, tree: &Digest) -> bool {
        self.held.is_held(tree)
    }

    /// Adds `executor`, after those added before it.
    pub fn with(mut self, executor: Arc<dyn Executor>) -> Executors {
        self.executors.push(executor);
        self
    }

    /// Adds `executor` ahead of the local one: it runs what it `runs`,
    /// the local executor the rest.
    pub fn preferring(mut self, executor: Arc<dyn Executor>) -> Executors {
        // Executors before the local one are the preferred ones.
        self.executors.insert(self.preferred, executor);
        self.preferred += 1;
        self
    }

    /// Whether the executor of `work` reads its inputs from the store.
    pub fn reads_inputs_from_store(&self, work: &Work) -> bool {
        self.of(work)
            .is_some_and(|e| e.reads_inputs_from_store(work))
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
    /// Dependencies' outputs held remotely are fetched first unless the
    /// executor takes them as they are; an output returned held is noted.
    pub async fn execute(&self, request: Request) -> Result<StepSuccess, StepFailure> {
        let Some(executor) = self.of(&request.work) else {
            return Err(StepFailure::without_logs(Failure::Io(format!(
                "no executor of this build runs `{}` (a container step needs the Docker executor)",
                request.name
            ))));
        };
        if !executor.takes_held_inputs(&request.work) {
            self.fetch_held_deps(&request).await?;
        }
        let success = executor.execute(request).await?;
        if success.held_remotely {
            self.held.insert(success.output);
        }
        Ok(success)
    }

    /// Makes every dependency output of `request` held remotely whole.
    async fn fetch_held_deps(&self, request: &Request) -> Result<(), StepFailure> {
        for (name, tree) in &request.deps {
            if let Err(why) = self.held.make_whole(&request.store, &[*tree]).await {
                return Err(StepFailure::without_logs(Failure::Io(format!(
                    "cannot fetch the output of its dependency `{name}`, which the remote executor held: {why}"
                ))));
            }
        }
        Ok(())
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
    use crate::executor::StepEvents;
    use std::collections::BTreeMap;
    use strata_rules::image_pull::PullParams;
    use strata_store::Store;

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
