//! `strata explain TARGET` and `strata build --explain`: why a target's key
//! is what it is, and what changed since its last build, followed through
//! dependencies to the root cause.
//!
//! `explain` keys the target's closure as a build would (sources hashed
//! through the stat cache, dependency outputs taken from the action cache),
//! without running anything, and compares each key's parts with those of
//! the key the last build recorded. A dependency that would run has no
//! output yet: its dependents are keyed with its last output (what early
//! cutoff would give if it reproduces it), and it is explained in turn.
//! `build --explain` compares each executed target's key with its key in
//! the previous build's record. Both read keys back from the store
//! (`keyinfo`), so the records stay small.

use std::collections::BTreeMap;
use std::path::PathBuf;

use petgraph::graph::NodeIndex;
use serde::Serialize;
use strata_store::{Digest, Store};

use crate::build::{self, BuildError};
use crate::declared::DeclaredOutputs;
use crate::execute::lookup::cached_output;
use crate::key;
use crate::keyinfo::{self, Change, KeyInfo};
use crate::plan::Plan;
use crate::records::{self, Record, RecordedTarget};
use crate::scheduler::{self, Observer};
use strata_load::LoadOptions;
use strata_load::matrix::MatrixRequest;

#[derive(Clone, Debug)]
pub struct ExplainOptions {
    pub build_file: PathBuf,
    /// A target, or `<config>/<target>` in a matrix build.
    pub target: String,
    pub store_dir: PathBuf,
    pub load: LoadOptions,
    /// `--matrix`: explain the target in each configuration.
    pub matrix: MatrixRequest,
}

/// What a target's key is made of and why it differs from last time.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub target: String,
    pub rule: String,
    /// The key the target has now (hex).
    pub key: String,
    /// `cached` (the key is in the action cache: a build would not run it),
    /// `would-run`, or `pending` (a dependency would run first; the key
    /// shown assumes it reproduces its last output, as early cutoff would).
    pub state: &'static str,
    /// The last recorded build of the target, if any.
    pub last_build: Option<LastBuild>,
    /// Differences from the last build's key; empty when unchanged.
    pub changes: Vec<Change>,
    /// Dependencies that changed or would run, explained in turn.
    pub because: Vec<Explanation>,
    /// The parts of the key now.
    pub components: KeyInfo,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastBuild {
    /// Seconds since the epoch when that build finished.
    pub finished: u64,
    /// The same, in RFC 3339 (UTC).
    pub when: String,
    pub key: String,
    pub status: String,
}

/// A target as keyed now.
struct Keyed {
    key: Digest,
    cached: Option<Digest>,
    /// A dependency would run (or waits on one that would).
    pending: bool,
    info: KeyInfo,
    rule: String,
}

/// Explains `opts.target` against the workspace's last builds: one
/// explanation, or one per configuration whose node it is in a matrix
/// build (a node the configurations share is explained once).
pub fn explain(
    opts: &ExplainOptions,
    observer: &dyn Observer,
) -> Result<Vec<Explanation>, BuildError> {
    let plan = Plan::load(
        &opts.build_file,
        &opts.load,
        &opts.matrix,
        std::slice::from_ref(&opts.target),
    )?;
    let out_dir = plan.out_dir(None)?;
    let ws = plan.ws();
    let tag = build::workspace_tag(&ws.build_file);
    // Keys are compared in the digest function the last build used.
    let store = build::open_store_as_last_build(&opts.store_dir, &tag)?;
    // Keys are stored below: a running gc must not see them half-written.
    let _gc_lock = crate::gc::lock_shared(&store, || {
        observer.warn("waiting for `strata store gc` to finish")
    })
    .map_err(|e| BuildError::Environment(format!("cannot lock the store: {e}")))?;
    let records = records::read_all(&store.meta_dir(), &tag);
    // Keys are compared in the digest function the last build used (a
    // SHA-256 remote cache makes the whole build SHA-256).
    let store = match records.last().and_then(|r| {
        r.digest_function
            .parse::<strata_store::DigestFunction>()
            .ok()
    }) {
        Some(f) if f != store.function() => Store::open(&opts.store_dir, f)
            .map_err(|e| BuildError::Environment(format!("cannot open the store: {e}")))?,
        _ => store,
    };
    let last = last_builds(&records);
    let sandboxed = records
        .last()
        .map(|r| r.isolation == "sandbox")
        .unwrap_or(true);
    let mut folders = build::folder_cache(&store, &tag);
    let mut sources = build::hash_sources(&plan, &store, &tag, &out_dir, &folders, observer)?;
    build::save_folder_cache(&mut folders, observer);
    let emulators = crate::platforms::Emulators::of_this_machine();
    let jobs = plan.jobs(&mut sources, &emulators)?;
    let order = plan.order();

    let mut keyed: BTreeMap<NodeIndex, Keyed> = BTreeMap::new();
    for n in &order {
        let job = &jobs[n];
        let deps: Vec<(String, Digest)> = job
            .deps
            .iter()
            .map(|(name, d)| {
                let k = &keyed[d];
                let output = k.cached.or_else(|| {
                    // Would run: key dependents with its last output.
                    last.get(jobs[d].name.as_str())
                        .and_then(|(t, _)| t.output_digest(&store))
                });
                (name.clone(), output.unwrap_or(Digest::new([0; 32], 0)))
            })
            .collect();
        let dep_keys = job
            .deps
            .iter()
            .map(|(name, d)| (name.clone(), keyed[d].key))
            .collect();
        // An `sbom` target's key holds the facts of what it describes,
        // known when everything it describes is cached.
        let mut deps = deps;
        let facts = crate::supply::FactsRequest::of(&jobs, job, |d| {
            let k = keyed.get(&d)?;
            Some((Some(k.key), k.cached?))
        });
        if let Some(request) = facts {
            let _ = request.add_to(&store, &mut deps);
        }
        let action = key::of_work(
            store.function(),
            store.cas(),
            &job.target,
            &job.work,
            sandboxed,
            &job.sources,
            &deps,
            &dep_keys,
        );
        // Stored (small messages) so the key can be read back like any other.
        action
            .store(store.cas())
            .map_err(|e| BuildError::Environment(format!("cannot write to the store: {e}")))?;
        let info = keyinfo::read(&store, &action.key).unwrap_or_default();
        let rule = plan.target(n.index()).work.rule_name().to_string();
        let pending = job
            .deps
            .iter()
            .any(|(_, d)| keyed[d].pending || keyed[d].cached.is_none());
        keyed.insert(
            *n,
            Keyed {
                key: action.key,
                cached: cached_output(&store, &action.key, DeclaredOutputs::of(&job.work).as_ref())
                    .ok()
                    .flatten(),
                pending,
                info,
                rule,
            },
        );
    }
    let mut roots: Vec<usize> = Vec::new();
    for r in &plan.roots {
        if !roots.contains(&r.node) {
            roots.push(r.node);
        }
    }
    Ok(roots
        .into_iter()
        .map(|n| explain_node(NodeIndex::new(n), &jobs, &keyed, &last, &store))
        .collect())
}

