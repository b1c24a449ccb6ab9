//! Runs the planned targets in dependency order, up to `jobs` at a time.
//!
//! Each target, once its dependencies are done, is keyed (with their output
//! digests) and looked up in the action cache by a task; a miss comes back
//! to the loop, which executes it when a slot is free. The loop is the only
//! place that decides what runs next, tasks only report: so a failure the
//! loop has seen stops every later start (without `-k`), and among steps
//! that could start, the one on the longest remaining path goes first
//! (`critical_path`).

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use strata_rules::builtin::{Builtin, BuiltinError, Ctx};
use strata_rules::platform::RunsOn;
use strata_rules::stage::StageStep;
use strata_store::{Digest, Store, tree};
use tokio::task::JoinSet;

use crate::audit::perturb::AuditRun;
use crate::containers::{self, ContainerRun, Docker};
use crate::critical_path::{Rank, Ranker, ReadyOrder};
use crate::declared::DeclaredOutputs;
use crate::exec::{self, Isolation, StageRequest, StepFailure, StepRequest};
use crate::inputs::SourceFile;
use crate::key::{self, KeyedAction};
use crate::mask::Masks;
use strata_store::remote_cache::RemoteCache;

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

pub use strata_rules::Work;

/// One target as the scheduler sees it.
#[derive(Clone)]
pub struct Job {
    /// What reports, records and traces call the node: the target's name,
    /// or its label in a matrix build (`x86_64/ramdisk`).
    pub name: String,
    /// The target's own name, as keys see it (a fixed-output step is keyed
    /// by it).
    pub target: String,
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
    /// How long each target's step took when it last ran (from the build
    /// records), to find the longest remaining paths.
    pub estimates: BTreeMap<String, Duration>,
    pub ready_order: ReadyOrder,
}

struct Shared {
    store: Store,
    settings: Settings,
    isolation: Isolation,
    observer: Arc<dyn Observer>,
    docker: Docker,
    /// Looked up on a local miss, filled after a step runs.
    remote: Option<Arc<dyn RemoteCache>>,
}

/// Lookups in flight beyond `-j`: keys are computed and looked up while the
/// steps before them execute. Cache lookups take no execution slot, so a
/// mostly cached graph is not walked `-j` nodes at a time.
const LOOKAHEAD: usize = 32;

/// The result of running the graph.
pub struct Run {
    pub outcomes: BTreeMap<NodeIndex, Outcome>,
    /// How long each step that executed (or failed) ran.
    pub durations: BTreeMap<NodeIndex, Duration>,
    pub interrupted: bool,
    pub isolation: Option<Isolation>,
}

/// What a task reports to the loop.
enum Report {
    /// A target keyed and looked up: its outcome when cached, else what it
    /// needs to execute.
    LookedUp(NodeIndex, Result<Outcome, Box<Miss>>),
    /// A step that executed or failed, and how long it ran.
    Ran(NodeIndex, Outcome, Duration),
}

/// A target whose result is not cached: it waits for a slot.
struct Miss {
    task: Task,
    keyed: KeyedAction,
}

/// Targets by rank, best first, and the state of each.
#[derive(Default)]
struct Queues {
    /// Dependencies done, not looked up yet.
    ready: BinaryHeap<(Rank, NodeIndex)>,
    /// Being keyed and looked up.
    looking_up: BTreeSet<(Rank, NodeIndex)>,
    /// Not cached: waiting for a slot.
    misses: BinaryHeap<(Rank, NodeIndex)>,
    miss_work: BTreeMap<NodeIndex, Box<Miss>>,
}

impl Queues {
    /// The best miss, if nothing ranked above it may still turn out to need
    /// running: a step better placed on the critical path whose lookup is
    /// under way (or not started) is waited for rather than overtaken.
    fn next_to_start(&mut self) -> Option<(NodeIndex, Box<Miss>)> {
        let &(rank, n) = self.misses.peek()?;
        let pending_above = self.looking_up.last().is_some_and(|(r, _)| *r > rank)
            || self.ready.peek().is_some_and(|(r, _)| *r > rank);
        if pending_above {
            return None;
        }
        self.misses.pop();
        Some((
            n,
            self.miss_work.remove(&n).expect("every miss has its work"),
        ))
    }
}

