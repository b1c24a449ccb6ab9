//! The facts of `strata sbom` and `strata provenance`, gathered from what a
//! build already keeps: the last build record (targets, keys, outputs, the
//! labels of dependencies, an image pull's reference, the variables) and
//! the store (each key's command and input root, each output tree). The
//! documents themselves are strata-supply's.
//!
//! What each kind of target contributes:
//! - `extract` of a .deb: the package from its control file, the .deb's
//!   SHA-256, and the URL of the fetch it came from;
//! - a fixed-output step (`output_digest`): its files with their SHA-256,
//!   the URLs its command names (a file's own where `curl -o NAME URL` or
//!   the URL's last component names it), and a `.dsc`'s source package;
//! - `image-pull`: the reference, digest and platform;
//! - a `run` or `stage` step: the source packages found through its
//!   inputs (what it compiled);
//! - the graph: a rule whose output holds its dependencies' (the rule
//!   table's `contains_inputs`: `rootfs`, `archive`, `initramfs`,
//!   `makeself`, `image`, `deb`, `docker-data-root`) contains them, and so does a `run` or `stage`
//!   step the user names (`holds_inputs`: a disk image made with mke2fs);
//!   any other was generated from them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use strata_rules::layout;
use strata_store::tree::{Entry, list, walk};
use strata_store::{Digest, DigestFunction, Store, reapi};
use strata_supply::facts::{DebPackage, FetchedFile, FileFact, PulledImage, SourcePackage};
use strata_supply::{Component, Facts, Kind, Relation, RelationKind};

use crate::keyinfo::{self, KeyInfo};
use crate::manifest::{Error, last_record};
use crate::records::{Record, RecordedTarget};
use strata_load::diag::did_you_mean;

/// The facts of `target` (a name, or a matrix build's `<config>/<name>`)
/// in the last build of `build_file`; `all_files`: every component's files,
/// not only the target's; `holds_inputs`: `run` and `stage` targets whose
/// output contains their dependencies' (otherwise made from them).
pub fn facts_of_last_build(
    store_dir: &Path,
    build_file: &Path,
    target: &str,
    all_files: bool,
    holds_inputs: &BTreeSet<String>,
) -> Result<Facts, Error> {
    let (canonical, record) = last_record(store_dir, build_file)?;
    let label = resolve(&record, target, &canonical)?;
    let root = &record.targets[&label];
    if root.output.is_none() {
        return Err(Error::Usage(format!(
            "`{label}` did not build in the last build of {} ({}); build it first",
            strata_load::source::shown(&canonical),
            root.status
        )));
    }
    let function = DigestFunction::from_str(&record.digest_function)
        .map_err(|e| Error::Environment(format!("the last build record is unreadable: {e}")))?;
    let store = Store::open(store_dir, function)
        .map_err(|e| Error::Environment(format!("cannot open the store: {e}")))?;
    let nodes = nodes_of_record(&store, &record, &label)?;
    Gatherer {
        store: &store,
        nodes,
        holds_inputs,
        vars: record.vars.clone(),
        source_date_epoch: source_date_epoch(&record),
        digest_function: record.digest_function.clone(),
    }
    .facts(&label, all_files)
}

/// The build's SOURCE_DATE_EPOCH: its variable, else the environment's,
/// else 0 (what built-in rules stamp without one).
fn source_date_epoch(record: &Record) -> u64 {
    record
        .vars
        .get("SOURCE_DATE_EPOCH")
        .and_then(|v| v.parse().ok())
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok())
        .unwrap_or(0)
}

