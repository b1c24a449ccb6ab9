//! Phase 2, graph, over every configuration of a build: one DAG whose nodes
//! are built once.
//!
//! Without `--matrix` there is one configuration and the plan is its graph
//! (the requested targets and their dependencies). With it, each
//! configuration's closure is merged in: a target whose definition is the
//! same in two configurations (name, rule and fields after `${var}`, sources,
//! and the same dependency *nodes*) is one node, built and stored once. That
//! is the condition under which both would have the same key, so the
//! deduplication changes no key and no output, only how often a step runs;
//! a fixed-output step, keyed by its name and digest alone, is one node
//! whenever those (and its declared outputs) agree.
//!
//! A node's *label* is how reports, records, traces and `strata graph` name
//! it: the target's name without a matrix; with one, `<config>/<name>` for a
//! node of one configuration, the bare name for a node every configuration
//! shares, `{<config>,<config>}/<name>` for a node some share.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use petgraph::graph::NodeIndex;
use rayon::prelude::*;
use strata_rules::Work;

use crate::error::BuildError;
use crate::graph::Graph;
use crate::inputs::{self, SourceFile};
use crate::job::Job;
use crate::platforms::Emulators;
use crate::statcache::StatCache;
use crate::targets;
use crate::toolchain::HostToolchain;
use strata_load::diag::{At, did_you_mean};
use strata_load::globs::Folders;
use strata_load::matrix::{self, Configuration, MatrixRequest};
use strata_load::{ConfigError, LoadOptions, Target, Workspace};

/// One configuration: its values, its workspace and that workspace's graph.
pub struct Configured {
    pub config: Configuration,
    pub ws: Workspace,
    pub graph: Graph,
}

/// The nodes a command works on, across configurations.
pub struct Plan {
    /// `--matrix` was given: outputs go to `<out>/<config>/<target>/`.
    pub matrix: bool,
    pub configs: Vec<Configured>,
    /// In topological order: dependencies come first.
    pub nodes: Vec<PlanNode>,
    /// The requested targets of every configuration.
    pub roots: Vec<Root>,
}

pub struct PlanNode {
    pub label: String,
    /// The configuration whose definition stands for the node, and the
    /// target's index in that configuration's workspace.
    pub config: usize,
    pub target: usize,
    /// Every configuration the node belongs to, ascending.
    pub members: Vec<usize>,
    /// Dependencies by the name the key uses, and their nodes.
    pub deps: Vec<(String, usize)>,
    pub dependents: Vec<usize>,
}

/// A requested target of one configuration.
pub struct Root {
    pub config: usize,
    pub node: usize,
    /// Its entry in the output folder: `<target>`, or `<config>/<target>`
    /// in a matrix build.
    pub place: String,
}

impl Plan {
    /// Loads the workspace once per configuration of `matrix` and plans
    /// `requested` (empty: each configuration's `default:`, else every
    /// target that is not hidden).
    pub fn load(
        build_file: &Path,
        options: &LoadOptions,
        matrix: &MatrixRequest,
        requested: &[String],
    ) -> Result<Plan, BuildError> {
        let configs = matrix
            .configurations(build_file, options)
            .map_err(BuildError::Config)?;
        let workspaces =
            matrix::load_each(build_file, options, &configs).map_err(BuildError::Config)?;
        let mut configured = Vec::new();
        let mut errors = Vec::new();
        for (config, ws) in configs.into_iter().zip(workspaces) {
            match Graph::build(&ws) {
                Ok(graph) => configured.push(Configured { config, ws, graph }),
                Err(e) => errors.extend(e),
            }
        }
        if !errors.is_empty() {
            return Err(BuildError::Config(dedup(errors)));
        }
        Plan::new(configured, !matrix.is_empty(), requested)
    }