/// One execution per key at a time: two nodes with one action (a matrix
/// build's configurations after early cutoff, or two targets with one
/// action) run the step once, and the other takes the result from the
/// action cache. Only the loop holds it, so the order stays the loop's.
#[derive(Default)]
struct OneRunPerKey {
    /// Keys executing now, with the misses waiting for each.
    running: BTreeMap<Digest, Vec<(NodeIndex, Box<Miss>)>>,
    /// Keys executed successfully in this build.
    done: BTreeSet<Digest>,
    /// The key each executing node runs.
    key_of: BTreeMap<NodeIndex, Digest>,
}

/// What to do with a miss the loop would start.
enum Start {
    Run(Box<Miss>),
    /// Its key has run since it was looked up: a second lookup hits.
    LookUpAgain(Box<Miss>),
    /// Its key is running; it waits for it.
    Waits,
}

impl OneRunPerKey {
    fn start(&mut self, n: NodeIndex, miss: Box<Miss>) -> Start {
        let key = miss.keyed.key;
        if self.done.contains(&key) {
            return Start::LookUpAgain(miss);
        }
        if let Some(waiting) = self.running.get_mut(&key) {
            waiting.push((n, miss));
            return Start::Waits;
        }
        self.running.insert(key, Vec::new());
        self.key_of.insert(n, key);
        Start::Run(miss)
    }

    /// `n` finished: the misses that waited for its key, to look up again
    /// (after a failure they miss again, and one of them runs).
    fn finished(&mut self, n: NodeIndex, ok: bool) -> Vec<(NodeIndex, Box<Miss>)> {
        let Some(key) = self.key_of.remove(&n) else {
            return Vec::new();
        };
        if ok {
            self.done.insert(key);
        }
        self.running.remove(&key).unwrap_or_default()
    }
}

