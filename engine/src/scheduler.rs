//! Runs the planned targets in dependency order, up to `jobs` at a time.
//!
//! Each target, once its dependencies are done, is keyed (with their output
//! digests), looked up in the action cache, and executed on a miss. The loop
//! is the only place that decides what runs next; tasks only report.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use strata_rules::Text;
use strata_rules::builtin::{Builtin, BuiltinError, Ctx};
use strata_rules::data_root::DataRootParams;
use strata_rules::image_pull::PullParams;
use strata_rules::platform::RunsOn;
use strata_rules::run::RunStep;
use strata_rules::stage::StageStep;
use strata_store::{Digest, Store, tree};
use tokio::task::JoinSet;

use crate::audit::perturb::AuditRun;
use crate::containers::{self, ContainerRun, Docker};
use crate::declared::DeclaredOutputs;
use crate::exec::{self, Isolation, StageRequest, StepFailure, StepRequest};
use crate::inputs::SourceFile;
use crate::key::{self, KeyedAction};
use crate::mask::Masks;
use crate::remote::RemoteCache;

/// What happened to one target.
#[derive(Debug)]
pub enum Outcome {
    Executed {
        key: Digest,
        output: Digest,
    },
    Cached {
        key: Digest,
        output: Digest,
    },
    Failed {
        key: Option<Digest>,
        failure: StepFailure,
    },
    Skipped,
}

impl Outcome {
    pub fn key(&self) -> Option<Digest> {
        match self {
            Outcome::Executed { key, .. } | Outcome::Cached { key, .. } => Some(*key),
            Outcome::Failed { key, .. } => *key,
            Outcome::Skipped => None,
        }
    }

    pub fn output(&self) -> Option<Digest> {
        match self {
            Outcome::Executed { output, .. } | Outcome::Cached { output, .. } => Some(*output),
            _ => None,
        }
    }
}

/// Progress notifications; the CLI renders them.
pub trait Observer: Send + Sync {
    fn planned(&self, _total: usize) {}
    fn started(&self, _target: &str) {}
    fn finished(&self, _target: &str, _outcome: &Outcome, _elapsed: Duration) {}
    fn warn(&self, _message: &str) {}
    /// A line a running step printed (container steps stream their logs).
    fn log(&self, _target: &str, _line: &str) {}
}

/// One target as the scheduler sees it.
/// What a target does when it runs.
#[derive(Clone, Debug)]
pub enum Work {
    Run(RunStep),
    Builtin {
        rule: Builtin,
        source_date_epoch: Text,
    },
    /// A stage step on its parent's tree (`None`: an empty tree), on its
    /// platform (through the emulator it is keyed with).
    Stage {
        parent: Option<String>,
        step: StageStep,
        runs_on: RunsOn,
    },
    ImagePull(PullParams),
    DataRoot(DataRootParams),
}

impl Work {
    /// The platform (and emulator) of work that runs an image's programs:
    /// `run` in an image, a stage's command; `None` for everything else.
    pub fn runs_on(&self) -> Option<&RunsOn> {
        match self {
            Work::Run(step) => step.container.as_ref().map(|c| &c.runs_on),
            Work::Stage {
                step: StageStep::Run(_),
                runs_on,
                ..
            } => Some(runs_on),
            _ => None,
        }
    }

    /// Whether the output is named in advance (`output_digest`,
    /// `image-pull`): rebuilding it can only give those bytes or fail.
    pub fn pinned(&self) -> bool {
        match self {
            Work::Run(step) => step.fixed_output.is_some(),
            Work::ImagePull(_) => true,
            _ => false,
        }
    }
}

#[derive(Clone)]
pub struct Job {
    pub name: String,
    pub work: Work,
    pub sources: Vec<SourceFile>,
    /// Dependency names and nodes, in declaration order.
    pub deps: Vec<(String, NodeIndex)>,
    pub dependents: Vec<NodeIndex>,
}

pub struct Settings {
    pub jobs: usize,
    pub keep_going: bool,
    pub no_cache: bool,
    pub workspace_tag: String,
    /// Set by `strata audit`: run every step again, perturbed, and leave
    /// the action cache alone.
    pub audit: Option<Arc<AuditRun>>,
}