    /// Merges the closures of `requested` in every configuration.
    pub fn new(
        configs: Vec<Configured>,
        matrix: bool,
        requested: &[String],
    ) -> Result<Plan, BuildError> {
        let mut nodes: Vec<PlanNode> = Vec::new();
        // The nodes of each name so far, to find a definition another
        // configuration already has; one configuration has each name once.
        let shared = configs.len() > 1;
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut roots = Vec::new();
        let per_config = requested_roots(&configs, matrix, requested)?;
        for (c, (cfg, wanted)) in configs.iter().zip(per_config).enumerate() {
            // Plan node of each graph node planned so far.
            let mut node_of: Vec<usize> = vec![usize::MAX; cfg.graph.dag.node_count()];
            for n in cfg.graph.closure(&wanted) {
                let index = cfg.graph.dag[n];
                let t = &cfg.ws.targets[index];
                let deps: Vec<(String, usize)> = cfg
                    .graph
                    .deps_of(&cfg.ws, n)
                    .map(|(d, name)| (name.to_string(), node_of[d.index()]))
                    .collect();
                let same = by_name.get(t.name.as_str()).and_then(|candidates| {
                    candidates.iter().copied().find(|&p| {
                        let other = &nodes[p];
                        let o = &configs[other.config].ws.targets[other.target];
                        same_node(o, &other.deps, t, &deps)
                    })
                });
                let p = match same {
                    Some(p) => {
                        nodes[p].members.push(c);
                        p
                    }
                    None => {
                        nodes.push(PlanNode {
                            label: String::new(),
                            config: c,
                            target: index,
                            members: vec![c],
                            deps,
                            dependents: Vec::new(),
                        });
                        if shared {
                            by_name.entry(&t.name).or_default().push(nodes.len() - 1);
                        }
                        nodes.len() - 1
                    }
                };
                node_of[n.index()] = p;
            }
            for r in wanted {
                let name = &cfg.ws.targets[cfg.graph.dag[r]].name;
                roots.push(Root {
                    config: c,
                    node: node_of[r.index()],
                    place: match matrix {
                        true => format!("{}/{name}", cfg.config.path()),
                        false => name.clone(),
                    },
                });
            }
        }
        for p in 0..nodes.len() {
            for i in 0..nodes[p].deps.len() {
                let d = nodes[p].deps[i].1;
                nodes[d].dependents.push(p);
            }
        }
        let total = configs.len();
        for node in &mut nodes {
            let name = &configs[node.config].ws.targets[node.target].name;
            node.label = match (matrix, node.members.as_slice()) {
                (false, _) => name.clone(),
                (true, [only]) => format!("{}/{name}", configs[*only].config.path()),
                (true, members) if members.len() == total => name.clone(),
                (true, members) => {
                    let paths: Vec<String> =
                        members.iter().map(|&m| configs[m].config.path()).collect();
                    format!("{{{}}}/{name}", paths.join(","))
                }
            };
        }
        Ok(Plan {
            matrix,
            configs,
            nodes,
            roots,
        })
    }

    /// The definition standing for node `n`.
    pub fn target(&self, n: usize) -> &Target {
        let node = &self.nodes[n];
        &self.configs[node.config].ws.targets[node.target]
    }

    /// The workspace that defines node `n` (for diagnostics).
    pub fn ws_of(&self, n: usize) -> &Workspace {
        &self.configs[self.nodes[n].config].ws
    }

    /// The first configuration's workspace: the root file, the records'
    /// name and everything that does not depend on the values.
    pub fn ws(&self) -> &Workspace {
        &self.configs[0].ws
    }

    /// Every node, in topological order, as the scheduler names them.
    pub fn order(&self) -> Vec<NodeIndex> {
        (0..self.nodes.len()).map(NodeIndex::new).collect()
    }

    /// The configurations of a matrix build, as folder names (`x86_64`).
    pub fn config_paths(&self) -> Vec<String> {
        match self.matrix {
            true => self.configs.iter().map(|c| c.config.path()).collect(),
            false => Vec::new(),
        }
    }

    /// The configurations node `n` belongs to, as folder names (empty
    /// without a matrix).
    pub fn members_of(&self, n: usize) -> Vec<String> {
        match self.matrix {
            true => self.nodes[n]
                .members
                .iter()
                .map(|&m| self.configs[m].config.path())
                .collect(),
            false => Vec::new(),
        }
    }

    /// Nodes that several configurations share, each built once.
    pub fn shared(&self) -> usize {
        self.nodes.iter().filter(|n| n.members.len() > 1).count()
    }

