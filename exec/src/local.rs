//! The local executor: `run` steps without an image as processes of this
//! machine (in the namespace sandbox when it works here, see `Isolation`),
//! and built-in rules in-process.

use tokio::sync::OnceCell;

use strata_rules::Work;
use strata_rules::builtin::{Builtin, BuiltinError, Ctx};
use strata_store::{Digest, Store};

use std::sync::Arc;

use crate::executor::{BoxFuture, Executor, Request};
use crate::pool::ScratchPool;
use crate::step::{self, Failure, Isolation, RunsIn, StepFailure, StepRequest, StepSuccess};
use crate::trees::Trees;
use crate::{fstree, sandbox};

/// Runs steps on this machine.
#[derive(Default)]
pub struct LocalExecutor {
    /// Probed on first use: keys depend on it, so it is known before the
    /// first key and stays the same for the whole build.
    isolation: OnceCell<Isolation>,
    /// Scratch folders and input trees sandboxed steps reuse, for the
    /// store of the first step that asked (`None` where trees cannot be
    /// used: those steps stage their inputs).
    reuse: std::sync::OnceLock<Option<Reusable>>,
}

/// What sandboxed steps of one store reuse (see `step::Reuse`).
struct Reusable {
    store: std::path::PathBuf,
    pool: ScratchPool,
    trees: Arc<Trees>,
}

impl LocalExecutor {
    pub fn new() -> LocalExecutor {
        LocalExecutor::default()
    }

    /// How steps are isolated here; the first call probes (in `store`'s
    /// scratch folder) whether the namespace sandbox works.
    pub async fn isolation(&self, store: &Store) -> &Isolation {
        self.isolation.get_or_init(|| probe_isolation(store)).await
    }

    async fn run(&self, req: Request) -> Result<StepSuccess, StepFailure> {
        let isolation = self.isolation(&req.store).await.clone();
        match &req.work {
            Work::Run(run) => {
                step::remove_stale_scratch(&req.store, &req.scratch_prefix);
                let step_request = StepRequest {
                    scratch_prefix: req.scratch_prefix.clone(),
                    step: run,
                    sources: &req.sources,
                    deps: &req.deps,
                    store: &req.store,
                    runs_in: RunsIn::Host(&isolation),
                    perturb: req.perturb.clone(),
                };
                match self.reusable(&req.store, &isolation) {
                    Some(r) => {
                        let reuse = step::Reuse {
                            pool: &r.pool,
                            trees: r.trees.clone(),
                        };
                        step::run_reusing(step_request, reuse).await
                    }
                    None => step::run(step_request).await,
                }
            }
            Work::Builtin {
                rule,
                source_date_epoch,
            } => {
                let sde = source_date_epoch.actual.parse::<u64>().unwrap_or(0);
                let input_root = req.input_root.ok_or_else(|| {
                    failed(Failure::Io(format!(
                        "`{}` was handed over without its inputs in the store",
                        req.name
                    )))
                })?;
                let (store, rule, dep_keys) = (req.store.clone(), rule.clone(), req.dep_keys);
                let started = std::time::SystemTime::now();
                let output = tokio::task::spawn_blocking(move || {
                    run_builtin(&store, &rule, input_root, sde, dep_keys)
                })
                .await
                .map_err(|e| failed(Failure::Io(e.to_string())))?
                .map_err(failed)?;
                let result =
                    step::action_result(output, None, started, std::time::SystemTime::now());
                Ok(StepSuccess::whole(output, result))
            }
            _ => Err(failed(Failure::Io(format!(
                "the local executor does not run `{}`",
                req.name
            )))),
        }
    }
}

impl LocalExecutor {
    /// The pool and trees of `store` for sandboxed steps; `None` for
    /// unsandboxed ones, another store than the first, or where trees
    /// cannot be used.
    fn reusable(&self, store: &Store, isolation: &Isolation) -> Option<&Reusable> {
        if !matches!(isolation, Isolation::Sandbox { .. }) {
            return None;
        }
        let reusable = self
            .reuse
            .get_or_init(|| {
                Some(Reusable {
                    store: store.root().to_path_buf(),
                    pool: ScratchPool::new(),
                    trees: Arc::new(Trees::open(store)?),
                })
            })
            .as_ref()?;
        (reusable.store == store.root()).then_some(reusable)
    }
}

impl Executor for LocalExecutor {
    fn runs(&self, work: &Work) -> bool {
        match work {
            Work::Run(step) => step.container.is_none(),
            Work::Builtin { .. } => true,
            _ => false,
        }
    }

    fn execute(&self, request: Request) -> BoxFuture<'_, Result<StepSuccess, StepFailure>> {
        Box::pin(self.run(request))
    }
}

/// A failure with no logs and no scratch folder.
fn failed(failure: Failure) -> StepFailure {
    StepFailure::without_logs(failure)
}

/// Runs a built-in rule in this (blocking) thread; its input root and
/// sources are in the store.
fn run_builtin(
    store: &Store,
    rule: &Builtin,
    input_root: Digest,
    source_date_epoch: u64,
    dep_keys: std::collections::BTreeMap<String, Digest>,
) -> Result<Digest, Failure> {
    let ctx = Ctx {
        cas: store.cas(),
        input_root,
        source_date_epoch,
        dep_keys,
    };
    rule.run(&ctx).map_err(|e| match e {
        BuiltinError::Store(e) => Failure::Store(e),
        BuiltinError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
            Failure::Rule(format!("the store's disk is full: {e}"))
        }
        e => Failure::Rule(e.to_string()),
    })
}

/// Decides once per build whether steps can run in namespaces here.
async fn probe_isolation(store: &Store) -> Isolation {
    if std::env::var("STRATA_SANDBOX").is_ok_and(|v| v == "off") {
        return Isolation::Unsandboxed {
            reason: "disabled by STRATA_SANDBOX=off".into(),
        };
    }
    let helper = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            return Isolation::Unsandboxed {
                reason: format!("cannot find the strata binary: {e}"),
            };
        }
    };
    let probe = match tempfile::Builder::new()
        .prefix(".probe-")
        .tempdir_in(store.scratch_dir())
    {
        Ok(d) => d.keep(),
        Err(e) => {
            return Isolation::Unsandboxed {
                reason: format!("cannot create a probe folder: {e}"),
            };
        }
    };
    let exec_root = probe.join("exec");
    let _ = step::create_exec_root(&exec_root);
    let mut probe_command = tokio::process::Command::new(&helper);
    probe_command
        .args(sandbox::helper_args(
            &exec_root,
            false,
            Default::default(),
            None,
            &["/bin/sh".into(), "-c".into(), "exit 0".into()],
        ))
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // The helper asks to die with the thread that started it, as every
    // step's does: started from a runtime thread that retires mid-probe, it
    // would be killed and the sandbox wrongly reported as unusable.
    let out = match crate::launch::spawn(probe_command).await {
        Ok(child) => child.wait_with_output().await,
        Err(e) => Err(e),
    };
    fstree::remove_tree(&probe);
    match out {
        Ok(o) if o.status.success() => Isolation::Sandbox { helper },
        Ok(o) => Isolation::Unsandboxed {
            reason: String::from_utf8_lossy(&o.stderr)
                .trim()
                .trim_start_matches("strata-sandbox: ")
                .to_string(),
        },
        Err(e) => Isolation::Unsandboxed {
            reason: format!("cannot start the sandbox helper: {e}"),
        },
    }
}