struct Shared {
    store: Store,
    settings: Settings,
    isolation: Isolation,
    observer: Arc<dyn Observer>,
    /// `-j`: how many steps may execute at once. Cache lookups do not take a
    /// slot, so a mostly cached graph is not walked `-j` nodes at a time.
    exec_slots: tokio::sync::Semaphore,
    /// Set when a failure stops the build: queued steps no longer start.
    stopping: std::sync::atomic::AtomicBool,
    docker: Docker,
    /// Looked up on a local miss, filled after a step runs.
    remote: Option<Arc<RemoteCache>>,
}

/// Targets in flight beyond `-j`: their keys are computed and looked up while
/// the steps before them execute.
const LOOKAHEAD: usize = 32;

/// The result of running the graph.
pub struct Run {
    pub outcomes: BTreeMap<NodeIndex, Outcome>,
    pub interrupted: bool,
    pub isolation: Option<Isolation>,
}

/// Runs `jobs` (keyed by node, `order` topological) and returns every outcome.
pub async fn run(
    store: Store,
    settings: Settings,
    jobs: BTreeMap<NodeIndex, Job>,
    order: Vec<NodeIndex>,
    observer: Arc<dyn Observer>,
    remote: Option<Arc<RemoteCache>>,
) -> Run {
    // Steps of killed builds may have left their memory cgroups, and
    // processes in them; this build takes them away.
    let _ = tokio::task::spawn_blocking(crate::cgroup::remove_stale).await;
    // Keys depend on the isolation, so it is known before the first key.
    let isolation = probe_isolation(&store).await;
    if let Isolation::Unsandboxed { reason } = &isolation {
        observer.warn(&format!(
            "steps run without a sandbox (they can see the whole file system and the network): {reason}"
        ));
    }
    let exec_slots = tokio::sync::Semaphore::new(settings.jobs.max(1));
    let shared = Arc::new(Shared {
        store,
        settings,
        isolation,
        observer,
        exec_slots,
        stopping: std::sync::atomic::AtomicBool::new(false),
        docker: Docker::default(),
        remote,
    });
    let mut waiting: BTreeMap<NodeIndex, usize> =
        order.iter().map(|n| (*n, jobs[n].deps.len())).collect();
    let mut ready: VecDeque<NodeIndex> =
        order.iter().copied().filter(|n| waiting[n] == 0).collect();
    let mut outcomes: BTreeMap<NodeIndex, Outcome> = BTreeMap::new();
    let mut running: JoinSet<(NodeIndex, Outcome, Duration)> = JoinSet::new();
    let mut stop = false;
    let mut interrupted = false;
    shared.observer.planned(order.len());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    loop {
        while !stop && running.len() < shared.settings.jobs.max(1) + LOOKAHEAD {
            let Some(n) = ready.pop_front() else { break };
            let job = &jobs[&n];
            let deps: Vec<(String, Digest)> = job
                .deps
                .iter()
                .map(|(name, d)| {
                    let fed = shared
                        .settings
                        .audit
                        .as_ref()
                        .and_then(|a| a.feed.get(&jobs[d].name).copied());
                    (
                        name.clone(),
                        fed.or_else(|| outcomes[d].output())
                            .expect("dependencies succeeded"),
                    )
                })
                .collect();
            let dep_keys = job
                .deps
                .iter()
                .filter_map(|(name, d)| outcomes[d].key().map(|k| (name.clone(), k)))
                .collect();
            let task = Task {
                name: job.name.clone(),
                work: job.work.clone(),
                sources: job.sources.clone(),
                deps,
                dep_keys,
            };
            let shared = shared.clone();
            running.spawn(async move {
                let (outcome, elapsed) = task.run(&shared).await;
                (n, outcome, elapsed)
            });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { continue };
                let (n, outcome, elapsed) = match joined {
                    Ok(r) => r,
                    Err(e) if e.is_cancelled() => continue,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                shared.observer.finished(&jobs[&n].name, &outcome, elapsed);
                let ok = outcome.output().is_some();
                outcomes.insert(n, outcome);
                if ok {
                    for d in &jobs[&n].dependents {
                        if let Some(w) = waiting.get_mut(d) {
                            *w -= 1;
                            if *w == 0 {
                                ready.push_back(*d);
                            }
                        }
                    }
                } else if !shared.settings.keep_going {
                    stop = true;
                    shared.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            _ = &mut ctrl_c => {
                interrupted = true;
                // Dropping the tasks kills their process groups.
                running.abort_all();
                while running.join_next().await.is_some() {}
                // Dropped container steps only scheduled their removal.
                shared.docker.shutdown().await;
                break;
            }
        }
    }
    for n in order {
        outcomes.entry(n).or_insert(Outcome::Skipped);
    }
    // Results stay useful to others after a failure; not after Ctrl-C.
    if !interrupted && let Some(remote) = &shared.remote {
        remote.finish().await;
    }
    Run {
        outcomes,
        interrupted,
        isolation: Some(shared.isolation.clone()),
    }
}

struct Task {
    name: String,
    work: Work,
    sources: Vec<SourceFile>,
    deps: Vec<(String, Digest)>,
    dep_keys: BTreeMap<String, Digest>,
}

impl Task {
    /// The outcome, and how long the step ran: from the moment it had a job
    /// slot (and was reported started), not counting the wait for one, so
    /// a quick step queued behind long ones is not reported as long.
    async fn run(self, shared: &Shared) -> (Outcome, Duration) {
        let mut started = None;
        let outcome = self.outcome(shared, &mut started).await;
        let elapsed = started.map(|t: Instant| t.elapsed()).unwrap_or_default();
        (outcome, elapsed)
    }

    async fn outcome(self, shared: &Shared, started: &mut Option<Instant>) -> Outcome {
        let function = shared.store.function();
        let sandboxed = matches!(shared.isolation, Isolation::Sandbox { .. });
        let keyed = key::of_work(
            function,
            shared.store.cas(),
            &self.name,
            &self.work,
            sandboxed,
            &self.sources,
            &self.deps,
            &self.dep_keys,
        );
        let key = keyed.key;
        // A lookup reads one small action-cache entry and stats the output
        // tree's blobs: inline is cheaper than a trip to the blocking pool.
        // An audit rebuilds everything but what is pinned by its digest.
        let lookup = match &shared.settings.audit {
            None => !shared.settings.no_cache,
            Some(_) => self.work.pinned(),
        };
        let declared = DeclaredOutputs::of(&self.work);
        if lookup {
            match cached_output(&shared.store, &key, declared.as_ref()) {
                Ok(Some(output)) => return Outcome::Cached { key, output },
                Ok(None) => {}
                Err(why) => shared.observer.warn(&format!(
                    "the action-cache entry of `{}` is not its result ({why}); it was dropped and the step runs again",
                    self.name
                )),
            }
        }
        if !shared.settings.no_cache
            && let Some(remote) = &shared.remote
            && let Some(output) = remote.lookup(&shared.store, &key, declared.as_ref()).await
        {
            return Outcome::Cached { key, output };
        }
        let Ok(_slot) = shared.exec_slots.acquire().await else {
            return Outcome::Skipped;
        };
        if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Outcome::Skipped;
        }
        shared.observer.started(&self.name);
        *started = Some(Instant::now());
        match self.execute(shared, keyed).await {
            Ok(output) => Outcome::Executed { key, output },
            Err(failure) => Outcome::Failed {
                key: Some(key),
                failure,
            },
        }
    }

    async fn execute(&self, shared: &Shared, keyed: KeyedAction) -> Result<Digest, StepFailure> {
        let fail = |failure: exec::Failure| StepFailure {
            failure,
            stdout: String::new(),
            stderr: String::new(),
            scratch: None,
        };
        let key = keyed.key;
        let (output, result) = match &self.work {
            Work::Run(step) => {
                let scratch_prefix = self.scratch_prefix(shared, &self.name);
                exec::remove_stale_scratch(&shared.store, &scratch_prefix);
                // A container step holds its caches until it is done.
                let mut _caches = Vec::new();
                let container = match &step.container {
                    None => None,
                    Some(c) => {
                        let engine = shared.docker.engine().await.map_err(fail)?;
                        let image = containers::image_for(engine, &shared.store, c, &self.deps)
                            .await
                            .map_err(fail)?;
                        let (locks, mounts) =
                            containers::lock_caches(&shared.store, &c.caches, |m| {
                                shared.observer.warn(m)
                            })
                            .await
                            .map_err(fail)?;
                        _caches = locks;
                        Some(ContainerRun {
                            engine: engine.clone(),
                            image,
                            caches: mounts,
                            log: self.log_fn(shared, &step.secrets),
                        })
                    }
                };
                let success = exec::run(StepRequest {
                    scratch_prefix,
                    step,
                    sources: &self.sources,
                    deps: &self.deps,
                    store: &shared.store,
                    isolation: &shared.isolation,
                    container: container.as_ref(),
                    perturb: self.perturbation(shared),
                })
                .await?;
                // Only a succeeded step's action enters the store, ahead of
                // the action-cache entry that refers to it.
                keyed
                    .store(shared.store.cas())
                    .map_err(|e| fail(exec::Failure::Store(e)))?;
                (success.output, success.result)
            }
            Work::Stage {
                parent,
                step,
                runs_on,
            } => {
                self.stage_step(shared, &keyed, parent.as_deref(), step, runs_on)
                    .await?
            }
            Work::ImagePull(_) | Work::DataRoot(_) => {
                let started = std::time::SystemTime::now();
                let output = match &self.work {
                    Work::ImagePull(params) => containers::pull(&shared.store, params)
                        .await
                        .map_err(fail)?,
                    Work::DataRoot(params) => {
                        let prefix = self.scratch_prefix(shared, &self.name);
                        crate::data_root::build(&shared.store, &prefix, params, &self.deps).await?
                    }
                    _ => unreachable!("matched above"),
                };
                keyed
                    .store(shared.store.cas())
                    .map_err(|e| fail(exec::Failure::Store(e)))?;
                let result =
                    exec::action_result(output, None, started, std::time::SystemTime::now());
                (output, result)
            }
            Work::Builtin {
                rule,
                source_date_epoch,
            } => {
                let (store, rule, sources) =
                    (shared.store.clone(), rule.clone(), self.sources.clone());
                let sde = source_date_epoch.actual.parse::<u64>().unwrap_or(0);
                let dep_keys = self.dep_keys.clone();
                let started = std::time::SystemTime::now();
                let output = tokio::task::spawn_blocking(move || {
                    run_builtin(&store, &rule, &keyed, &sources, sde, dep_keys)
                })
                .await
                .map_err(|e| fail(exec::Failure::Io(e.to_string())))?
                .map_err(fail)?;
                let result =
                    exec::action_result(output, None, started, std::time::SystemTime::now());
                (output, result)
            }
        };
        if shared.settings.audit.is_none() {
            shared
                .store
                .action_cache()
                .put(&key, &result)
                .map_err(|e| fail(exec::Failure::Store(e)))?;
            if let Some(remote) = &shared.remote {
                remote.upload(&shared.store, key, result);
            }
        }
        Ok(output)
    }
}

impl Task {
    /// Scratch folders of this target are named `<prefix><random>`.
    fn scratch_prefix(&self, shared: &Shared, name: &str) -> String {
        let audit = match shared.settings.audit {
            Some(_) => AuditRun::SCRATCH_PREFIX,
            None => "",
        };
        format!("{audit}{}-{name}-", shared.settings.workspace_tag)
    }

    fn perturbation(&self, shared: &Shared) -> Option<crate::audit::perturb::Perturbation> {
        shared
            .settings
            .audit
            .as_ref()
            .map(|a| a.for_target(&self.name))
    }

    /// Hands a step's log lines to the progress display, with the secrets
    /// it received masked.
    fn log_fn(&self, shared: &Shared, secrets: &[String]) -> containers::LogFn {
        let (observer, name) = (shared.observer.clone(), self.name.clone());
        let masks = Masks::new(secrets);
        Arc::new(move |line: &str| observer.log(&name, &masks.line(line)))
    }

    /// A stage step: a `copy` in-process, a command in a container.
    async fn stage_step(
        &self,
        shared: &Shared,
        keyed: &KeyedAction,
        parent: Option<&str>,
        step: &StageStep,
        runs_on: &RunsOn,
    ) -> Result<(Digest, strata_store::reapi::ActionResult), StepFailure> {
        let fail = |failure: exec::Failure| StepFailure {
            failure,
            stdout: String::new(),
            stderr: String::new(),
            scratch: None,
        };
        let parent_output = parent.map(|p| {
            self.deps
                .iter()
                .find(|(n, _)| n == p)
                .map(|(_, d)| *d)
                .expect("the parent is a dependency")
        });
        let (store, platform) = (shared.store.clone(), runs_on.platform.clone());
        let parent_tree = tokio::task::spawn_blocking(move || {
            containers::stage_parent(&store, parent_output, &platform)
        })
        .await
        .map_err(|e| fail(exec::Failure::Io(e.to_string())))?
        .map_err(fail)?;
        let started = std::time::SystemTime::now();
        match step {
            StageStep::Copy(copy) => {
                let (store, copy) = (shared.store.clone(), copy.clone());
                let input_root = keyed_input_root(keyed);
                store_inputs(&shared.store, keyed, &self.sources).map_err(fail)?;
                let output = tokio::task::spawn_blocking(move || {
                    containers::copy_step(&store, parent_tree, input_root, &copy)
                })
                .await
                .map_err(|e| fail(exec::Failure::Io(e.to_string())))?
                .map_err(fail)?;
                let result =
                    exec::action_result(output, None, started, std::time::SystemTime::now());
                Ok((output, result))
            }
            StageStep::Run(run) => {
                let engine = shared.docker.engine().await.map_err(fail)?;
                let (_locks, mounts) = containers::lock_caches(&shared.store, &run.caches, |m| {
                    shared.observer.warn(m)
                })
                .await
                .map_err(fail)?;
                let own_deps: Vec<(String, Digest)> = self
                    .deps
                    .iter()
                    .filter(|(n, _)| Some(n.as_str()) != parent)
                    .cloned()
                    .collect();
                let scratch_prefix = self.scratch_prefix(shared, &self.name.replace('#', "."));
                exec::remove_stale_scratch(&shared.store, &scratch_prefix);
                let success = exec::run_stage(StageRequest {
                    scratch_prefix,
                    engine,
                    store: &shared.store,
                    parent: parent_tree,
                    platform: &runs_on.platform,
                    step: run,
                    sources: &self.sources,
                    deps: &own_deps,
                    caches: &mounts,
                    log: self.log_fn(shared, &run.secrets()),
                    perturb: self.perturbation(shared),
                })
                .await?;
                keyed
                    .store(shared.store.cas())
                    .map_err(|e| fail(exec::Failure::Store(e)))?;
                Ok((success.output, success.result))
            }
        }
    }
}

fn keyed_input_root(keyed: &KeyedAction) -> Digest {
    keyed
        .action
        .input_root_digest
        .as_ref()
        .and_then(Digest::from_proto)
        .expect("actions carry their input root")
}

/// Puts a step's sources and its action into the store, for work that reads
/// its inputs from there (built-in rules, `copy` steps).
fn store_inputs(
    store: &Store,
    keyed: &KeyedAction,
    sources: &[SourceFile],
) -> Result<(), exec::Failure> {
    for src in sources {
        let stored = store
            .cas()
            .put_file_copy(&src.abs)
            .map_err(exec::Failure::Store)?;
        if stored != src.digest {
            return Err(exec::Failure::SourceChanged {
                path: src.abs.clone(),
            });
        }
    }
    keyed.store(store.cas()).map_err(exec::Failure::Store)
}

/// Runs a built-in rule in this (blocking) thread. Its sources enter the
/// store first, since the rule reads everything from there.
fn run_builtin(
    store: &Store,
    rule: &Builtin,
    keyed: &KeyedAction,
    sources: &[SourceFile],
    source_date_epoch: u64,
    dep_keys: BTreeMap<String, Digest>,
) -> Result<Digest, exec::Failure> {
    store_inputs(store, keyed, sources)?;
    let input_root = keyed_input_root(keyed);
    let ctx = Ctx {
        cas: store.cas(),
        input_root,
        source_date_epoch,
        dep_keys,
    };
    rule.run(&ctx).map_err(|e| match e {
        BuiltinError::Store(e) => exec::Failure::Store(e),
        BuiltinError::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
            exec::Failure::Rule(format!("the store's disk is full: {e}"))
        }
        e => exec::Failure::Rule(e.to_string()),
    })
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

/// Decides once per build whether steps can run in namespaces here.
pub(crate) async fn probe_isolation(store: &Store) -> Isolation {
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
    let _ = exec::create_exec_root(&exec_root);
    let out = tokio::process::Command::new(&helper)
        .args(crate::sandbox::helper_args(
            &exec_root,
            false,
            Default::default(),
            None,
            &["/bin/sh".into(), "-c".into(), "exit 0".into()],
        ))
        .env_clear()
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    crate::fstree::remove_tree(&probe);
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
