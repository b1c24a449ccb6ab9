//! `strata audit`: is this build reproducible? Evidence, in the spirit of
//! reprotest.
//!
//! The reference is the last build of the workspace (its build records).
//! The requested targets and everything they depend on are built again,
//! with the cache bypassed and under perturbations (`perturb`): scratch
//! folders elsewhere, another `TZ`, `LANG` and umask, the environment and
//! folder listings in reverse order, another `-j`. Each dependent gets the
//! outputs this rebuild produced, so a difference travels down the chain
//! as it would in a real rebuild. Nothing is written to the action cache,
//! to `out/` or to the build records: new outputs only enter the CAS, where
//! they are compared (`compare`, `archive`) and left for `gc`.

pub mod archive;
pub mod compare;
pub mod perturb;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use serde::Serialize;
use strata_exec::{Executors, Isolation, StepFailure};
use strata_store::{Digest, DigestFunction, Store, tree};

use crate::build::{self, BuildError};
use crate::keyinfo;
use crate::plan::Plan;
use crate::records;
use crate::scheduler::{self, Job, Observer, Outcome, Settings, Work};
use crate::statcache::StatCache;
use strata_load::LoadOptions;
use strata_load::matrix::MatrixRequest;

use compare::FileDiff;
use perturb::{AuditRun, Perturbation};

/// Input folders larger than this are not copied onto a tmpfs to reverse
/// their listing order (the copy lives in memory).
pub const REORDER_LIMIT: u64 = 256 << 20;

/// What `strata audit` was asked to do.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    pub build_file: PathBuf,
    /// Targets to audit with their dependencies; empty means every target.
    pub targets: Vec<String>,
    /// The `-j` builds normally use; the audit uses another one.
    pub jobs: usize,
    pub store_dir: PathBuf,
    /// The build's `out/` (never written; only kept out of the sources).
    pub out_dir: Option<PathBuf>,
    pub load: LoadOptions,
    /// `--matrix`: audit every configuration (as the matrix build did).
    pub matrix: MatrixRequest,
}

/// The judgement on one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The rebuild gave the reference's bytes.
    Reproducible,
    /// It did not.
    NotReproducible,
    /// The rule says its output varies (`docker-data-root`): reported, never
    /// a failure.
    DeclaredNonReproducible,
    /// The rebuild failed.
    Failed,
    /// Not rebuilt, because a dependency failed (or Ctrl-C).
    Skipped,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Reproducible => "reproducible",
            Verdict::NotReproducible => "not-reproducible",
            Verdict::DeclaredNonReproducible => "declared-non-reproducible",
            Verdict::Failed => "failed",
            Verdict::Skipped => "skipped",
        }
    }
}

/// Why a target's output differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// It got exactly the reference's inputs: the target itself is where
    /// reproducibility breaks.
    InputsIdentical,
    /// A dependency's output already differed (see `differing_deps`).
    DependencyDiffered,
}

/// One target's audit.
#[derive(Debug, Serialize)]
pub struct TargetAudit {
    pub status: Verdict,
    /// The rule (`run`, `archive`, ...).
    pub rule: String,
    /// The output of the last build.
    pub reference: String,
    /// The output of the audit's rebuild.
    pub rebuilt: Option<String>,
    /// The output is pinned by a declared digest (`output_digest`,
    /// `image-pull`): reused, not rebuilt.
    pub pinned: bool,
    /// Set when the outputs differ.
    pub cause: Option<Cause>,
    /// Dependencies whose rebuilt output differed from their reference.
    pub differing_deps: Vec<String>,
    /// The paths that differ (at most `compare::LIMIT` described).
    pub files: Vec<FileDiff>,
    /// How many paths differ in all.
    pub files_total: usize,
    /// Why the rebuild failed.
    pub error: Option<String>,
    /// What could not be perturbed or compared.
    pub notes: Vec<String>,
    /// The failure with its logs, for the human report.
    #[serde(skip)]
    pub failure: Option<StepFailure>,
}

/// What the rebuild changed.
#[derive(Debug, Serialize)]
pub struct Perturbations {
    /// Where the rebuild's scratch folders are (`<store>/scratch/audit-*`).
    pub scratch: String,
    pub tz: String,
    pub lang: String,
    /// Octal.
    pub umask: String,
    /// `reversed`, or `sorted` where steps run without the sandbox.
    pub environment_order: String,
    pub directory_order: String,
    /// The `-j` of the rebuild.
    pub jobs: usize,
    /// `sandbox` or `unsandboxed: <reason>`.
    pub isolation: String,
}

/// How many targets got each verdict.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub reproducible: usize,
    pub not_reproducible: usize,
    pub declared_non_reproducible: usize,
    pub failed: usize,
    pub skipped: usize,
}

