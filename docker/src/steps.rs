//! The container work the executor does: `run` steps with `image:`,
//! `stage` steps, and `image-pull`.
//!
//! Every container this process starts is removed (see the crate's
//! documentation), and steps see exactly what the sandbox would show:
//! `/strata/work` and `/strata/deps` read-only, `$OUT`, `$HOME` and
//! `$TMPDIR` writable, no network unless declared.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use strata_exec::BoxFuture;
use strata_exec::caches::{self, CacheLock};
use strata_exec::fstree::remove_tree;
use strata_exec::perturb::Perturbation;
use strata_exec::source::SourceFile;
use strata_exec::step::{self, ContainerRunner, Failure, StepFailure, StepSuccess};
use strata_formats::oci;
use strata_rules::builtin::Ctx;
use strata_rules::image_pull::PullParams;
use strata_rules::layout;
use strata_rules::platform::Platform;
use strata_rules::run::{Container, ImageRef, RunStep};
use strata_rules::stage;
use strata_store::{Digest, Store};

use crate::{ContainerSpec, Engine, LogSink, Mount};

/// Where a step's log lines go as they are printed.
pub type LogFn = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// What a containerized `run` step needs besides its staged exec root.
pub struct ContainerRun {
    pub engine: Engine,
    pub image: String,
    pub caches: Vec<(PathBuf, String)>,
    pub log: LogFn,
}

fn log_sink(scratch: &Path, log: &LogFn) -> LogSink {
    let log = log.clone();
    LogSink::new(
        scratch.join("stdout"),
        scratch.join("stderr"),
        move |_, line| log(line),
    )
}

impl ContainerRunner for ContainerRun {
    fn run<'a>(
        &'a self,
        step: &'a RunStep,
        scratch: &'a Path,
        exec_root: &'a Path,
    ) -> BoxFuture<'a, Result<Option<Failure>, Failure>> {
        Box::pin(run_step(self, step, scratch, exec_root))
    }
}

fn docker_failure(e: crate::DockerError) -> Failure {
    Failure::Io(e.to_string())
}

fn rule_failure(e: impl Into<strata_rules::builtin::BuiltinError>) -> Failure {
    match e.into() {
        strata_rules::builtin::BuiltinError::Store(e) => Failure::Store(e),
        e => Failure::Rule(e.to_string()),
    }
}

/// Makes the image of a `run` step present and returns what to run: an
/// image ID, whose platform is the step's.
pub async fn image_for(
    engine: &Engine,
    store: &Store,
    container: &Container,
    deps: &[(String, Digest)],
) -> Result<String, Failure> {
    let platform = &container.runs_on.platform;
    match &container.image {
        ImageRef::Pinned { name, digest } => {
            let reference = format!("{name}@{digest}");
            crate::ensure_pinned(engine, &reference, platform)
                .await
                .map_err(docker_failure)
        }
        ImageRef::Target(t) => {
            let layout = deps
                .iter()
                .find(|(n, _)| n == t)
                .map(|(_, d)| *d)
                .expect("the image target is a dependency");
            // The image's own platform (see `load::platform`) picks the
            // manifest and config read.
            let (cas_store, l, platform) = (store.clone(), layout, platform.to_string());
            let image = tokio::task::spawn_blocking(move || {
                oci::layout::read(cas_store.cas(), &l, &platform)
            })
            .await
            .map_err(|e| Failure::Io(e.to_string()))?
            .map_err(|e| Failure::Rule(format!("`{t}` is not an image: {e}")))?;
            let id = image.config.sha256.clone();
            crate::ensure_layout(engine, store.cas(), &layout, &id)
                .await
                .map_err(docker_failure)?;
            Ok(id)
        }
    }
}

