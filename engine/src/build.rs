//! `strata build`: the phases in order.
//!
//! load -> graph -> key (hash sources) -> execute (scheduler) -> store ->
//! materialize -> record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_exec::{Executors, Failure, Isolation, StepFailure};
use strata_rules::platform::RunsOn;
use strata_store::remote_cache::{Opened, RemoteOpener, RemoteStats, Warn};
use strata_store::{Digest, DigestFunction, Store};

use crate::critical_path::ReadyOrder;
use crate::execute::hits::HitCache;
use crate::folder_cache::FolderCache;
use crate::gc;
use crate::inputs;
use crate::materialize;
use crate::plan::Plan;
use crate::platforms::Emulators;
use crate::records::{self, Record, RecordedTarget};
use crate::scheduler::{self, Observer, Outcome, Settings};
use crate::statcache::StatCache;
use crate::trace::{self, Tracer};
use strata_load::diag::At;
use strata_load::matrix::MatrixRequest;
use strata_load::{ConfigError, LoadOptions, Workspace};

/// What `strata build` was asked to do.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub build_file: PathBuf,
    /// Targets to build; empty means every target.
    pub targets: Vec<String>,
    pub jobs: usize,
    pub keep_going: bool,
    pub no_cache: bool,
    pub store_dir: PathBuf,
    /// Defaults to `out/` beside the BUILD file.
    pub out_dir: Option<PathBuf>,
    pub load: LoadOptions,
    /// `--matrix`: the configurations built together (none: one, plain).
    pub matrix: MatrixRequest,
    /// `--trace`: where to write a Chrome trace of the build.
    pub trace: Option<PathBuf>,
    /// Opens the workspace's remote cache, if one is configured (the
    /// binary supplies it; `None` builds with the local store only).
    pub remote: Option<Arc<dyn RemoteOpener>>,
}

pub use crate::error::BuildError;

/// How one target ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Executed,
    Cached,
    Failed,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Executed => "executed",
            Status::Cached => "cached",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug)]
pub struct TargetReport {
    /// The target's name, or its label in a matrix build.
    pub name: String,
    /// In a matrix build, the configurations the node belongs to (a node
    /// several share was built once for all of them).
    pub configurations: Vec<String>,
    pub status: Status,
    pub key: Option<Digest>,
    pub output: Option<Digest>,
    pub failure: Option<StepFailure>,
    /// For failures tied to a place in BUILD.yaml (a missing declared
    /// output, a digest mismatch), a diagnostic pointing there.
    pub diagnostic: Option<ConfigError>,
}

#[derive(Debug)]
pub struct BuildReport {
    pub targets: Vec<TargetReport>,
    pub function: DigestFunction,
    pub elapsed: Duration,
    pub interrupted: bool,
    pub out_dir: PathBuf,
    /// Names this workspace's records in the store.
    pub workspace_tag: String,
    /// What the remote cache did, if one was configured and reachable.
    pub remote: Option<RemoteStats>,
    /// The configurations of a matrix build (`x86_64`, `aarch64`); empty
    /// without `--matrix`.
    pub configurations: Vec<String>,
    /// Nodes of a matrix build that several configurations share.
    pub shared: usize,
}

impl BuildReport {
    pub fn count(&self, status: Status) -> usize {
        self.targets.iter().filter(|t| t.status == status).count()
    }

    /// `<function>:<hex>`, the form `output_digest` accepts.
    pub fn digest_string(&self, d: &Digest) -> String {
        self.function.qualified(d)
    }
}