#[derive(Debug, Serialize)]
pub struct AuditReport {
    /// No target that promises reproducibility differs, failed or was
    /// skipped.
    pub reproducible: bool,
    pub counts: Counts,
    pub perturbations: Perturbations,
    pub targets: BTreeMap<String, TargetAudit>,
    /// Target names in build order.
    #[serde(skip)]
    pub order: Vec<String>,
    #[serde(skip)]
    pub function: DigestFunction,
    #[serde(skip)]
    pub elapsed: Duration,
    #[serde(skip)]
    pub interrupted: bool,
}

/// The last build of one target.
#[derive(Clone, Debug)]
struct Reference {
    key: Digest,
    output: Digest,
    reproducible: bool,
}

/// Audits the requested targets against the last build.
pub fn audit(
    opts: &AuditOptions,
    observer: Arc<dyn Observer>,
    executors: Executors,
) -> Result<AuditReport, BuildError> {
    let t0 = Instant::now();
    let plan = Plan::load(&opts.build_file, &opts.load, &opts.matrix, &opts.targets)?;
    let out_dir = plan.out_dir(opts.out_dir.as_ref())?;
    let order = plan.order();
    let workspace_tag = build::workspace_tag(&plan.ws().build_file);
    // The reference is the last build, in its digest function.
    let store = build::open_store_as_last_build(&opts.store_dir, &workspace_tag)?;
    // New outputs go to the store before they are compared: a running gc
    // must not collect them.
    let _gc_lock = crate::gc::lock_shared(&store, || {
        observer.warn("waiting for `strata store gc` to finish with this store")
    })
    .map_err(|e| BuildError::Environment(format!("cannot lock the store: {e}")))?;

    let names: Vec<String> = plan.nodes.iter().map(|n| n.label.clone()).collect();
    let refs = references(&store, &workspace_tag, &names)?;

    // Sources are hashed as a build would; the stat cache is read, but an
    // audit leaves it as it was.
    let cache_path = store
        .meta_dir()
        .join("statcache")
        .join(format!("{workspace_tag}-{}", store.function()));
    let mut stat_cache = StatCache::load(cache_path, store.tmp_dir());
    let skip = [build::canonical(&out_dir), store.root().to_path_buf()];
    // Every folder is listed afresh, and no listing kept.
    let folders = strata_load::globs::Disk;
    let mut sources = plan.hash_sources(&mut stat_cache, &folders, &skip, store.function())?;
    let emulators = crate::platforms::Emulators::of_this_machine();
    plan.check_platforms(&emulators)?;
    let mut jobs = plan.jobs(&mut sources, &emulators)?;
    let labels: BTreeMap<NodeIndex, String> =
        jobs.iter().map(|(n, j)| (*n, j.name.clone())).collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BuildError::Environment(format!("cannot start the runtime: {e}")))?;
    let isolation = runtime
        .block_on(executors.local().isolation(&store))
        .clone();
    let sandboxed = matches!(isolation, Isolation::Sandbox { .. });
    check_references(&store, &jobs, &order, &refs, sandboxed)?;

    let perturbation = Perturbation::default();
    let mut notes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut keep_dir_order = BTreeSet::new();
    let mut tree_sizes: BTreeMap<Digest, u64> = BTreeMap::new();
    for n in &order {
        let job = jobs.get_mut(n).expect("every node has a job");
        if let (Work::Run(step), Some(run)) = (&mut job.work, &plan.target(n.index()).run) {
            step.env = perturbation.step_env(&step.env, |k| run.env.contains(k));
            if sandboxed && step.container.is_none() {
                // The sandbox copies the inputs onto a tmpfs to reverse
                // their order: refuse to fill the memory with them.
                let size = job.sources.iter().map(|s| s.digest.size_bytes).sum::<u64>()
                    + job
                        .deps
                        .iter()
                        .map(|(_, d)| tree_size(&store, &refs[&labels[d]].output, &mut tree_sizes))
                        .sum::<u64>();
                if size > REORDER_LIMIT {
                    keep_dir_order.insert(job.name.clone());
                    notes.entry(job.name.clone()).or_default().push(format!(
                        "directory order not reversed: its inputs ({} MiB) are larger than {} MiB",
                        size >> 20,
                        REORDER_LIMIT >> 20
                    ));
                }
            }
        }
    }
    let feed: BTreeMap<String, Digest> = refs
        .iter()
        .filter(|(_, r)| !r.reproducible)
        .map(|(name, r)| (name.clone(), r.output))
        .collect();
    let jobs_used = if opts.jobs > 1 { 1 } else { 2 };
    let settings = Settings {
        jobs: jobs_used,
        keep_going: true,
        no_cache: true,
        workspace_tag: workspace_tag.clone(),
        audit: Some(Arc::new(AuditRun {
            perturbation: perturbation.clone(),
            feed: feed.clone(),
            keep_dir_order,
        })),
        estimates: crate::records::newest(&store.meta_dir(), &workspace_tag)
            .map(|r| r.durations())
            .unwrap_or_default(),
        ready_order: crate::critical_path::ReadyOrder::from_env(),
        hits: None,
        placed: Default::default(),
    };
    let run = runtime.block_on(scheduler::run(
        store.clone(),
        settings,
        jobs.clone(),
        order.clone(),
        observer,
        None,
        executors,
    ));

    let rebuilt: BTreeMap<String, Digest> = run
        .outcomes
        .iter()
        .filter_map(|(n, o)| Some((jobs[n].name.clone(), o.output()?)))
        .collect();
    let mut outcomes = run.outcomes;
    let function = store.function();
    let mut targets = BTreeMap::new();
    for n in &order {
        let job = &jobs[n];
        let r = &refs[&job.name];
        let mut t = TargetAudit {
            status: Verdict::Skipped,
            rule: plan.target(n.index()).work.rule_name().to_string(),
            reference: function.qualified(&r.output),
            rebuilt: None,
            pinned: false,
            cause: None,
            differing_deps: Vec::new(),
            files: Vec::new(),
            files_total: 0,
            error: None,
            notes: notes.remove(&job.name).unwrap_or_default(),
            failure: None,
        };
        match outcomes.remove(n).unwrap_or(Outcome::Skipped) {
            Outcome::Skipped => {}
            Outcome::Failed { failure, .. } => {
                t.status = Verdict::Failed;
                t.error = Some(failure.failure.to_string());
                t.failure = Some(failure);
            }
            outcome @ (Outcome::Executed { .. } | Outcome::Cached { .. }) => {
                let output = outcome.output().expect("a finished target has an output");
                t.rebuilt = Some(function.qualified(&output));
                if matches!(outcome, Outcome::Cached { .. }) {
                    t.pinned = true;
                    t.notes
                        .push("pinned by its declared digest: reused, not rebuilt".into());
                }
                t.differing_deps = job
                    .deps
                    .iter()
                    .map(|(_, d)| &jobs[d].name)
                    .filter(|label| {
                        let fed = feed.get(*label).or(rebuilt.get(*label));
                        fed != Some(&refs[*label].output)
                    })
                    .cloned()
                    .collect();
                t.status = match (output == r.output, r.reproducible) {
                    (true, true) => Verdict::Reproducible,
                    (false, true) => Verdict::NotReproducible,
                    (_, false) => Verdict::DeclaredNonReproducible,
                };
                if output != r.output {
                    t.cause = Some(if t.differing_deps.is_empty() {
                        Cause::InputsIdentical
                    } else {
                        Cause::DependencyDiffered
                    });
                    match compare::trees(store.cas(), &r.output, &output) {
                        Ok(d) => {
                            t.files = d.files;
                            t.files_total = d.total;
                        }
                        Err(e) => t.notes.push(format!("cannot compare the outputs: {e}")),
                    }
                }
            }
        }
        targets.insert(job.name.clone(), t);
    }
    let reproducible = !run.interrupted
        && targets.values().all(|t| {
            matches!(
                t.status,
                Verdict::Reproducible | Verdict::DeclaredNonReproducible
            )
        });
    let count = |v: Verdict| targets.values().filter(|t| t.status == v).count();
    let counts = Counts {
        reproducible: count(Verdict::Reproducible),
        not_reproducible: count(Verdict::NotReproducible),
        declared_non_reproducible: count(Verdict::DeclaredNonReproducible),
        failed: count(Verdict::Failed),
        skipped: count(Verdict::Skipped),
    };
    let unsandboxed = !sandboxed;
    Ok(AuditReport {
        reproducible,
        counts,
        perturbations: Perturbations {
            scratch: store
                .scratch_dir()
                .join(format!("{}*", AuditRun::SCRATCH_PREFIX))
                .display()
                .to_string(),
            tz: perturbation.tz.clone(),
            lang: perturbation.lang.clone(),
            umask: format!("{:04o}", perturbation.umask),
            environment_order: if unsandboxed { "sorted" } else { "reversed" }.into(),
            directory_order: if unsandboxed {
                "reversed where the file system lists in creation order"
            } else {
                "reversed"
            }
            .into(),
            jobs: jobs_used,
            isolation: match &isolation {
                Isolation::Sandbox { .. } => "sandbox".into(),
                Isolation::Unsandboxed { reason } => format!("unsandboxed: {reason}"),
            },
        },
        targets,
        order: names,
        function,
        elapsed: t0.elapsed(),
        interrupted: run.interrupted,
    })
}