/// Runs `jobs` (keyed by node, `order` topological) and returns every outcome.
pub async fn run(
    store: Store,
    settings: Settings,
    jobs: BTreeMap<NodeIndex, Job>,
    order: Vec<NodeIndex>,
    observer: Arc<dyn Observer>,
    remote: Option<Arc<dyn RemoteCache>>,
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
    let mut ranker = Ranker::new(&jobs, &order, &settings.estimates, settings.ready_order);
    let slots = settings.jobs.max(1);
    let shared = Arc::new(Shared {
        store,
        settings,
        isolation,
        observer,
        docker: Docker::default(),
        remote,
    });
    let mut waiting: BTreeMap<NodeIndex, usize> =
        order.iter().map(|n| (*n, jobs[n].deps.len())).collect();
    let mut queues = Queues::default();
    for &n in order.iter().filter(|n| waiting[n] == 0) {
        queues.ready.push((ranker.ready(n), n));
    }
    let mut outcomes: BTreeMap<NodeIndex, Outcome> = BTreeMap::new();
    let mut durations: BTreeMap<NodeIndex, Duration> = BTreeMap::new();
    let mut running: JoinSet<Report> = JoinSet::new();
    let mut executing = 0usize;
    // An audit runs every step on its own, and --no-cache asks for every
    // step to run; a build runs one key once.
    let mut one_run_per_key =
        (shared.settings.audit.is_none() && !shared.settings.no_cache).then(OneRunPerKey::default);
    let mut stop = false;
    let mut interrupted = false;
    shared.observer.planned(order.len());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    loop {
        // Nothing starts once a failure stops the build: the loop sees
        // every outcome before it starts anything else.
        while !stop && queues.looking_up.len() < slots + LOOKAHEAD {
            let Some((rank, n)) = queues.ready.pop() else {
                break;
            };
            queues.looking_up.insert((rank, n));
            let task = task_for(&jobs, n, &outcomes, &shared);
            let shared = shared.clone();
            running.spawn(async move { Report::LookedUp(n, task.look_up(&shared).await) });
        }
        while !stop && executing < slots {
            let Some((n, miss)) = queues.next_to_start() else {
                break;
            };
            let miss = match one_run_per_key.as_mut() {
                None => miss,
                Some(keys) => match keys.start(n, miss) {
                    Start::Run(miss) => miss,
                    Start::LookUpAgain(miss) => {
                        queues.looking_up.insert((ranker.of(n), n));
                        let shared = shared.clone();
                        running.spawn(async move {
                            Report::LookedUp(n, miss.task.look_up(&shared).await)
                        });
                        continue;
                    }
                    Start::Waits => continue,
                },
            };
            shared.observer.started(&jobs[&n].name);
            executing += 1;
            let shared = shared.clone();
            running.spawn(async move {
                let started = Instant::now();
                let outcome = miss.task.execute_keyed(&shared, miss.keyed).await;
                Report::Ran(n, outcome, started.elapsed())
            });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { continue };
                let report = match joined {
                    Ok(r) => r,
                    Err(e) if e.is_cancelled() => continue,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                let (n, outcome, elapsed) = match report {
                    Report::LookedUp(n, found) => {
                        queues.looking_up.remove(&(ranker.of(n), n));
                        match found {
                            Ok(cached) => (n, cached, Duration::ZERO),
                            Err(miss) => {
                                queues.misses.push((ranker.of(n), n));
                                queues.miss_work.insert(n, miss);
                                continue;
                            }
                        }
                    }
                    Report::Ran(n, outcome, elapsed) => {
                        executing -= 1;
                        durations.insert(n, elapsed);
                        let waited = one_run_per_key
                            .as_mut()
                            .map(|keys| keys.finished(n, outcome.output().is_some()))
                            .unwrap_or_default();
                        for (w, miss) in waited {
                            queues.looking_up.insert((ranker.of(w), w));
                            let shared = shared.clone();
                            running.spawn(async move {
                                Report::LookedUp(w, miss.task.look_up(&shared).await)
                            });
                        }
                        (n, outcome, elapsed)
                    }
                };
                shared.observer.finished(&jobs[&n].name, &outcome, elapsed);
                let ok = outcome.output().is_some();
                outcomes.insert(n, outcome);
                if ok {
                    for d in &jobs[&n].dependents {
                        if let Some(w) = waiting.get_mut(d) {
                            *w -= 1;
                            if *w == 0 {
                                queues.ready.push((ranker.ready(*d), *d));
                            }
                        }
                    }
                } else if !shared.settings.keep_going {
                    stop = true;
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
        durations,
        interrupted,
        isolation: Some(shared.isolation.clone()),
    }
}

/// The task of a target whose dependencies are done, with their outputs (or
/// those an audit feeds it) and keys.
fn task_for(
    jobs: &BTreeMap<NodeIndex, Job>,
    n: NodeIndex,
    outcomes: &BTreeMap<NodeIndex, Outcome>,
    shared: &Shared,
) -> Task {
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
    Task {
        name: job.name.clone(),
        target: job.target.clone(),
        work: job.work.clone(),
        sources: job.sources.clone(),
        deps,
        dep_keys,
    }
}

struct Task {
    name: String,
    target: String,
    work: Work,
    sources: Vec<SourceFile>,
    deps: Vec<(String, Digest)>,
    dep_keys: BTreeMap<String, Digest>,
}

impl Task {
    /// Keys the target and looks it up, locally then remotely: its cached
    /// outcome, or the miss to execute.
    async fn look_up(self, shared: &Shared) -> Result<Outcome, Box<Miss>> {
        let function = shared.store.function();
        let sandboxed = matches!(shared.isolation, Isolation::Sandbox { .. });
        let keyed = key::of_work(
            function,
            shared.store.cas(),
            &self.target,
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
                Ok(Some(output)) => return Ok(Outcome::Cached { key, output }),
                Ok(None) => {}
                Err(why) => shared.observer.warn(&format!(
                    "the action-cache entry of `{}` is not its result ({why}); it was dropped and the step runs again",
                    self.name
                )),
            }
        }
        if !shared.settings.no_cache
            && let Some(remote) = &shared.remote
            && let Some(output) = remote
                .lookup(&shared.store, &key, declared.as_ref().map(|d| d as _))
                .await
        {
            return Ok(Outcome::Cached { key, output });
        }
        Err(Box::new(Miss { task: self, keyed }))
    }

    /// Executes a step the loop started.
    async fn execute_keyed(self, shared: &Shared, keyed: KeyedAction) -> Outcome {
        let key = keyed.key;
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
    /// Scratch folders of this target are named `<prefix><random>`; a
    /// matrix label's `/`, `{`, `}` and `,` become `.` (one path component).
    fn scratch_prefix(&self, shared: &Shared, name: &str) -> String {
        let audit = match shared.settings.audit {
            Some(_) => AuditRun::SCRATCH_PREFIX,
            None => "",
        };
        let name: String = name
            .chars()
            .map(|c| match c {
                '/' | '{' | '}' | ',' => '.',
                c => c,
            })
            .collect();
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
