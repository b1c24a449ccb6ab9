//! Runs the planned targets in dependency order, up to `jobs` at a time.
//!
//! Each target, once its dependencies are done, is keyed (with their output
//! digests) and looked up by a task in the cache layers (`execute`); a miss
//! comes back to the loop, which hands it to the layers, and so to its
//! executor (`strata_exec::Executors`, given by the caller), when a slot is
//! free. What a build looks up and writes is the layers' business, chosen
//! once from `Settings` at its start. The loop is the only
//! place that decides what runs next, tasks only report: so a failure the
//! loop has seen stops every later start (without `-k`), and among steps
//! that could start, the one on the longest remaining path goes first
//! (`critical_path`).

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use strata_exec::{Executors, Isolation, Request, StepEvents, StepFailure};
use strata_rules::stage::StageStep;
use strata_store::remote_cache::{RemoteCache, Warn};
use strata_store::{Digest, Store};
use tokio::task::JoinSet;

use crate::audit::perturb::AuditRun;
use crate::critical_path::{Rank, Ranker, ReadyOrder};
use crate::declared::DeclaredOutputs;
use crate::execute::hits::HitCache;
use crate::execute::{Layers, Policy, PreparedAction};
use crate::key;

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

pub use crate::job::Job;

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
    /// The action-cache hits the workspace's builds keep (a build's only).
    pub hits: Option<Arc<HitCache>>,
    /// The nodes (by label) whose outputs go to `out/`: an output of one
    /// that a remote executor returned with its files held is fetched as
    /// soon as the step ends.
    pub placed: std::collections::HashSet<String>,
}

struct Shared {
    store: Store,
    settings: Settings,
    isolation: Isolation,
    observer: Arc<dyn Observer>,
    /// The caches around the executors: looked up by tasks, and what runs
    /// the steps that miss them.
    layers: Layers,
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
    action: PreparedAction,
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
        let key = miss.action.key();
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

/// Runs `jobs` (keyed by node, `order` topological) on `executors` and
/// returns every outcome.
pub async fn run(
    store: Store,
    settings: Settings,
    jobs: BTreeMap<NodeIndex, Job>,
    order: Vec<NodeIndex>,
    observer: Arc<dyn Observer>,
    remote: Option<Arc<dyn RemoteCache>>,
    executors: Executors,
) -> Run {
    // Steps of killed builds may have left their memory cgroups, and
    // processes in them; this build takes them away.
    let _ = tokio::task::spawn_blocking(strata_exec::cgroup::remove_stale).await;
    // Keys depend on the isolation, so it is known before the first key.
    let isolation = executors.local().isolation(&store).await.clone();
    if let Isolation::Unsandboxed { reason } = &isolation {
        observer.warn(&format!(
            "steps run without a sandbox (they can see the whole file system and the network): {reason}"
        ));
    }
    let mut ranker = Ranker::new(&jobs, &order, &settings.estimates, settings.ready_order);
    // Shared with the tasks of their nodes, not copied into each.
    let jobs: BTreeMap<NodeIndex, Arc<Job>> =
        jobs.into_iter().map(|(n, j)| (n, Arc::new(j))).collect();
    let slots = settings.jobs.max(1);
    let warnings = observer.clone();
    let warn: Warn = Arc::new(move |message: &str| warnings.warn(message));
    let policy = Policy::of(settings.no_cache, settings.audit.is_some());
    let hits = settings.hits.clone();
    let layers = Layers::new(store.clone(), executors, remote, policy, hits, warn);
    let shared = Arc::new(Shared {
        store,
        settings,
        isolation,
        observer,
        layers,
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
                let outcome = miss.task.execute(&shared, miss.action).await;
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
                shared.layers.shutdown().await;
                break;
            }
        }
    }
    for n in order {
        outcomes.entry(n).or_insert(Outcome::Skipped);
    }
    // Results stay useful to others after a failure; not after Ctrl-C.
    // Entries being published are waited for either way.
    if interrupted {
        shared.layers.settle().await;
    } else {
        shared.layers.finish().await;
    }
    crate::discard::later(jobs);
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
    jobs: &BTreeMap<NodeIndex, Arc<Job>>,
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
        job: job.clone(),
        deps,
        dep_keys,
        facts: crate::supply::FactsRequest::of(jobs, job, |n| {
            let fed = shared
                .settings
                .audit
                .as_ref()
                .and_then(|a| a.feed.get(&jobs[&n].name).copied());
            let output = fed.or_else(|| outcomes.get(&n).and_then(Outcome::output))?;
            Some((outcomes.get(&n).and_then(Outcome::key), output))
        }),
    }
}