/// The total size of the files of a stored tree.
fn tree_size(store: &Store, digest: &Digest, cache: &mut BTreeMap<Digest, u64>) -> u64 {
    *cache.entry(*digest).or_insert_with(|| {
        tree::walk(store.cas(), digest)
            .map(|entries| {
                entries
                    .iter()
                    .map(|(_, e)| match e {
                        tree::Entry::File { digest, .. } => digest.size_bytes,
                        _ => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    })
}

const BUILD_FIRST: &str =
    "run `strata build` first: the audit compares a rebuild with the last build";

/// Each target's output and key in the newest build record that has them.
fn references(
    store: &Store,
    workspace_tag: &str,
    names: &[String],
) -> Result<BTreeMap<String, Reference>, BuildError> {
    let records = records::read_all(&store.meta_dir(), workspace_tag);
    let function = store.function();
    let mut refs = BTreeMap::new();
    let mut missing = Vec::new();
    let mut gone = Vec::new();
    for name in names {
        let found = records.iter().rev().find_map(|r| {
            if r.digest_function != function.to_string() {
                return None;
            }
            let t = r.targets.get(name)?;
            t.output.as_ref()?;
            Some((t.key_digest()?, t.clone()))
        });
        let Some((key, t)) = found else {
            missing.push(format!("`{name}`"));
            continue;
        };
        let reproducible = t.reproducible;
        let whole = |tree: &Digest| tree::first_missing(store.cas(), tree).is_none();
        match t.output_digest(store).filter(whole) {
            Some(output) => {
                refs.insert(
                    name.clone(),
                    Reference {
                        key,
                        output,
                        reproducible,
                    },
                );
            }
            None => gone.push(format!("`{name}`")),
        }
    }
    if !missing.is_empty() {
        return Err(BuildError::Usage(format!(
            "no recorded build of {} in this store: {BUILD_FIRST}",
            missing.join(", ")
        )));
    }
    if !gone.is_empty() {
        return Err(BuildError::Usage(format!(
            "the last build's output of {} is no longer in the store, or its files were left \
             on the remote executor: {BUILD_FIRST} (requesting those targets, which fetches \
             their files)",
            gone.join(", ")
        )));
    }
    Ok(refs)
}

/// Refuses to audit against records the workspace has moved away from: a
/// target whose key, computed now from its recorded dependency outputs,
/// is not its recorded key (a source, the BUILD file or the isolation
/// changed since).
fn check_references(
    store: &Store,
    jobs: &BTreeMap<NodeIndex, Job>,
    order: &[NodeIndex],
    refs: &BTreeMap<String, Reference>,
    sandboxed: bool,
) -> Result<(), BuildError> {
    let mut stale = Vec::new();
    for n in order {
        let job = &jobs[n];
        let deps: Vec<(String, Digest)> = job
            .deps
            .iter()
            .map(|(name, d)| (name.clone(), refs[&jobs[d].name].output))
            .collect();
        let dep_keys: BTreeMap<String, Digest> = job
            .deps
            .iter()
            .map(|(name, d)| (name.clone(), refs[&jobs[d].name].key))
            .collect();
        // An `sbom` target's key holds the facts of what it describes.
        let mut deps = deps;
        let facts = crate::supply::FactsRequest::of(jobs, job, |d| {
            let r = refs.get(&jobs[&d].name)?;
            Some((Some(r.key), r.output))
        });
        if let Some(request) = facts {
            let _ = request.add_to(store, &mut deps);
        }
        let keyed = crate::key::of_work(
            store.function(),
            store.cas(),
            &job.target,
            &job.work,
            sandboxed,
            &job.sources,
            &deps,
            &dep_keys,
        );
        let recorded = refs[&job.name].key;
        if keyed.key == recorded {
            continue;
        }
        // Stored (CAS only) so the two keys can be taken apart.
        let changes = keyed
            .store(store.cas())
            .ok()
            .and_then(|()| {
                let old = keyinfo::read(store, &recorded)?;
                let new = keyinfo::read(store, &keyed.key)?;
                Some(keyinfo::diff(&old, &new))
            })
            .filter(|c| !c.is_empty())
            .map(|c| {
                c.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_else(|| "its inputs changed".into());
        stale.push(format!("  {}: {changes}", job.name));
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(BuildError::Usage(format!(
            "the last build is out of date for:\n{}\n{BUILD_FIRST}",
            stale.join("\n")
        )))
    }
}