    /// Where outputs go: `--out-dir`, else the workspace's `out_dir:`,
    /// which every configuration must agree on (a matrix build splits the
    /// folder by configuration itself).
    pub fn out_dir(&self, given: Option<&PathBuf>) -> Result<PathBuf, BuildError> {
        if let Some(dir) = given {
            return Ok(dir.clone());
        }
        let first = &self.configs[0];
        if let Some(other) = self
            .configs
            .iter()
            .find(|c| c.ws.out_dir != first.ws.out_dir)
        {
            let message = format!(
                "`out_dir` is {} with {} but {} with {}",
                first.ws.out_dir.display(),
                first.config.describe(),
                other.ws.out_dir.display(),
                other.config.describe()
            );
            let help = Some(
                "a matrix build places each configuration's outputs in a folder of its own inside one output folder (`<out_dir>/<value>/`): make `out_dir` the same for every value, or give --out-dir".into(),
            );
            let e = match first.ws.out_dir_loc {
                Some(loc) => At {
                    sources: &first.ws.sources,
                }
                .error(loc, message, "differs between configurations", help),
                None => ConfigError::general(message, help),
            };
            return Err(BuildError::Config(vec![e]));
        }
        Ok(first.ws.out_dir.clone())
    }

    /// Container steps whose image this machine cannot run, checked before
    /// anything runs (each definition once).
    pub fn check_platforms(&self, emulators: &Emulators) -> Result<(), BuildError> {
        let mut errors = Vec::new();
        for (c, cfg) in self.configs.iter().enumerate() {
            let targets = self
                .nodes
                .iter()
                .filter(|n| n.config == c)
                .map(|n| &cfg.ws.targets[n.target]);
            if let Err(e) = crate::platforms::check(&cfg.ws, targets, emulators) {
                errors.extend(e);
            }
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(BuildError::Config(dedup(errors))),
        }
    }

    /// Expands and hashes every node's sources through the workspace's
    /// stat cache (saved when `save` is set), by node.
    pub fn hash_sources(
        &self,
        cache: &mut StatCache,
        folders: &dyn Folders,
        skip: &[PathBuf],
        function: strata_store::DigestFunction,
    ) -> Result<BTreeMap<usize, Vec<SourceFile>>, BuildError> {
        let mut by_node = BTreeMap::new();
        for (c, cfg) in self.configs.iter().enumerate() {
            let mine: Vec<usize> = (0..self.nodes.len())
                .filter(|&n| self.nodes[n].config == c)
                .collect();
            let indices: Vec<usize> = mine.iter().map(|&n| self.nodes[n].target).collect();
            let mut sources = inputs::resolve(&cfg.ws, &indices, skip, cache, folders, function)
                .map_err(BuildError::Config)?;
            for n in mine {
                let list = sources.remove(&self.nodes[n].target).unwrap_or_default();
                by_node.insert(n, list);
            }
        }
        Ok(by_node)
    }

    /// The scheduler's job for every node, taking its sources.
    /// A step on a foreign image is keyed with the emulator of `emulators`
    /// that runs it.
    pub fn jobs(
        &self,
        sources: &mut BTreeMap<usize, Vec<SourceFile>>,
        emulators: &Emulators,
    ) -> Result<BTreeMap<NodeIndex, Job>, BuildError> {
        let toolchain = HostToolchain::default();
        // Each node's job on its own, in parallel (a clone of its work each).
        let sources: Vec<Vec<SourceFile>> = (0..self.nodes.len())
            .map(|n| sources.remove(&n).unwrap_or_default())
            .collect();
        let jobs: Vec<Result<(NodeIndex, Job), BuildError>> = sources
            .into_par_iter()
            .enumerate()
            .map(|(n, sources)| {
                let node = &self.nodes[n];
                let t = self.target(n);
                let job = Job {
                    name: node.label.clone(),
                    target: t.name.clone(),
                    work: targets::work_of(&toolchain, t, emulators)?,
                    sources,
                    deps: node
                        .deps
                        .iter()
                        .map(|(name, d)| (name.clone(), NodeIndex::new(*d)))
                        .collect(),
                    dependents: node.dependents.iter().map(|&d| NodeIndex::new(d)).collect(),
                };
                Ok((NodeIndex::new(n), job))
            })
            .collect();
        // The first error in node order, as a serial walk would give.
        jobs.into_iter().collect()
    }