fn explain_node(
    n: NodeIndex,
    jobs: &BTreeMap<NodeIndex, scheduler::Job>,
    keyed: &BTreeMap<NodeIndex, Keyed>,
    last: &BTreeMap<String, (RecordedTarget, u64)>,
    store: &Store,
) -> Explanation {
    let job = &jobs[&n];
    let k = &keyed[&n];
    let previous = last.get(job.name.as_str());
    let changes = match previous {
        Some((t, _)) if t.key.as_deref() == Some(k.key.hex().as_str()) => Vec::new(),
        Some((t, _)) => match t.key_digest().and_then(|d| keyinfo::read(store, &d)) {
            Some(old) => keyinfo::diff(&old, &k.info),
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    let changed_deps: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Dep { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let because = job
        .deps
        .iter()
        .filter(|(name, d)| {
            changed_deps.contains(&name.as_str()) || keyed[d].pending || keyed[d].cached.is_none()
        })
        .map(|(_, d)| explain_node(*d, jobs, keyed, last, store))
        .collect();
    Explanation {
        target: job.name.clone(),
        rule: k.rule.clone(),
        key: k.key.hex(),
        state: match (k.pending, k.cached.is_some()) {
            (true, _) => "pending",
            (false, true) => "cached",
            (false, false) => "would-run",
        },
        last_build: previous.map(|(t, finished)| LastBuild {
            finished: *finished,
            when: strata_formats::oci::spec::rfc3339(*finished),
            key: t.key.clone().unwrap_or_default(),
            status: t.status.clone(),
        }),
        changes,
        because,
        components: k.info.clone(),
    }
}

/// For each target, its entry in the newest record that keyed it, with that
/// build's finishing time.
fn last_builds(records: &[Record]) -> BTreeMap<String, (RecordedTarget, u64)> {
    let mut last = BTreeMap::new();
    for r in records {
        for (name, t) in &r.targets {
            if t.key.is_some() && t.status != "failed" {
                last.insert(name.clone(), (t.clone(), r.finished));
            }
        }
    }
    last
}

/// For `build --explain`: one line per target the newest record executed,
/// naming the root cause of its new key against the record before.
pub fn executed_causes(store: &Store, workspace_tag: &str) -> Vec<(String, String)> {
    let records = records::read_all(&store.meta_dir(), workspace_tag);
    let Some((newest, older)) = records.split_last() else {
        return Vec::new();
    };
    let before = last_builds(older);
    let mut lines = Vec::new();
    for (name, t) in &newest.targets {
        if t.status != "executed" {
            continue;
        }
        lines.push((name.clone(), root_cause(store, newest, &before, name, 0)));
    }
    lines
}

/// Why `name` has its key in `newest`, compared with `before`, following
/// dependency-output changes down to a change of the target's own inputs.
fn root_cause(
    store: &Store,
    newest: &Record,
    before: &BTreeMap<String, (RecordedTarget, u64)>,
    name: &str,
    depth: usize,
) -> String {
    let Some(now) = newest.targets.get(name) else {
        return "not in this build".into();
    };
    let Some((old, _)) = before.get(name) else {
        return "first build of this target".into();
    };
    if old.key == now.key {
        return if depth == 0 {
            "same key as the last build (rebuilt with --no-cache, or its result was not in the cache)".into()
        } else {
            format!("`{name}` kept its key but produced other bytes (not reproducible)")
        };
    }
    let (Some(old_info), Some(new_info)) = (
        old.key_digest().and_then(|d| keyinfo::read(store, &d)),
        now.key_digest().and_then(|d| keyinfo::read(store, &d)),
    ) else {
        return "its key changed (the previous key's parts are no longer in the store)".into();
    };
    let changes = keyinfo::diff(&old_info, &new_info);
    let own: Vec<String> = changes
        .iter()
        .filter(|c| !matches!(c, Change::Dep { .. }))
        .map(ToString::to_string)
        .collect();
    if !own.is_empty() || depth > 64 {
        return own.join("; ");
    }
    let via: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Dep { name: dep, .. } => Some(format!(
                "dependency `{dep}` changed: {}",
                root_cause(store, newest, before, now.dep_label(dep), depth + 1)
            )),
            _ => None,
        })
        .collect();
    if via.is_empty() {
        "its key changed".into()
    } else {
        via.join("; ")
    }
}