/// Loads the workspace (once per configuration of `--matrix`) and builds
/// the requested targets, the steps that miss the cache on `executors`.
pub fn build(
    opts: &BuildOptions,
    observer: Arc<dyn Observer>,
    executors: Executors,
) -> Result<BuildReport, BuildError> {
    let t0 = Instant::now();
    if let Some(path) = &opts.trace {
        trace::check_path(path).map_err(BuildError::Usage)?;
    }
    let tracer = opts
        .trace
        .as_ref()
        .map(|_| Tracer::new(observer.clone(), t0));
    let observer: Arc<dyn Observer> = match &tracer {
        Some(t) => t.clone(),
        None => observer,
    };
    let phase = |name, start| {
        if let Some(t) = &tracer {
            t.phase(name, start)
        }
    };
    let plan = Plan::load(&opts.build_file, &opts.load, &opts.matrix, &opts.targets)?;
    let emulators = Emulators::of_this_machine();
    plan.check_platforms(&emulators)?;
    let out_dir = plan.out_dir(opts.out_dir.as_ref())?;
    // Before anything runs: a build that could not place its outputs would
    // be wasted. Checked again under the lock when placing them.
    let foreign =
        materialize::foreign_entries(&out_dir, plan.roots.iter().map(|r| r.place.as_str()));
    if !foreign.is_empty() {
        return Err(BuildError::Config(foreign_entry_errors(&plan, &foreign)));
    }
    phase("load", t0);
    let started = Instant::now();
    let ws = plan.ws();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BuildError::Environment(format!("cannot start the runtime: {e}")))?;
    // A remote cache decides the digest function (BLAKE3 when it speaks it,
    // SHA-256 otherwise), so it is asked before the store opens; one that
    // cannot be asked leaves the store's own.
    let Opened {
        cache: remote,
        function,
    } = match &opts.remote {
        None => Opened {
            cache: None,
            function: DigestFunction::Blake3,
        },
        Some(opener) => {
            let warnings = observer.clone();
            let warn: Warn = Arc::new(move |message: &str| warnings.warn(message));
            runtime
                .block_on(opener.open(&ws.root, &opts.store_dir, warn))
                .map_err(BuildError::Usage)?
        }
    };
    let store = Store::open(&opts.store_dir, function)
        .map_err(|e| BuildError::Environment(format!("cannot open the store: {e}")))?;
    if let Some(remote) = &remote
        && let Err(e) = remote.remember_function(&store)
    {
        observer.warn(&format!(
            "cannot remember the store's digest function in {}: {e}",
            store.meta_dir().display()
        ));
    }
    // Held until the build returns, so `gc` never collects what this build
    // wrote before its record names it.
    let _gc_lock = gc::lock_shared(&store, || {
        observer.warn("waiting for `strata store gc` to finish with this store")
    })
    .map_err(|e| {
        BuildError::Environment(format!(
            "cannot lock {}: {e}",
            gc::lock_path(&store).display()
        ))
    })?;
    let workspace_tag = workspace_tag(&ws.build_file);

    // Key phase, first half: expand and hash sources (the stat cache spares
    // re-reading unchanged files).
    let mut folders = folder_cache(&store, &workspace_tag);
    let mut sources = hash_sources(
        &plan,
        &store,
        &workspace_tag,
        &out_dir,
        &folders,
        observer.as_ref(),
    )?;
    phase("key", started);
    let started = Instant::now();

    let jobs = plan.jobs(&mut sources, &emulators)?;
    let order = plan.order();
    // Where each container step runs, for its record.
    let runs_on: BTreeMap<String, RunsOn> = jobs
        .values()
        .filter_map(|j| Some((j.name.clone(), j.work.runs_on()?.clone())))
        .collect();
    let previous = records::newest(&store.meta_dir(), &workspace_tag);
    let estimates = previous.as_ref().map(Record::durations).unwrap_or_default();
    let hits = Arc::new(HitCache::load(
        hit_cache_path(&store, &workspace_tag),
        store.tmp_dir(),
    ));
    let settings = Settings {
        jobs: opts.jobs,
        keep_going: opts.keep_going,
        no_cache: opts.no_cache,
        workspace_tag: workspace_tag.clone(),
        audit: None,
        estimates: estimates.clone(),
        ready_order: ReadyOrder::from_env(),
        hits: Some(hits.clone()),
        placed: plan
            .roots
            .iter()
            .map(|r| plan.nodes[r.node].label.clone())
            .collect(),
    };
    let run = runtime.block_on(scheduler::run(
        store.clone(),
        settings,
        jobs,
        order,
        observer.clone(),
        remote.clone(),
        executors.clone(),
    ));
    phase("execute", started);
    let started = Instant::now();
    // The cache hits' uses, for `gc`'s least-recently-used order, while the
    // shared lock still holds it off. Best effort, as the times were: lost
    // uses only make entries look older.
    let _ = store.action_cache().flush_uses();
    if let Err(e) = hits.save(&store) {
        observer.warn(&format!("cannot save the action-cache hits: {e}"));
    }

    let mut reports: BTreeMap<String, TargetReport> = BTreeMap::new();
    // A step that did not run keeps the time it took when it last did.
    let mut durations = estimates;
    for (n, outcome) in run.outcomes {
        let index = n;
        let n = n.index();
        let t = plan.target(n);
        if let Some(d) = run.durations.get(&index) {
            let label = &plan.nodes[n].label;
            match &outcome {
                Outcome::Executed { .. } => {
                    durations.insert(label.clone(), *d);
                }
                Outcome::Failed { .. } => {
                    durations.entry(label.clone()).or_insert(*d);
                }
                _ => {}
            }
        }
        let (status, key, output, failure) = match outcome {
            Outcome::Executed { key, output } => (Status::Executed, Some(key), Some(output), None),
            Outcome::Cached { key, output } => (Status::Cached, Some(key), Some(output), None),
            Outcome::Failed { key, failure } => (Status::Failed, key, None, Some(failure)),
            Outcome::Skipped => (Status::Skipped, None, None, None),
        };
        let diagnostic = failure
            .as_ref()
            .and_then(|f| failure_diagnostic(plan.ws_of(n), t, &f.failure));
        let label = plan.nodes[n].label.clone();
        reports.insert(
            label.clone(),
            TargetReport {
                name: label,
                configurations: plan.members_of(n),
                status,
                key,
                output,
                failure,
                diagnostic,
            },
        );
    }

    if !run.interrupted {
        let requested: BTreeMap<String, Option<Digest>> = plan
            .roots
            .iter()
            .map(|r| (r.place.clone(), reports[&plan.nodes[r.node].label].output))
            .collect();
        // Outputs whose files the remote executor held are fetched now,
        // the requested ones only.
        let placed: Vec<Digest> = requested.values().flatten().copied().collect();
        runtime
            .block_on(executors.make_whole(&store, &placed))
            .map_err(|why| {
                BuildError::Environment(format!(
                    "cannot fetch the requested outputs the remote executor held: {why}"
                ))
            })?;
        let scope = out_scope(&plan);
        let lock = materialize::lock(&out_dir, |holder| {
            observer.warn(&format!(
                "waiting for {} (locked by {holder})",
                out_dir.display()
            ))
        })
        .map_err(|e| BuildError::Environment(format!("cannot lock {}: {e}", out_dir.display())))?;
        let changed = materialize::update(&store, &out_dir, &requested, &scope, &folders, &lock)
            .map_err(|e| match e {
                materialize::OutError::Foreign(entries) => {
                    BuildError::Config(foreign_entry_errors(&plan, &entries))
                }
                materialize::OutError::Io(msg) => BuildError::Environment(msg),
            })?;
        for name in changed {
            observer.warn(&format!(
                "{} was changed since it was placed; placed again from the store",
                out_dir.join(name).display()
            ));
        }
    }
    save_folder_cache(&mut folders, observer.as_ref());
    let out_dir_now = canonical(&out_dir).display().to_string();
    let left_behind = left_behind(previous.as_ref(), &out_dir_now, observer.as_ref());
    phase("materialize", started);
    let started = Instant::now();

    let rule_names: BTreeMap<String, String> = plan
        .nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            (
                node.label.clone(),
                plan.target(n).work.rule_name().to_string(),
            )
        })
        .collect();
    let record = Record {
        version: 2,
        finished: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        build_file: ws.build_file.display().to_string(),
        digest_function: store.function().to_string(),
        isolation: match &run.isolation {
            Some(Isolation::Sandbox { .. }) => "sandbox".into(),
            Some(Isolation::Unsandboxed { reason }) => format!("unsandboxed: {reason}"),
            None => "nothing executed".into(),
        },
        out_dir: Some(out_dir_now),
        left_behind,
        vars: if plan.configs.len() == 1 {
            plan.ws().vars.clone()
        } else {
            BTreeMap::new()
        },
        targets: plan
            .nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let r = &reports[&node.label];
                let t = plan.target(n);
                (
                    r.name.clone(),
                    RecordedTarget {
                        status: r.status.as_str().to_string(),
                        key: r.key.map(|k| k.hex()),
                        key_size: r.key.map(|k| k.size_bytes),
                        output: r.output.map(|o| store.function().qualified(&o)),
                        rule: t.work.rule_name().to_string(),
                        reproducible: t.work.reproducible(),
                        deps: node
                            .deps
                            .iter()
                            .map(|(name, d)| (name.clone(), plan.nodes[*d].label.clone()))
                            .filter(|(name, label)| name != label)
                            .collect(),
                        duration_ms: durations
                            .get(&r.name)
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        scratch: r
                            .failure
                            .as_ref()
                            .and_then(|f| f.scratch.as_ref())
                            .map(|p| p.display().to_string()),
                        platform: None,
                        emulator: None,
                        image: match &t.work {
                            strata_rules::Work::ImagePull(p) => Some(p.reference.clone()),
                            _ => None,
                        },
                        fetch_command: match &t.work {
                            strata_rules::Work::Run(step) if step.fixed_output.is_some() => {
                                step.keyed_command.arguments.clone()
                            }
                            _ => Vec::new(),
                        },
                    }
                    .runs_on(runs_on.get(&r.name)),
                )
            })
            .collect(),
    };
    if let Err(e) = records::write(&store.meta_dir(), &store.tmp_dir(), &workspace_tag, &record) {
        observer.warn(&format!("cannot write the build record: {e}"));
    }
    phase("record", started);
    if let (Some(t), Some(path)) = (&tracer, &opts.trace)
        && let Err(e) = t.write(path, &rule_names)
    {
        observer.warn(&format!("cannot write the trace {}: {e}", path.display()));
    }

    let report = BuildReport {
        targets: reports.into_values().collect(),
        function: store.function(),
        elapsed: t0.elapsed(),
        interrupted: run.interrupted,
        out_dir,
        workspace_tag,
        remote: remote.map(|r| r.stats()),
        configurations: plan.config_paths(),
        shared: if plan.matrix { plan.shared() } else { 0 },
    };
    crate::discard::later((plan, folders, hits, previous, record, rule_names));
    Ok(report)
}

