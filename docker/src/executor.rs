//! [`DockerExecutor`]: the work that needs a Docker Engine or a registry,
//! behind `strata_exec::Executor`.

use std::sync::Arc;

use strata_exec::mask::Masks;
use strata_exec::step::{self, Failure, RunsIn, StepFailure, StepRequest, StepSuccess};
use strata_exec::{BoxFuture, Executor, Request, StepEvents};
use strata_rules::Work;
use strata_rules::platform::RunsOn;
use strata_rules::stage::StageStep;
use strata_store::Digest;
use tokio::sync::OnceCell;

use crate::Engine;
use crate::connect::ImageState;
use crate::steps::{self, ContainerRun, LogFn, StageRequest};

/// Runs `run` steps with `image:`, `stage` steps, `image-pull` and
/// `docker-data-root`. Connects to the engine on first use (and then
/// removes containers killed builds left behind); everything it learns
/// about the engine's images, and the containers its steps still have,
/// live in that connection, not in the process: another executor of the
/// same process neither sees nor removes them.
#[derive(Default)]
pub struct DockerExecutor {
    engine: OnceCell<Result<Engine, String>>,
    /// What this executor learns about the engine's images (which tree is
    /// which other plus a step's changes), shared by its connection; known
    /// before it connects, since `copy` steps need no engine.
    images: Arc<ImageState>,
}

impl DockerExecutor {
    pub fn new() -> DockerExecutor {
        DockerExecutor::default()
    }

    /// The engine; the first call connects and removes containers that
    /// killed builds left behind.
    async fn engine(&self) -> Result<&Engine, Failure> {
        let r = self
            .engine
            .get_or_init(|| async {
                let engine = crate::connect()
                    .await
                    .map_err(|e| e.to_string())?
                    .sharing(self.images.clone());
                let _ = crate::reap_stale(&engine).await;
                Ok(engine)
            })
            .await;
        r.as_ref().map_err(|e| Failure::Io(e.clone()))
    }

    async fn run(&self, req: Request) -> Result<StepSuccess, StepFailure> {
        match &req.work {
            Work::Run(run) => {
                step::remove_stale_scratch(&req.store, &req.scratch_prefix);
                let container = run.container.as_ref().ok_or_else(|| {
                    failed(Failure::Io(format!(
                        "`{}` runs no image: the local executor runs it",
                        req.name
                    )))
                })?;
                let engine = self.engine().await.map_err(failed)?;
                let image = steps::image_for(engine, &req.store, container, &req.deps)
                    .await
                    .map_err(failed)?;
                // The step holds its caches until it is done.
                let (_caches, mounts) =
                    steps::lock_caches(&req.store, &container.caches, |m| req.events.warn(m))
                        .await
                        .map_err(failed)?;
                let runner = ContainerRun {
                    engine: engine.clone(),
                    image,
                    caches: mounts,
                    log: log_fn(&req.events, &run.secrets),
                };
                step::run(StepRequest {
                    scratch_prefix: req.scratch_prefix.clone(),
                    step: run,
                    sources: &req.sources,
                    deps: &req.deps,
                    store: &req.store,
                    runs_in: RunsIn::Container(&runner),
                    perturb: req.perturb.clone(),
                })
                .await
            }
            Work::Stage {
                parent,
                step,
                runs_on,
            } => self.stage(&req, parent.as_deref(), step, runs_on).await,
            Work::ImagePull(params) => {
                let started = std::time::SystemTime::now();
                let output = steps::pull(&req.store, params).await.map_err(failed)?;
                let result =
                    step::action_result(output, None, started, std::time::SystemTime::now());
                Ok(StepSuccess::whole(output, result))
            }
            Work::DataRoot(params) => {
                let started = std::time::SystemTime::now();
                let output =
                    crate::data_root::build(&req.store, &req.scratch_prefix, params, &req.deps)
                        .await?;
                let result =
                    step::action_result(output, None, started, std::time::SystemTime::now());
                Ok(StepSuccess::whole(output, result))
            }
            Work::Builtin { .. } => Err(failed(Failure::Io(format!(
                "`{}` is a built-in rule: the local executor runs it",
                req.name
            )))),
        }
    }