struct Task {
    /// Its name, work and sources.
    job: Arc<Job>,
    deps: Vec<(String, Digest)>,
    dep_keys: BTreeMap<String, Digest>,
    /// An `sbom` target's facts, still to be gathered (by `look_up`, off
    /// the loop) and added to `deps`.
    facts: Option<crate::supply::FactsRequest<Arc<Job>>>,
}

impl Task {
    /// Keys the target and looks it up in the layers: its cached outcome,
    /// or the miss to execute.
    async fn look_up(mut self, shared: &Shared) -> Result<Outcome, Box<Miss>> {
        if let Some(request) = self.facts.take() {
            // The facts read the closure's files.
            let whole = shared.layers.make_whole(&request.outputs()).await;
            match whole.and_then(|()| request.add_to(&shared.store, &mut self.deps)) {
                Ok(()) => {}
                Err(msg) => {
                    return Ok(Outcome::Failed {
                        key: None,
                        failure: StepFailure::without_logs(strata_exec::Failure::Rule(format!(
                            "cannot gather the facts of `{}`: {msg}",
                            request.root
                        ))),
                    });
                }
            }
        }
        let function = shared.store.function();
        let sandboxed = matches!(shared.isolation, Isolation::Sandbox { .. });
        let keyed = key::of_work(
            function,
            shared.store.cas(),
            &self.job.target,
            &self.job.work,
            sandboxed,
            &self.job.sources,
            &self.deps,
            &self.dep_keys,
        );
        let action = PreparedAction {
            name: self.job.name.clone(),
            keyed,
            declared: DeclaredOutputs::of(&self.job.work),
            pinned: self.job.work.pinned(),
        };
        match shared.layers.look_up(&action).await {
            ControlFlow::Break(output) => Ok(Outcome::Cached {
                key: action.key(),
                output,
            }),
            ControlFlow::Continue(()) => Err(Box::new(Miss { task: self, action })),
        }
    }

    /// Executes a step the loop started, through the layers: its executor
    /// runs it, and a success is published.
    async fn execute(self, shared: &Shared, action: PreparedAction) -> Outcome {
        let key = action.key();
        // A stage step's scratch folder is named without the `#` of its name.
        let scratch_name = match &self.job.work {
            Work::Stage {
                step: StageStep::Run(_),
                ..
            } => self.job.name.replace('#', "."),
            _ => self.job.name.clone(),
        };
        let request = Request {
            name: self.job.name.clone(),
            work: self.job.work.clone(),
            store: shared.store.clone(),
            // Set by the layers for work that reads its inputs from the store.
            input_root: None,
            sources: self.job.sources.clone(),
            deps: self.deps.clone(),
            dep_keys: self.dep_keys.clone(),
            scratch_prefix: self.scratch_prefix(shared, &scratch_name),
            perturb: self.perturbation(shared),
            events: Arc::new(TargetEvents {
                observer: shared.observer.clone(),
                name: self.job.name.clone(),
            }),
        };
        let placed = shared.settings.placed.contains(&self.job.name);
        match shared.layers.execute(action, request, placed).await {
            Ok(output) => Outcome::Executed { key, output },
            Err(failure) => Outcome::Failed {
                key: Some(key),
                failure,
            },
        }
    }
}

/// What a running step tells the build, as the observer's lines of one target.
struct TargetEvents {
    observer: Arc<dyn Observer>,
    name: String,
}

impl StepEvents for TargetEvents {
    fn log(&self, line: &str) {
        self.observer.log(&self.name, line);
    }

    fn warn(&self, message: &str) {
        self.observer.warn(message);
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

    fn perturbation(&self, shared: &Shared) -> Option<strata_exec::perturb::Perturbation> {
        shared
            .settings
            .audit
            .as_ref()
            .map(|a| a.for_target(&self.job.name))
    }
}