/// Says once per folder that the previous build's output folder, no longer
/// this build's (`out_dir:` or `--out-dir` changed), still holds outputs
/// Strata placed: it never removes them unasked. Returns the folders said
/// so of, for the record.
fn left_behind(
    previous: Option<&Record>,
    out_dir_now: &str,
    observer: &dyn Observer,
) -> std::collections::BTreeSet<String> {
    let Some(previous) = previous else {
        return Default::default();
    };
    let mut said = previous.left_behind.clone();
    if let Some(old) = &previous.out_dir
        && old != out_dir_now
        && !said.contains(old)
    {
        let held = materialize::placed_count(Path::new(old));
        if held > 0 {
            let (old_shown, now_shown) = (
                strata_load::source::shown(Path::new(old)),
                strata_load::source::shown(Path::new(out_dir_now)),
            );
            let outputs = if held == 1 { "output" } else { "outputs" };
            observer.warn(&format!(
                "the output folder is now {now_shown}; {old_shown} still holds {held} {outputs} \
                 of earlier builds, which Strata leaves (`strata clean --out-dir {old_shown}` \
                 removes them)"
            ));
            said.insert(old.clone());
        }
    }
    said
}

/// What this build answers for in the output folder: the folders it places
/// entries in (the folder itself, or one per configuration of a matrix),
/// and every entry they may hold now. Entries of other configurations, and
/// a plain build's beside a matrix build's, are left alone.
fn out_scope(plan: &Plan) -> materialize::Scope {
    let mut scope = materialize::Scope::default();
    for c in &plan.configs {
        let folder = match plan.matrix {
            true => c.config.path(),
            false => String::new(),
        };
        for t in &c.ws.targets {
            scope.known.insert(match plan.matrix {
                true => format!("{folder}/{}", t.name),
                false => t.name.clone(),
            });
        }
        scope.folders.insert(folder);
    }
    scope
}