    /// A stage step: a `copy` in-process, a command in a container.
    async fn stage(
        &self,
        req: &Request,
        parent: Option<&str>,
        stage_step: &StageStep,
        runs_on: &RunsOn,
    ) -> Result<StepSuccess, StepFailure> {
        let parent_output = parent.map(|p| {
            req.deps
                .iter()
                .find(|(n, _)| n == p)
                .map(|(_, d)| *d)
                .expect("the parent is a dependency")
        });
        let (store, platform) = (req.store.clone(), runs_on.platform.clone());
        let parent_tree = tokio::task::spawn_blocking(move || {
            steps::stage_parent(&store, parent_output, &platform)
        })
        .await
        .map_err(|e| failed(Failure::Io(e.to_string())))?
        .map_err(failed)?;
        let started = std::time::SystemTime::now();
        match stage_step {
            StageStep::Copy(copy) => {
                // The next step's image can be this tree's parent's plus one layer.
                let images = self.images.clone();
                let input_root = req.input_root.ok_or_else(|| {
                    failed(Failure::Io(format!(
                        "`{}` was handed over without its inputs in the store",
                        req.name
                    )))
                })?;
                let (store, copy) = (req.store.clone(), copy.clone());
                let output = tokio::task::spawn_blocking(move || {
                    steps::copy_step(&store, parent_tree, input_root, &copy, |tree, base| {
                        images.remember_base(tree, base)
                    })
                })
                .await
                .map_err(|e| failed(Failure::Io(e.to_string())))?
                .map_err(failed)?;
                let result =
                    step::action_result(output, None, started, std::time::SystemTime::now());
                Ok(StepSuccess::whole(output, result))
            }
            StageStep::Run(run) => {
                let engine = self.engine().await.map_err(failed)?;
                let (_locks, mounts) =
                    steps::lock_caches(&req.store, &run.caches, |m| req.events.warn(m))
                        .await
                        .map_err(failed)?;
                let own_deps: Vec<(String, Digest)> = req
                    .deps
                    .iter()
                    .filter(|(n, _)| Some(n.as_str()) != parent)
                    .cloned()
                    .collect();
                step::remove_stale_scratch(&req.store, &req.scratch_prefix);
                steps::run_stage(StageRequest {
                    scratch_prefix: req.scratch_prefix.clone(),
                    engine,
                    store: &req.store,
                    parent: parent_tree,
                    platform: &runs_on.platform,
                    step: run,
                    sources: &req.sources,
                    deps: &own_deps,
                    caches: &mounts,
                    log: log_fn(&req.events, &run.secrets()),
                    perturb: req.perturb.clone(),
                })
                .await
            }
        }
    }
}

impl Executor for DockerExecutor {
    fn runs(&self, work: &Work) -> bool {
        match work {
            Work::Run(step) => step.container.is_some(),
            Work::Stage { .. } | Work::ImagePull(_) | Work::DataRoot(_) => true,
            Work::Builtin { .. } => false,
        }
    }

    fn execute(&self, request: Request) -> BoxFuture<'_, Result<StepSuccess, StepFailure>> {
        Box::pin(self.run(request))
    }

    /// Removes every container this executor's steps still have: a
    /// dropped step only scheduled its container's removal.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            if let Some(Ok(engine)) = self.engine.get() {
                let _ = crate::remove_all(engine).await;
            }
        })
    }
}

/// Hands a step's log lines to the build, with the secrets it received
/// masked.
fn log_fn(events: &Arc<dyn StepEvents>, secrets: &[String]) -> LogFn {
    let (events, masks) = (events.clone(), Masks::new(secrets));
    Arc::new(move |line: &str| events.log(&masks.line(line)))
}

/// A failure before the step ran: no logs, no scratch folder.
fn failed(failure: Failure) -> StepFailure {
    StepFailure::without_logs(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_exec::LocalExecutor;
    use strata_rules::image_pull::PullParams;

    /// An `image-pull` is this executor's, never the local one's (which
    /// comes first in a build's executors).
    #[test]
    fn image_pulls_go_to_the_docker_executor() {
        let pull = Work::ImagePull(PullParams {
            reference: format!("127.0.0.1:5000/base@sha256:{}", "0".repeat(64)),
            digest: format!("sha256:{}", "0".repeat(64)),
            platform: "linux/amd64".into(),
            auth_env: None,
        });
        let (local, docker) = (LocalExecutor::new(), DockerExecutor::new());
        assert!(docker.runs(&pull));
        assert!(!local.runs(&pull));
    }
}