    /// The root whose output-folder entry is `place`.
    pub fn root_at(&self, place: &str) -> Option<&Root> {
        self.roots.iter().find(|r| r.place == place)
    }
}

/// Whether `b` (with dependency nodes `b_deps`) is the node `a` already is:
/// both would have the same key whatever their dependencies produce.
fn same_node(
    a: &Target,
    a_deps: &[(String, usize)],
    b: &Target,
    b_deps: &[(String, usize)],
) -> bool {
    if a.name != b.name || a.hidden != b.hidden {
        return false;
    }
    let values = |v: &[strata_load::Located<String>]| -> Vec<String> {
        v.iter().map(|x| x.value.clone()).collect()
    };
    if values(&a.outs) != values(&b.outs) {
        return false;
    }
    // A fixed-output step is keyed by its name and declared digest only:
    // whichever definition runs must produce those bytes.
    if let (Work::Run(_), Work::Run(_), Some(da), Some(db)) =
        (&a.work, &b.work, &a.output_digest, &b.output_digest)
    {
        return da.value == db.value;
    }
    let no_sources = a.srcs.is_empty() && a.named_srcs.is_empty();
    let srcs_agree = values(&a.srcs) == values(&b.srcs)
        && values(&a.named_srcs) == values(&b.named_srcs)
        && (no_sources || a.dir == b.dir);
    srcs_agree
        && a.output_digest.as_ref().map(|d| &d.value) == b.output_digest.as_ref().map(|d| &d.value)
        && a.work == b.work
        && a.run == b.run
        && a_deps == b_deps
}

/// The requested nodes of each configuration. A plain name is requested in
/// every configuration that has it (a target switched off for one value is
/// left out there); `<config>/<name>` in that configuration only. A name no
/// configuration has is an error.
fn requested_roots(
    configs: &[Configured],
    matrix: bool,
    names: &[String],
) -> Result<Vec<Vec<NodeIndex>>, BuildError> {
    if names.is_empty() || !matrix {
        return configs
            .iter()
            .map(|c| targets::requested(&c.ws, &c.graph, names))
            .collect();
    }
    let mut per_config: Vec<Vec<NodeIndex>> = vec![Vec::new(); configs.len()];
    for name in names {
        let (path, target) = match name.rsplit_once('/') {
            Some((p, t)) => (Some(p), t),
            None => (None, name.as_str()),
        };
        let mut found = false;
        for (c, cfg) in configs.iter().enumerate() {
            if path.is_some_and(|p| p != cfg.config.path()) {
                continue;
            }
            if let Some(n) = cfg.graph.node(target) {
                found = true;
                if !per_config[c].contains(&n) {
                    per_config[c].push(n);
                }
            } else if path.is_some() {
                // Says why: unknown, or switched off there.
                targets::requested(&cfg.ws, &cfg.graph, &[target.to_string()])?;
            }
        }
        if found {
            continue;
        }
        if let Some(p) = path
            && !configs.iter().any(|c| c.config.path() == p)
        {
            let paths: Vec<String> = configs.iter().map(|c| c.config.path()).collect();
            let hint = did_you_mean(p, paths.iter().map(String::as_str))
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            return Err(BuildError::Usage(format!(
                "`{name}`: this build has no configuration `{p}`; its configurations are {}{hint}",
                paths.join(", ")
            )));
        }
        // In no configuration: the first says why.
        targets::requested(&configs[0].ws, &configs[0].graph, &[target.to_string()])?;
    }
    Ok(per_config)
}

/// The same error found in several configurations, once.
fn dedup(errors: Vec<ConfigError>) -> Vec<ConfigError> {
    let mut out: Vec<ConfigError> = Vec::new();
    for e in errors {
        if !out
            .iter()
            .any(|x| x.message == e.message && x.place == e.place)
        {
            out.push(e);
        }
    }
    out
}