/// Errors for entries of the output folder that Strata did not make but a
/// target's output would replace, each at the target's name. A conflict of
/// the configuration with the disk (exit 2): no step failed, and no retry
/// helps until the entry moves or the outputs go elsewhere.
fn foreign_entry_errors(plan: &Plan, entries: &[(String, PathBuf)]) -> Vec<ConfigError> {
    entries
        .iter()
        .filter_map(|(place, path)| {
            let root = plan.root_at(place)?;
            let ws = &plan.configs[root.config].ws;
            let t = plan.target(root.node);
            let at = At {
                sources: &ws.sources,
            };
            // A matrix build's entry may be blocked by its folder instead.
            let what = match path.ends_with(place) {
                true => "there would replace it",
                false => "would write into it",
            };
            Some(
                at.error(
                    t.loc,
                    format!(
                        "{} was not made by Strata; placing `{place}` {what}",
                        path.display()
                    ),
                    "its output goes to the output folder under this name",
                    Some(
                        "Strata replaces only what it placed: move it away, or choose another \
                     output folder (`out_dir:` or --out-dir)"
                            .into(),
                    ),
                ),
            )
        })
        .collect()
}

/// The store as the workspace's last build used it: with that build's
/// digest function (SHA-256 after a build against a SHA-256 remote cache).
pub(crate) fn open_store_as_last_build(
    dir: &Path,
    workspace_tag: &str,
) -> Result<Store, BuildError> {
    let open = |f| {
        Store::open(dir, f)
            .map_err(|e| BuildError::Environment(format!("cannot open the store: {e}")))
    };
    let store = open(DigestFunction::Blake3)?;
    match records::read_all(&store.meta_dir(), workspace_tag)
        .last()
        .and_then(|r| r.digest_function.parse::<DigestFunction>().ok())
    {
        Some(f) if f != store.function() => open(f),
        _ => Ok(store),
    }
}