/// Takes the step's caches (waiting for other writers) for the duration of
/// the step.
pub async fn lock_caches(
    store: &Store,
    wanted: &std::collections::BTreeMap<String, String>,
    warn: impl Fn(&str),
) -> Result<(Vec<CacheLock>, Vec<(PathBuf, String)>), Failure> {
    let mut locks = Vec::new();
    let mut mounts = Vec::new();
    for (name, target) in wanted {
        let failed = |e: std::io::Error| Failure::Io(format!("cannot lock cache `{name}`: {e}"));
        let held = match caches::try_lock(store, name).map_err(failed)? {
            Some(l) => l,
            None => {
                warn(&format!(
                    "waiting for cache `{name}` (used by another step)"
                ));
                // Waiting on the lock blocks: not on a runtime thread.
                let (store, n) = (store.clone(), name.clone());
                tokio::task::spawn_blocking(move || caches::lock(&store, &n))
                    .await
                    .map_err(|e| Failure::Io(e.to_string()))?
                    .map_err(failed)?
            }
        };
        mounts.push((held.dir.clone(), target.clone()));
        locks.push(held);
    }
    Ok((locks, mounts))
}

/// Runs a `run` step's command in its container, with the exec root's
/// folders mounted at the sandbox layout. `Ok(None)` when it exited 0.
async fn run_step(
    run: &ContainerRun,
    step: &RunStep,
    scratch: &Path,
    exec_root: &Path,
) -> Result<Option<Failure>, Failure> {
    let container = step.container.as_ref().expect("a container step");
    // Writable folders for a declared non-root user; the scratch folder is
    // private to this step.
    if container.user.is_some() {
        for sub in [layout::OUT, layout::HOME, layout::TMP] {
            let p = exec_root.join(sub);
            fs::set_permissions(&p, fs::Permissions::from_mode(0o1777)).map_err(|e| {
                Failure::Io(format!(
                    "cannot open {} to the step's user: {e}",
                    p.display()
                ))
            })?;
        }
    }
    let mut mounts: Vec<Mount> = [
        (layout::WORK, true),
        (layout::DEPS, true),
        (layout::OUT, false),
        (layout::HOME, false),
        (layout::TMP, false),
    ]
    .into_iter()
    .map(|(sub, read_only)| Mount {
        host: exec_root.join(sub),
        target: layout::in_sandbox(sub),
        read_only,
    })
    .collect();
    mounts.extend(run.caches.iter().map(|(host, target)| Mount {
        host: host.clone(),
        target: target.clone(),
        read_only: false,
    }));
    let spec = ContainerSpec {
        image: run.image.clone(),
        argv: step.argv.clone(),
        env: step.env.clone(),
        workdir: layout::in_sandbox(layout::WORK),
        user: container.user.clone(),
        network: step.network,
        mounts,
    };
    let sink = log_sink(scratch, &run.log);
    let finished = match crate::run_within(&run.engine, &spec, sink, step.limits.time).await {
        Ok(finished) => finished,
        Err(crate::DockerError::TimedOut { limit }) => {
            return Ok(Some(Failure::TimedOut { limit }));
        }
        Err(e) => return Err(docker_failure(e)),
    };
    let code = finished.exit_code;
    finished.container.remove().await.map_err(docker_failure)?;
    Ok(match code {
        0 => None,
        c => Some(Failure::Exit(c as i32)),
    })
}

/// The root file system a stage step starts from: the parent's output,
/// flattened when it is an image layout; an empty tree for `scratch`.
pub fn stage_parent(
    store: &Store,
    parent: Option<Digest>,
    platform: &Platform,
) -> Result<Option<Digest>, Failure> {
    let Some(parent) = parent else {
        return Ok(None);
    };
    let cas = store.cas();
    if oci::layout::is_layout(cas, &parent).map_err(rule_failure)? {
        let image = oci::layout::read(cas, &parent, &platform.to_string()).map_err(rule_failure)?;
        return oci::layer::flatten(cas, &image)
            .map(Some)
            .map_err(rule_failure);
    }
    Ok(Some(parent))
}