/// The record's label for `target`: itself, or the one configuration's
/// `<config>/<target>` of a matrix build.
fn resolve(record: &Record, target: &str, build_file: &Path) -> Result<String, Error> {
    if record.targets.contains_key(target) {
        return Ok(target.to_string());
    }
    let labels: Vec<&String> = record
        .targets
        .keys()
        .filter(|l| l.rsplit_once('/').is_some_and(|(_, n)| n == target))
        .collect();
    match labels.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let hint = did_you_mean(target, record.targets.keys().map(String::as_str))
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            Err(Error::Usage(format!(
                "target `{target}` is not in the last build of {}{hint}; build it first",
                strata_load::source::shown(build_file)
            )))
        }
        many => Err(Error::Usage(format!(
            "`{target}` was built in several configurations; name one: {}",
            many.iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// One target of the closure as the facts need it, however it was learnt:
/// from a build record and the store (`strata sbom`), or from a running
/// build (the `sbom` rule).
pub struct GraphNode {
    pub rule: String,
    /// The key's hex digest.
    pub key: Option<String>,
    /// The output tree.
    pub output: Digest,
    /// Dependency name (as the key names it) -> label.
    pub deps: BTreeMap<String, String>,
    /// Source path -> digest, as keys show them.
    pub sources: BTreeMap<String, String>,
    /// A fixed-output step's command as keyed.
    pub fetch_command: Option<Vec<String>>,
    pub image: Option<PulledImage>,
    /// What an `extract` unpacked.
    pub archive: Option<Archive>,
    /// The dependency whose image a `run` step runs in (`image: target`):
    /// the step was made in it, whatever its output holds.
    pub runs_in: Option<String>,
}

/// The archive an `extract` unpacked: its file, and the dependency label
/// and path it came from (`None` for a source).
pub struct Archive {
    pub digest: Digest,
    pub from: Option<(String, String)>,
}

/// One target of a running build's closure: the `sbom` rule's facts.
pub struct Built<'a> {
    pub label: &'a str,
    pub work: &'a strata_rules::Work,
    pub sources: &'a [strata_exec::source::SourceFile],
    /// Dependency name -> label.
    pub deps: BTreeMap<String, String>,
    pub key: Option<Digest>,
    pub output: Digest,
}

/// The facts of `root` in a running build whose closure is `closure` (every
/// target `root` was made from, done): what the `sbom` rule renders.
pub fn facts_in_build(
    store: &Store,
    root: &str,
    closure: &[Built],
    source_date_epoch: u64,
    all_files: bool,
    holds_inputs: &BTreeSet<String>,
) -> Result<Facts, String> {
    let function = store.function();
    let outputs: BTreeMap<&str, Digest> = closure.iter().map(|b| (b.label, b.output)).collect();
    let mut nodes = BTreeMap::new();
    for b in closure {
        use strata_rules::Work;
        use strata_rules::builtin::Builtin;
        let archive = match b.work {
            Work::Builtin {
                rule: Builtin::Extract(p),
                ..
            } => match &p.from.target {
                None => b
                    .sources
                    .iter()
                    .find(|s| s.rel == p.from.path)
                    .map(|s| Archive {
                        digest: s.digest,
                        from: None,
                    }),
                Some(dep) => {
                    let label = b.deps.get(dep).cloned().unwrap_or_else(|| dep.clone());
                    outputs
                        .get(label.as_str())
                        .and_then(|tree| file_at(store, tree, &p.from.path))
                        .map(|digest| Archive {
                            digest,
                            from: Some((label, p.from.path.clone())),
                        })
                }
            },
            _ => None,
        };
        nodes.insert(
            b.label.to_string(),
            GraphNode {
                rule: b.work.rule_name().to_string(),
                key: b.key.map(|k| k.hex()),
                output: b.output,
                deps: b.deps.clone(),
                // As keys hold them: a fixed-output step's key is its
                // output digest alone, whatever sources fetched it.
                sources: b
                    .sources
                    .iter()
                    .filter(|_| !matches!(b.work, Work::Run(step) if step.fixed_output.is_some()))
                    .map(|s| {
                        let mut d = function.qualified(&s.digest);
                        if s.executable {
                            d.push_str(" (x)");
                        }
                        (s.rel.clone(), d)
                    })
                    .collect(),
                fetch_command: match b.work {
                    Work::Run(step) if step.fixed_output.is_some() => {
                        Some(step.keyed_command.arguments.clone())
                    }
                    _ => None,
                },
                image: match b.work {
                    Work::ImagePull(p) => Some(PulledImage {
                        reference: Some(p.reference.clone()),
                        digest: p.digest.clone(),
                        platform: p.platform.clone(),
                    }),
                    _ => None,
                },
                archive,
                runs_in: match b.work {
                    Work::Run(step) => match step.container.as_ref().map(|c| &c.image) {
                        Some(strata_rules::run::ImageRef::Target(t)) => Some(t.clone()),
                        _ => None,
                    },
                    _ => None,
                },
            },
        );
    }
    Gatherer {
        store,
        nodes,
        holds_inputs,
        // The rule's statement holds no variables: its key does not.
        vars: BTreeMap::new(),
        source_date_epoch,
        digest_function: function.to_string(),
    }
    .facts(root, all_files)
    .map_err(|e| match e {
        Error::Usage(m) | Error::Environment(m) => m,
    })
}

struct Gatherer<'a> {
    store: &'a Store,
    nodes: BTreeMap<String, GraphNode>,
    /// Names of `run` and `stage` targets whose output holds their inputs'
    /// (a disk image made by mke2fs from a rootfs): the user says so.
    holds_inputs: &'a BTreeSet<String>,
    vars: BTreeMap<String, String>,
    source_date_epoch: u64,
    digest_function: String,
}

/// The closure of `root` in `record`, read back from the store.
fn nodes_of_record(
    store: &Store,
    record: &Record,
    root: &str,
) -> Result<BTreeMap<String, GraphNode>, Error> {
    let mut nodes = BTreeMap::new();
    let mut todo = VecDeque::from([root.to_string()]);
    while let Some(label) = todo.pop_front() {
        if nodes.contains_key(&label) {
            continue;
        }
        let target = record.targets.get(&label).ok_or_else(|| {
            Error::Environment(format!(
                "the last build record names a dependency `{label}` it does not hold"
            ))
        })?;
        let info = target
            .key_digest()
            .and_then(|k| keyinfo::read(store, &k))
            .ok_or_else(|| gone(&label, "its action"))?;
        let output = target
            .output_digest(store)
            .ok_or_else(|| gone(&label, "its output"))?;
        let deps: BTreeMap<String, String> = info
            .deps
            .keys()
            .map(|name| (name.clone(), target.dep_label(name).to_string()))
            .collect();
        todo.extend(deps.values().cloned());
        let archive = if target.rule == "extract" {
            archive_of_extract(store, &label, target, &info)?
        } else {
            None
        };
        nodes.insert(
            label,
            GraphNode {
                rule: target.rule.clone(),
                key: target.key.clone(),
                output,
                deps,
                sources: info.sources.clone(),
                // The key of a fixed-output step is its output digest
                // alone; the record keeps the command it ran.
                fetch_command: info
                    .properties
                    .contains_key("strata.output_digest")
                    .then(|| target.fetch_command.clone()),
                image: (target.rule == "image-pull").then(|| PulledImage {
                    reference: target.image.clone(),
                    digest: info.arguments.get(1).cloned().unwrap_or_default(),
                    platform: info.arguments.get(2).cloned().unwrap_or_default(),
                }),
                archive,
                runs_in: info
                    .properties
                    .get("image")
                    .and_then(|i| i.strip_prefix("target:"))
                    .map(str::to_string),
            },
        );
    }
    Ok(nodes)
}

/// The archive an `extract` unpacked, found in its stored input root
/// through its keyed parameters (`strata-builtin extract <parameters>`).
fn archive_of_extract(
    store: &Store,
    label: &str,
    target: &RecordedTarget,
    info: &KeyInfo,
) -> Result<Option<Archive>, Error> {
    let Some(from) = info
        .arguments
        .get(2)
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .and_then(|p| p.get("from")?.as_str().map(str::to_string))
    else {
        return Ok(None);
    };
    let (head, path) = from.split_once(':').unwrap_or((&from, ""));
    let in_root = if head == "srcs" {
        format!("{}/{path}", layout::WORK)
    } else {
        format!("{}/{head}/{path}", layout::DEPS)
    };
    let key = target
        .key_digest()
        .ok_or_else(|| gone(label, "its action"))?;
    let action: reapi::Action = store
        .cas()
        .get_message(&key, "an action")
        .map_err(|_| gone(label, "its action"))?;
    let Some(root) = action
        .input_root_digest
        .as_ref()
        .and_then(Digest::from_proto)
    else {
        return Ok(None);
    };
    Ok(
        file_at(store, &root, in_root.trim_end_matches('/')).map(|digest| Archive {
            digest,
            from: (head != "srcs").then(|| (target.dep_label(head).to_string(), path.to_string())),
        }),
    )
}

impl Gatherer<'_> {
    fn facts(&self, root: &str, all_files: bool) -> Result<Facts, Error> {
        let nodes = &self.nodes;
        let mut components = BTreeMap::new();
        let mut relations = BTreeSet::new();
        let mut sources = BTreeMap::new();
        // Fetches first: an extract names the URL of the file it unpacked.
        let mut fetched: BTreeMap<&str, Vec<FetchedFile>> = BTreeMap::new();
        for (label, node) in nodes {
            if let Some(command) = &node.fetch_command {
                fetched.insert(label, self.fetched_files(label, node, command)?);
            }
        }
        for (label, node) in nodes {
            let kind = if let (Some(files), Some(command)) =
                (fetched.get(label.as_str()), &node.fetch_command)
            {
                Kind::Fetched {
                    files: files.clone(),
                    urls: urls(command),
                }
            } else if let Some(image) = &node.image {
                Kind::Image(image.clone())
            } else if let Some(archive) = &node.archive {
                match self.deb(label, archive, &fetched)? {
                    Some(deb) => Kind::Deb(deb),
                    None => Kind::Built,
                }
            } else {
                Kind::Built
            };
            let name = label.rsplit('/').next().unwrap_or(label);
            // A rule a standard tool makes (`ext4`, `iso`) is a `run` step
            // over its hidden layout: the image holds what the layout does.
            let tool_made = node
                .deps
                .values()
                .any(|dep| *dep == strata_rules::builtin::layout_target(label));
            let assembles = tool_made
                || strata_rules::table::rule(&node.rule).is_some_and(|r| r.contains_inputs);
            let relation = if assembles || self.holds_inputs.contains(name) {
                RelationKind::Contains
            } else {
                RelationKind::GeneratedFrom
            };
            for (name, dep) in &node.deps {
                let kind = if node.runs_in.as_ref() == Some(name) {
                    RelationKind::GeneratedFrom
                } else {
                    relation
                };
                relations.insert(Relation {
                    from: label.clone(),
                    kind,
                    to: dep.clone(),
                });
            }
            for (path, digest) in &node.sources {
                sources.insert(format!("{label}/{path}"), digest.clone());
            }
            let files = if label == root || all_files {
                Some(self.files(label, &node.output)?)
            } else {
                None
            };
            components.insert(
                label.clone(),
                Component {
                    rule: node.rule.clone(),
                    output: Some(self.store.function().qualified(&node.output)),
                    key: node.key.clone(),
                    kind,
                    built_from: Vec::new(),
                    files,
                },
            );
        }
        // What each compiling step compiled: the source packages reached
        // through its inputs, not crossing into another step's.
        let compiled: Vec<String> = components
            .iter()
            .filter(|(_, c)| {
                matches!(c.kind, Kind::Built) && (c.rule == "run" || c.rule == "stage")
            })
            .map(|(l, _)| l.clone())
            .collect();
        for label in compiled {
            let found = built_from(&label, nodes, &components);
            if let Some(c) = components.get_mut(&label) {
                c.built_from = found;
            }
        }
        Ok(Facts {
            target: root.to_string(),
            source_date_epoch: self.source_date_epoch,
            digest_function: self.digest_function.clone(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            components,
            relations,
            vars: self.vars.clone(),
            sources,
        })
    }

    fn read(&self, label: &str, digest: &Digest) -> Result<Vec<u8>, Error> {
        self.store
            .cas()
            .read(digest)
            .map_err(|_| gone(label, "a file of its output"))
    }

    /// Every file of an output, sorted by path.
    fn files(&self, label: &str, tree: &Digest) -> Result<Vec<FileFact>, Error> {
        let entries = walk(self.store.cas(), tree).map_err(|_| gone(label, "its output"))?;
        let mut files = Vec::new();
        for (path, entry) in entries {
            if let Entry::File { digest, .. } = entry {
                files.push(FileFact::of(path, &self.read(label, &digest)?));
            }
        }
        Ok(files)
    }

    fn fetched_files(
        &self,
        label: &str,
        node: &GraphNode,
        command: &[String],
    ) -> Result<Vec<FetchedFile>, Error> {
        let named = named_urls(command);
        let all = urls(command);
        let mut out = Vec::new();
        for f in self.files(label, &node.output)? {
            let base = f.path.rsplit('/').next().unwrap_or(&f.path).to_string();
            let url = named.get(&base).cloned().or_else(|| {
                all.iter()
                    .find(|u| percent_decode(u.rsplit('/').next().unwrap_or("")) == base)
                    .cloned()
            });
            let source_package = if base.ends_with(".dsc") {
                let digest = file_at(self.store, &node.output, &f.path)
                    .ok_or_else(|| gone(label, "a file of its output"))?;
                let text = String::from_utf8_lossy(&self.read(label, &digest)?).into_owned();
                strata_supply::deb::dsc(&text).map(|(name, version)| SourcePackage {
                    name,
                    version,
                    fetched_by: label.to_string(),
                })
            } else {
                None
            };
            out.push(FetchedFile {
                path: f.path,
                sha256: f.sha256,
                size: f.size,
                url,
                source_package,
            });
        }
        Ok(out)
    }

    /// The Debian package an `extract` unpacked, if its archive is a .deb.
    fn deb(
        &self,
        label: &str,
        archive: &Archive,
        fetched: &BTreeMap<&str, Vec<FetchedFile>>,
    ) -> Result<Option<DebPackage>, Error> {
        // Only a .deb is read whole: a source tarball can be large.
        let mut head = [0u8; 8];
        let is_deb = std::fs::File::open(self.store.cas().path(&archive.digest))
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && strata_supply::deb::looks_like_deb(&head);
        if !is_deb {
            return Ok(None);
        }
        let bytes = self.read(label, &archive.digest)?;
        let control = strata_supply::deb::control(&bytes).map_err(|e| {
            Error::Environment(format!(
                "`{label}`: the .deb it unpacked is unreadable: {e}"
            ))
        })?;
        let url = archive
            .from
            .as_ref()
            .and_then(|(dep, path)| fetched.get(dep.as_str())?.iter().find(|f| &f.path == path))
            .and_then(|f| f.url.clone());
        Ok(Some(DebPackage {
            package: control.package,
            version: control.version,
            architecture: control.architecture,
            source: control.source,
            source_version: control.source_version,
            sha256: FileFact::of(String::new(), &bytes).sha256,
            url,
        }))
    }
}

/// The source packages below a compiling step: fetched `.dsc`s reached
/// through its dependencies, passing through its own stage's steps and
/// through assembled or extracted trees, never into another compiling step.
fn built_from(
    label: &str,
    nodes: &BTreeMap<String, GraphNode>,
    components: &BTreeMap<String, Component>,
) -> Vec<SourcePackage> {
    let stage_of = |l: &str| l.split('#').next().unwrap_or(l).to_string();
    let own = stage_of(label);
    let mut found = BTreeSet::new();
    let mut seen = BTreeSet::from([label.to_string()]);
    let mut todo: Vec<String> = nodes[label].deps.values().cloned().collect();
    while let Some(at) = todo.pop() {
        if !seen.insert(at.clone()) {
            continue;
        }
        let Some(c) = components.get(&at) else {
            continue;
        };
        match &c.kind {
            Kind::Fetched { files, .. } => {
                found.extend(files.iter().filter_map(|f| f.source_package.clone()));
                continue;
            }
            Kind::Deb(_) | Kind::Image(_) => continue,
            Kind::Built => {}
        }
        let compiling = c.rule == "run" || c.rule == "stage";
        if compiling && stage_of(&at) != own {
            continue;
        }
        todo.extend(nodes[&at].deps.values().cloned());
    }
    found.into_iter().collect()
}

fn gone(label: &str, what: &str) -> Error {
    Error::Environment(format!(
        "{what} of `{label}` is not in the store (collected by `strata store gc`, or left on \
         the remote executor that ran it?); build it again (without --remote-executor, every \
         output is stored whole)"
    ))
}

/// The file at `path` inside the stored tree `root`.
fn file_at(store: &Store, root: &Digest, path: &str) -> Option<Digest> {
    let mut at = *root;
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    while let Some(part) = parts.next() {
        let (_, entry) = list(store.cas(), &at)
            .ok()?
            .into_iter()
            .find(|(name, _)| name == part)?;
        match (entry, parts.peek()) {
            (Entry::Dir { digest, .. }, Some(_)) => at = digest,
            (Entry::File { digest, .. }, None) => return Some(digest),
            _ => return None,
        }
    }
    None
}

/// The words of a command (the arguments split on white space and shell
/// quotes: enough to find URLs and `-o NAME`).
fn words(arguments: &[String]) -> Vec<String> {
    arguments
        .iter()
        .flat_map(|a| a.split(|c: char| c.is_whitespace() || c == '"' || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every http(s) URL the command names, sorted, each once.
fn urls(arguments: &[String]) -> Vec<String> {
    let set: BTreeSet<String> = words(arguments)
        .into_iter()
        .filter(|w| w.starts_with("https://") || w.starts_with("http://"))
        .collect();
    set.into_iter().collect()
}

/// File name -> URL where a command line says `-o NAME` (or `-O`,
/// `--output`) and a URL before its end.
fn named_urls(arguments: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for arg in arguments {
        for line in arg.lines() {
            let w = words(&[line.to_string()]);
            let name = w
                .windows(2)
                .find(|p| matches!(p[0].as_str(), "-o" | "-O" | "--output"))
                .map(|p| p[1].rsplit('/').next().unwrap_or(&p[1]).to_string());
            let url = w
                .iter()
                .find(|x| x.starts_with("https://") || x.starts_with("http://"));
            if let (Some(name), Some(url)) = (name, url) {
                out.insert(name, url.clone());
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What an `sbom` target describes: its `of` target and everything that
/// was made into it, all done, with their keys and outputs. Made by every
/// place that keys targets (the scheduler, and `audit` and `explain` when
/// they recompute keys), so an `sbom` target has one key.
pub(crate) struct FactsRequest<J> {
    pub(crate) root: String,
    closure: Vec<(J, Option<Digest>, Digest)>,
    labels: BTreeMap<petgraph::graph::NodeIndex, String>,
    source_date_epoch: u64,
    all_files: bool,
    holds_inputs: BTreeSet<String>,
}

impl<J: std::borrow::Borrow<crate::job::Job> + Clone> FactsRequest<J> {
    /// The request of `job` if it is an `sbom` target whose closure is
    /// done: `done` gives a node's key and output.
    pub(crate) fn of(
        jobs: &BTreeMap<petgraph::graph::NodeIndex, J>,
        job: &crate::job::Job,
        done: impl Fn(petgraph::graph::NodeIndex) -> Option<(Option<Digest>, Digest)>,
    ) -> Option<FactsRequest<J>> {
        let strata_rules::Work::Builtin {
            rule: strata_rules::builtin::Builtin::Sbom(p),
            source_date_epoch,
        } = &job.work
        else {
            return None;
        };
        let (_, of) = job.deps.iter().find(|(name, _)| name == p.target())?;
        let mut closure = Vec::new();
        let mut labels = BTreeMap::new();
        let mut todo = vec![*of];
        while let Some(n) = todo.pop() {
            if labels.contains_key(&n) {
                continue;
            }
            let node: &crate::job::Job = jobs[&n].borrow();
            labels.insert(n, node.name.clone());
            let (key, output) = done(n)?;
            closure.push((jobs[&n].clone(), key, output));
            todo.extend(node.deps.iter().map(|(_, d)| *d));
        }
        Some(FactsRequest {
            root: jobs[of].borrow().name.clone(),
            closure,
            labels,
            // A secret SOURCE_DATE_EPOCH (read with !ENV) is keyed as its
            // hash: the documents then say 0.
            source_date_epoch: source_date_epoch.keyed.parse().unwrap_or(0),
            all_files: p.files,
            holds_inputs: p.holds_inputs.iter().cloned().collect(),
        })
    }

    /// The outputs of the closure the facts are gathered from, which must
    /// be whole in the store first (a remote executor may have left their
    /// files on the service).
    pub(crate) fn outputs(&self) -> Vec<Digest> {
        self.closure.iter().map(|(_, _, output)| *output).collect()
    }

    /// Gathers the facts and adds them to `deps` as the dependency
    /// `.facts`: a stored tree holding `facts.json`, the rule's input.
    pub(crate) fn add_to(
        &self,
        store: &Store,
        deps: &mut Vec<(String, Digest)>,
    ) -> Result<(), String> {
        let built: Vec<Built> = self
            .closure
            .iter()
            .map(|(job, key, output)| {
                let job: &crate::job::Job = job.borrow();
                Built {
                    label: &job.name,
                    work: &job.work,
                    sources: &job.sources,
                    deps: job
                        .deps
                        .iter()
                        .map(|(name, d)| (name.clone(), self.labels[d].clone()))
                        .collect(),
                    key: *key,
                    output: *output,
                }
            })
            .collect();
        let facts = facts_in_build(
            store,
            &self.root,
            &built,
            self.source_date_epoch,
            self.all_files,
            &self.holds_inputs,
        )?;
        let bytes = serde_json::to_vec(&facts).expect("facts serialize");
        let cas = store.cas();
        let blob = cas.put_bytes(&bytes).map_err(|e| e.to_string())?;
        let mut tree = strata_store::tree::TreeBuilder::new();
        tree.insert(
            strata_rules::builtin::sbom::FACTS_FILE,
            strata_store::tree::Node::file(blob, false),
        )
        .map_err(|e| e.to_string())?;
        let tree = tree.store(cas).map_err(|e| e.to_string())?;
        deps.push((strata_rules::builtin::sbom::FACTS_DEP.to_string(), tree));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_a_fetch_command() {
        let cmd = vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p $OUT/debs && cd $OUT/debs\ncurl -fsSL --retry 3 -o busybox_1%3a1.35_amd64.deb http://deb.debian.org/b/busybox_1.35_amd64.deb\nwget 'https://example.org/x%2By.tar.gz'\n".into(),
        ];
        assert_eq!(
            urls(&cmd),
            [
                "http://deb.debian.org/b/busybox_1.35_amd64.deb",
                "https://example.org/x%2By.tar.gz"
            ]
        );
        let named = named_urls(&cmd);
        assert_eq!(
            named.get("busybox_1%3a1.35_amd64.deb").map(String::as_str),
            Some("http://deb.debian.org/b/busybox_1.35_amd64.deb")
        );
        assert_eq!(percent_decode("x%2By.tar.gz"), "x+y.tar.gz");
    }
}