/// The name under which a workspace's records and stat cache are kept, from
/// its BUILD file's canonical path (as `load` resolves it), so every command
/// finds the records of the workspace `strata build` built.
pub fn workspace_tag(canonical_build_file: &Path) -> String {
    blake3::hash(canonical_build_file.as_os_str().as_encoded_bytes()).to_hex()[..16].to_string()
}

/// Where the action-cache hits of the workspace's builds are kept.
fn hit_cache_path(store: &Store, workspace_tag: &str) -> PathBuf {
    store
        .meta_dir()
        .join("statcache")
        .join(format!("{workspace_tag}-{}-hits", store.function()))
}

/// Hashes the sources of the plan's nodes through the workspace's stat
/// cache, by node.
pub(crate) fn hash_sources(
    plan: &Plan,
    store: &Store,
    workspace_tag: &str,
    out_dir: &Path,
    folders: &FolderCache,
    observer: &dyn Observer,
) -> Result<BTreeMap<usize, Vec<inputs::SourceFile>>, BuildError> {
    let caches = store.meta_dir().join("statcache");
    let _ = std::fs::create_dir_all(&caches);
    let mut stat_cache = StatCache::load(
        caches.join(format!("{workspace_tag}-{}", store.function())),
        store.tmp_dir(),
    );
    // Never hash our own output folder or store as sources, however they
    // are spelled.
    let skip = [canonical(out_dir), store.root().to_path_buf()];
    let sources = plan.hash_sources(&mut stat_cache, folders, &skip, store.function())?;
    if let Err(e) = stat_cache.save() {
        observer.warn(&format!("cannot save the stat cache: {e}"));
    }
    crate::discard::later(stat_cache);
    Ok(sources)
}

/// The folder listings the workspace's builds keep (the source folders
/// their patterns walk, and the output folders they check).
pub(crate) fn folder_cache(store: &Store, workspace_tag: &str) -> FolderCache {
    FolderCache::load(
        store
            .meta_dir()
            .join("statcache")
            .join(format!("{workspace_tag}-folders")),
        store.tmp_dir(),
    )
}

/// Saves `folders`, saying so if it cannot.
pub(crate) fn save_folder_cache(folders: &mut FolderCache, observer: &dyn Observer) {
    if let Err(e) = folders.save() {
        observer.warn(&format!("cannot save the folder cache: {e}"));
    }
}

fn failure_diagnostic(
    ws: &Workspace,
    t: &strata_load::Target,
    failure: &Failure,
) -> Option<ConfigError> {
    let at = At {
        sources: &ws.sources,
    };
    match failure {
        Failure::MissingOutput { out } | Failure::OutputKind { out, .. } => {
            let plain = out.trim_end_matches('/');
            let loc = t
                .outs
                .iter()
                .find(|o| o.value.trim_end_matches('/') == plain)?
                .loc;
            Some(at.error(
                loc,
                format!("target `{}`: {failure}", t.name),
                "declared here",
                Some("the step must create every declared output under $OUT".into()),
            ))
        }
        Failure::DigestMismatch { actual, .. } => {
            let loc = t.output_digest.as_ref()?.loc;
            Some(at.error(
                loc,
                format!("target `{}`: {failure}", t.name),
                "declared here",
                Some(format!(
                    "if the new content is expected, declare `output_digest: \"{actual}\"`"
                )),
            ))
        }
        _ => None,
    }
}

/// `path` with symlinks resolved, as far as it exists.
pub(crate) fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => canonical(parent).join(name),
        _ => path.to_path_buf(),
    }
}

/// The default store folder: `$STRATA_STORE`, else `$XDG_CACHE_HOME/strata`,
/// else `~/.cache/strata`.
pub fn default_store_dir() -> PathBuf {
    if let Some(s) = std::env::var_os("STRATA_STORE") {
        return PathBuf::from(s);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| Path::new(x).is_absolute()) {
        return Path::new(&x).join("strata");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("strata")
}