/// A `copy` step, in-process.
///
/// Its output is the parent plus the copied files: `remember` records that,
/// so the output's image can be the parent's plus one layer.
pub fn copy_step(
    store: &Store,
    parent: Option<Digest>,
    input_root: Digest,
    copy: &stage::CopyInto,
    remember: impl FnOnce(Digest, Digest),
) -> Result<Digest, Failure> {
    let ctx = Ctx {
        cas: store.cas(),
        input_root,
        source_date_epoch: 0,
        dep_keys: Default::default(),
    };
    let output = stage::copy_into(&ctx, parent, copy).map_err(rule_failure)?;
    if let Some(p) = parent {
        remember(output, p);
    }
    Ok(output)
}

/// Everything a `stage` step with a command needs.
pub struct StageRequest<'a> {
    pub scratch_prefix: String,
    pub engine: &'a Engine,
    pub store: &'a Store,
    pub parent: Option<Digest>,
    /// What the container is made for: its tree image is labelled so.
    pub platform: &'a strata_rules::platform::Platform,
    pub step: &'a strata_rules::stage::RunInStage,
    pub sources: &'a [SourceFile],
    /// The step's own dependencies (not the parent), mounted read-only.
    pub deps: &'a [(String, Digest)],
    pub caches: &'a [(PathBuf, String)],
    pub log: LogFn,
    /// Set by `strata audit`.
    pub perturb: Option<Perturbation>,
}

/// Runs a stage step's command in a container on its parent tree; the
/// output is the container's root file system afterwards.
pub async fn run_stage(req: StageRequest<'_>) -> Result<StepSuccess, StepFailure> {
    let reverse = req.perturb.as_ref().is_some_and(|p| p.reverse_dirs);
    let (scratch, _scratch_lock) = step::prepare(
        req.store,
        &req.scratch_prefix,
        req.sources,
        req.deps,
        true,
        reverse,
    )
    .await?;
    let exec_root = scratch.join("exec");
    let early = |failure: Failure| step::kept(&scratch, failure);
    let started = SystemTime::now();
    let outcome = stage_run(&req, &exec_root, &scratch).await.map_err(early)?;
    let finished = SystemTime::now();
    let stdout_path = scratch.join("stdout");
    let stderr_path = scratch.join("stderr");
    step::mask_logs(&req.step.secrets(), &scratch).map_err(early)?;
    let output = outcome.map_err(|failure| StepFailure {
        failure,
        stdout: step::tail(&stdout_path),
        stderr: step::tail(&stderr_path),
        scratch: Some(scratch.clone()),
    })?;
    let cas = req.store.cas();
    let logs = cas
        .put_file_move(&stdout_path)
        .and_then(|o| Ok((o, cas.put_file_move(&stderr_path)?)))
        .map_err(|e| early(Failure::Store(e)))?;
    remove_tree(&scratch);
    let result = step::action_result(output, Some(logs), started, finished);
    Ok(StepSuccess::whole(output, result))
}

/// A `run` step of a stage: the command in a container whose root file
/// system is the parent tree, then the container's file system as the
/// output (what Docker put there for its own use restored from the parent).
async fn stage_run(
    req: &StageRequest<'_>,
    exec_root: &Path,
    scratch: &Path,
) -> Result<Result<Digest, Failure>, Failure> {
    let (engine, store, step) = (req.engine, req.store, req.step);
    let base = match req.parent {
        Some(p) => p,
        None => strata_store::tree::TreeBuilder::new()
            .store(store.cas())
            .map_err(Failure::Store)?,
    };
    let image = crate::ensure_tree_image(engine, store.cas(), &base, req.platform)
        .await
        .map_err(docker_failure)?;
    let mut mounts = vec![
        Mount {
            host: exec_root.join(layout::WORK),
            target: stage::SRCS_MOUNT.into(),
            read_only: true,
        },
        Mount {
            host: exec_root.join(layout::DEPS),
            target: stage::DEPS_MOUNT.into(),
            read_only: true,
        },
    ];
    mounts.extend(req.caches.iter().map(|(host, target)| Mount {
        host: host.clone(),
        target: target.clone(),
        read_only: false,
    }));
    let (argv, _) = step.argv();
    let spec = ContainerSpec {
        image,
        argv,
        env: {
            let env: Vec<(String, String)> =
                step.env().into_iter().map(|(k, v)| (k, v.actual)).collect();
            match &req.perturb {
                Some(p) => p.step_env(&env, |k| step.env.contains_key(k)),
                None => env,
            }
        },
        workdir: step.workdir.clone(),
        user: step.user.clone(),
        network: step.network,
        mounts,
    };
    let finished = crate::run(engine, &spec, log_sink(scratch, &req.log))
        .await
        .map_err(docker_failure)?;
    if finished.exit_code != 0 {
        let code = finished.exit_code;
        finished.container.remove().await.map_err(docker_failure)?;
        return Ok(Err(Failure::Exit(code as i32)));
    }
    // Read from the overlay's upper folder when the engine is local: only
    // what the step changed; the same tree as an export, which is the way
    // for any other engine.
    let exported = match finished
        .container
        .changes_on(store.cas(), &base)
        .await
        .map_err(docker_failure)?
    {
        Some(tree) => tree,
        None => finished
            .container
            .export_tree(store.cas())
            .await
            .map_err(docker_failure)?,
    };
    let injected: Vec<String> = finished.container.injected_paths().to_vec();
    finished.container.remove().await.map_err(docker_failure)?;
    let (s, p) = (store.clone(), base);
    let output = tokio::task::spawn_blocking(move || {
        crate::restore_injected(s.cas(), &p, &exported, &injected)
    })
    .await
    .map_err(|e| Failure::Io(e.to_string()))?
    .map_err(docker_failure)?;
    // The next step starts from this tree: the engine can then make its
    // image as this step's base plus the changes.
    engine.remember_base(output, base);
    Ok(Ok(output))
}

/// Pulls an `image-pull` target's image into an OCI layout tree.
pub async fn pull(store: &Store, params: &PullParams) -> Result<Digest, Failure> {
    let reference = strata_registry::Reference::parse(&params.reference)
        .map_err(|e| Failure::Rule(e.to_string()))?;
    let mut options = strata_registry::ClientOptions::default();
    if let Some((user_env, pass_env)) = &params.auth_env {
        let read = |name: &str| {
            std::env::var(name).map_err(|_| {
                Failure::Rule(format!(
                    "the registry credentials are read from ${name}, which is not set"
                ))
            })
        };
        options = options.with_credentials(
            reference.registry(),
            strata_registry::Credentials::new(read(user_env)?, read(pass_env)?),
        );
    }
    let client = strata_registry::Client::new(options).map_err(|e| Failure::Rule(e.to_string()))?;
    let pulled = strata_registry::pull(&client, &reference, &params.platform, store.cas())
        .await
        .map_err(|e| Failure::Rule(e.to_string()))?;
    let blob = |b: &strata_registry::PulledBlob| oci::layout::Blob {
        media_type: b.media_type.clone(),
        sha256: b.sha256.clone(),
        size: b.size,
        stored: b.stored,
    };
    let manifest = blob(&pulled.manifest);
    let config = blob(&pulled.config);
    let layers: Vec<oci::layout::Blob> = pulled.layers.iter().map(blob).collect();
    let s = store.clone();
    // Pinned by digest, the image has no tag to record.
    tokio::task::spawn_blocking(move || {
        oci::layout::assemble(s.cas(), &manifest, &config, &layers, None)
    })
    .await
    .map_err(|e| Failure::Io(e.to_string()))?
    .map_err(rule_failure)
}
