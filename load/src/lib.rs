//! Phase 1, load: BUILD.yaml (and what it includes) -> typed targets.
//!
//! The only crate that knows YAML. A target comes out as the [`Work`] the
//! scheduler runs; `matrix` loads one workspace per `--matrix` value,
//! `globs` expands `srcs` patterns.
//!
//! Every check that can be made without touching sources happens here, and
//! every failure is a [`ConfigError`] pointing at the offending token.

mod compose;
mod containers;
mod defaults;
pub mod diag;
mod duration;
pub mod globs;
mod includes;
mod interp;
pub mod matrix;
mod matrix_decl;
mod overrides;
mod platform;
mod schema;
mod size;
pub mod source;
mod tags;
pub mod tools;
mod tree;
mod when;
mod yaml_errors;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde_saphyr::{Location, Spanned};
use strata_rules::builtin::{Builtin, Seg, path_text};
use strata_rules::run::{FixedOutput, Limits, Program, RunDeclared, RunParams};
use strata_rules::table::{self, FieldKind, Parse, Rule};
use strata_rules::{Text, Work};

pub use diag::ConfigError;
use diag::{At, did_you_mean, unknown_field_hint};
use includes::Resolved;
pub use interp::{EnvSpec, Var, Vars, is_var_name};
pub use matrix_decl::{DeclaredVar, MatrixAxis, is_matrix_value};
use schema::{Pairs, RawFile, RawLimits, RawTarget};
pub use source::{Loc, Sources};
use tree::Tree;

/// A value and where it was written.
#[derive(Clone, Debug)]
pub struct Located<T> {
    pub value: T,
    pub loc: Loc,
}

/// One target after loading: names resolved, strings interpolated, checked.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub loc: Loc,
    /// The folder of the file that declared it; `srcs` are relative to it.
    pub dir: PathBuf,
    pub srcs: Vec<Located<String>>,
    /// Files of the sources a rule installs by name (a component's
    /// `source:`), each staged unless `srcs` already stages it or files
    /// below it: `srcs` may select what a folder contributes.
    pub named_srcs: Vec<Located<String>>,
    pub deps: Vec<Located<String>>,
    pub outs: Vec<Located<String>>,
    pub output_digest: Option<Located<FixedOutput>>,
    /// A step of a stage other than its last: built as a dependency, never
    /// by default and never placed in `out/`.
    pub hidden: bool,
    /// What it does.
    pub work: Work,
    /// What a `run` declaration says beyond its step (`None` for other
    /// rules).
    pub run: Option<RunDeclared>,
}

/// A loaded workspace: its root folder, files and targets (sorted by name).
#[derive(Debug)]
pub struct Workspace {
    pub root: PathBuf,
    pub build_file: PathBuf,
    pub sources: Sources,
    pub targets: Vec<Target>,
    /// Targets whose `when:` is false, with where the condition is written:
    /// not in the graph, but not unknown either.
    pub switched_off: BTreeMap<String, Loc>,
    /// Where outputs are materialized, absolute: `out_dir:` of the root
    /// file, else `out/` beside it (`--out-dir` overrides it per command).
    pub out_dir: PathBuf,
    /// `default:` of the root file: what a command that names no target
    /// builds (`None`: every target that is not hidden).
    pub defaults: Option<Vec<String>>,
    /// Where `out_dir:` is written, if it is.
    pub out_dir_loc: Option<Loc>,
    /// The variables the root file's `vars:` declares, by name.
    pub declared_vars: BTreeMap<String, DeclaredVar>,
    /// `matrix:` of the root file: the values each listed variable may take.
    pub matrix: Vec<MatrixAxis>,
    /// Every variable's value as keys see it (`Text::keyed`: a secret as
    /// its hash only), for build records and provenance.
    pub vars: BTreeMap<String, String>,
}

/// Reads a YAML settings file of Strata's own (`strata.yaml`, the remote cache settings)
/// into `T`, so that no crate but this one parses YAML; the error is the
/// parser's message.
pub fn settings_from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

/// Inputs of loading besides the files.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--var name=value`, applied over `vars:`.
    pub var_overrides: Vec<(String, String)>,
    /// Values `!ENV` reads instead of the process environment's (`None`:
    /// unset): `strata audit` changes its own `TZ` and `LANG` but loads the
    /// workspace as a build would.
    pub env_overrides: Vec<(String, Option<String>)>,
}

fn env_var(options: &LoadOptions, name: &str) -> Result<String, std::env::VarError> {
    match options.env_overrides.iter().find(|(n, _)| n == name) {
        Some((_, Some(v))) => Ok(v.clone()),
        Some((_, None)) => Err(std::env::VarError::NotPresent),
        None => std::env::var(name),
    }
}

/// `build_file` made absolute, and the workspace root (its folder).
fn root_file(build_file: &Path) -> Result<(PathBuf, PathBuf), Vec<ConfigError>> {
    let build_file = fs::canonicalize(build_file).map_err(|e| {
        vec![ConfigError::general(
            format!("cannot open {}: {e}", build_file.display()),
            Some("run strata in a folder with a BUILD.yaml, or pass one with -f FILE".into()),
        )]
    })?;
    let root = build_file
        .parent()
        .expect("a file has a parent")
        .to_path_buf();
    Ok((build_file, root))
}

/// Loads `build_file` and everything it includes.
pub fn load(build_file: &Path, options: &LoadOptions) -> Result<Workspace, Vec<ConfigError>> {
    let (build_file, root) = root_file(build_file)?;
    let mut loader = Loader::new(root.clone());
    let mut pending: Vec<Pending> = Vec::new();
    let mut vars = Vars::default();
    let mut out_dir = None;
    let mut out_dir_loc = None;
    let mut raw_defaults = None;
    let mut matrix = Vec::new();
    if let Some((file, ids)) = loader.parse(&build_file) {
        vars = loader.vars(file.vars, &ids, options);
        matrix = loader.matrix(file.matrix, &ids, &vars, options);
        out_dir_loc = file.out_dir.as_ref().map(|o| ids.at(o));
        out_dir = loader.out_dir(file.out_dir.as_ref(), &ids, &vars, &root);
        raw_defaults = file.default.map(|d| (d, ids.clone()));
        loader.collect(file.targets, file.include, &ids, &root, &vars, &mut pending);
    }
    // Conditions first: which names are switched off must be known before
    // any target's references are read.
    let mut live = Vec::with_capacity(pending.len());
    for p in pending {
        match loader.condition(&p.raw, &p.ids, &vars) {
            Some(true) => live.push(p),
            Some(false) => {
                let loc = p
                    .raw
                    .when
                    .as_ref()
                    .map(|w| p.ids.at(w))
                    .unwrap_or(p.name.loc);
                loader.off.entry(p.name.value.clone()).or_insert(loc);
            }
            None => {}
        }
    }
    // One name may have several definitions, one per condition (a `select`).
    if !loader.off.is_empty() {
        let on_names: BTreeSet<&str> = live.iter().map(|p| p.name.value.as_str()).collect();
        loader
            .off
            .retain(|name, _| !on_names.contains(name.as_str()));
    }
    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    // Read with !ENV it is a secret like any other: keyed by its hash.
    let source_date_epoch = vars
        .get("SOURCE_DATE_EPOCH")
        .map(Var::text)
        .unwrap_or_else(|| Text::plain("0"));
    for Pending {
        raw,
        ids,
        name,
        dir,
    } in live
    {
        if let Some(first) = targets.get(&name.value) {
            let at = At {
                sources: &loader.sources,
            };
            let first_place = at.error(first.loc, "", "", None).place.unwrap_or_default();
            let e = at
                .error(
                    name.loc,
                    format!("target `{}` is declared twice", name.value),
                    "declared again here",
                    Some(format!("target names are unique across the BUILD file and every file it includes: rename one of the two, or remove one (the first is at {first_place})")),
                )
                .also_at(&loader.sources, first.loc, "first declared here");
            loader.errors.push(e);
            continue;
        }
        for t in loader.target(*raw, &ids, name, dir, &vars, &source_date_epoch) {
            targets.insert(t.name.clone(), t);
        }
    }
    loader.check_compose_images(&targets);
    loader.compose_platforms(&mut targets);
    loader.resolve_platforms(&mut targets);
    loader.check_switched_off_references(&targets);
    let defaults = raw_defaults.and_then(|(d, ids)| loader.defaults(Some(&d), &ids, &targets));
    let declared: BTreeSet<String> = loader.declared_vars.keys().cloned().collect();
    let unknown = overrides::unknown_overrides(&options.var_overrides, &declared, &loader.sources);
    loader.errors.extend(unknown);
    let out_dir = out_dir.unwrap_or_else(|| root.join("out"));
    if !loader.errors.is_empty() {
        return Err(loader.errors);
    }
    Ok(Workspace {
        root,
        build_file,
        sources: loader.sources,
        targets: targets.into_values().collect(),
        switched_off: loader.off,
        out_dir,
        defaults,
        out_dir_loc,
        declared_vars: loader.declared_vars,
        matrix,
        vars: vars
            .names()
            .filter_map(|n| Some((n.to_string(), vars.get(n)?.text().keyed)))
            .collect(),
    })
}

/// What the root file declares about its variables, read without loading
/// any target: enough to expand and check `--matrix` before the workspace
/// is loaded once per value.
#[derive(Debug)]
pub struct Declarations {
    pub sources: Sources,
    pub vars: BTreeMap<String, DeclaredVar>,
    pub matrix: Vec<MatrixAxis>,
}

/// Reads the `vars:` and `matrix:` of `build_file` (its own errors
/// included; what its targets and includes hold is left for `load`).
pub fn declarations(
    build_file: &Path,
    options: &LoadOptions,
) -> Result<Declarations, Vec<ConfigError>> {
    let (build_file, root) = root_file(build_file)?;
    let mut loader = Loader::new(root);
    let mut matrix = Vec::new();
    if let Some((file, ids)) = loader.parse(&build_file) {
        let vars = loader.vars(file.vars, &ids, options);
        matrix = loader.matrix(file.matrix, &ids, &vars, options);
    }
    if !loader.errors.is_empty() {
        return Err(loader.errors);
    }
    Ok(Declarations {
        sources: loader.sources,
        vars: loader.declared_vars,
        matrix,
    })
}

struct Loader {
    root: PathBuf,
    sources: Sources,
    errors: Vec<ConfigError>,
    seen_files: BTreeSet<PathBuf>,
    /// Image targets of `docker-compose` components, checked after loading.
    compose_checks: Vec<compose::ImageCheck>,
    compose_platforms: Vec<compose::PlatformCheck>,
    /// Switched-off target names and where their condition is written.
    off: BTreeMap<String, Loc>,
    /// The root file's variables, with where they are written.
    declared_vars: BTreeMap<String, DeclaredVar>,
    /// Where platforms are written, for `platform::resolve`.
    platforms: platform::Written,
}

impl Loader {
    /// A loader for the workspace whose root file is in `root`.
    fn new(root: PathBuf) -> Self {
        Loader {
            root,
            sources: Sources::default(),
            errors: Vec::new(),
            seen_files: BTreeSet::new(),
            compose_checks: Vec::new(),
            compose_platforms: Vec::new(),
            off: BTreeMap::new(),
            declared_vars: BTreeMap::new(),
            platforms: platform::Written::default(),
        }
    }
}

/// Maps serde-saphyr source ids of one parse to our file indices: id 1 is the
/// parsed file, 2.. the `!include`d files in the order they were resolved.
#[derive(Clone)]
struct FileIds(Rc<Vec<usize>>);

/// A target read from some file, waiting for all files to be read (boxed:
/// a `RawTarget` is large, and a workspace may hold a great many).
struct Pending {
    raw: Box<RawTarget>,
    ids: FileIds,
    name: Located<String>,
    dir: PathBuf,
}

impl FileIds {
    fn at<T>(&self, s: &Spanned<T>) -> Loc {
        self.loc(&s.referenced)
    }

    fn loc(&self, l: &Location) -> Loc {
        let idx = (l.source_id() as usize).saturating_sub(1);
        Loc {
            file: self.0.get(idx).copied().unwrap_or(self.0[0]),
            line: l.line().max(1),
            column: l.column().max(1),
            len: l.span().len(),
        }
    }
}

impl Loader {
    fn at(&self) -> At<'_> {
        At {
            sources: &self.sources,
        }
    }

    fn display_name(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string())
    }

    /// Reads and parses one file; `!include` tags resolve inside the workspace.
    fn parse(&mut self, path: &Path) -> Option<(RawFile, FileIds)> {
        let display = source::shown(path);
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                self.errors.push(ConfigError::general(
                    format!("cannot read {display}: {e}"),
                    None,
                ));
                return None;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            self.errors.push(ConfigError::general(
                format!("{display} is not UTF-8 text"),
                Some("a BUILD file is YAML, which must be UTF-8".into()),
            ));
            return None;
        };
        let file = self.sources.add(path, display.clone(), text);
        let text = self.sources.get(file).text.clone();
        let resolved: Rc<RefCell<Vec<Resolved>>> = Rc::default();
        let resolver = match serde_saphyr::SafeFileResolver::new(&self.root)
            .and_then(|r| r.with_root_file(path))
        {
            Ok(r) => r,
            Err(e) => {
                self.errors.push(ConfigError::general(
                    format!("cannot resolve includes in {}: {e}", self.root.display()),
                    None,
                ));
                return None;
            }
        };
        let mut includes = includes::Includes::new(resolver, &self.root, path, resolved.clone());
        // Big enough for workspaces of a few hundred thousand targets; the
        // nesting and alias limits stay at serde-saphyr's safe defaults.
        // `chmod: 0755` unquoted stays the text `0755`, octal as YAML 1.1 and
        // chmod(1) read it: YAML 1.2 has no such number (it would be the
        // float 755.0). Typed fields (`network: true`) are not affected.
        // Repeated keys reach the loader, which names both places.
        let options = serde_saphyr::options! {
            with_snippet: false,
            leading_zero_numbers_as_strings: true,
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
            budget: serde_saphyr::budget! { max_events: 20_000_000, max_nodes: 10_000_000 },
        }
        .with_include_resolver(move |req: serde_saphyr::IncludeRequest<'_>| includes.resolve(req));
        let parsed = serde_saphyr::from_str_with_options::<RawFile>(&text, options);
        let mut ids = vec![file];
        for included in resolved.borrow().iter() {
            let text = match &included.text {
                Some(t) => t.clone(),
                None => fs::read_to_string(&included.path).unwrap_or_default(),
            };
            let name = source::shown(&included.path);
            ids.push(self.sources.add(&included.path, name, text));
        }
        let ids = FileIds(Rc::new(ids));
        match parsed {
            Ok(raw) => {
                self.check_env_tags(&ids);
                Some((raw, ids))
            }
            Err(e) => {
                let err = match e.location() {
                    Some(l) => {
                        let full = e.to_string();
                        let message = strip_location(&full);
                        let loc = ids.loc(&l);
                        let text = self.sources.get(loc.file).text.clone();
                        let said = yaml_errors::explain(&message, loc, &text, loc.file == file);
                        let err =
                            self.at()
                                .error(said.loc, said.message, said.label, Some(said.help));
                        match said.also {
                            Some((other, label)) => err.also_at(&self.sources, other, &label),
                            None => err,
                        }
                    }
                    None => ConfigError::general(format!("{display}: {e}"), None),
                };
                self.errors.push(err);
                None
            }
        }
    }

    /// `!ENV` is read only as the value of a top-level `vars:` entry; anywhere
    /// else serde would take it for the literal text that follows it.
    /// `ids` are the parsed file (index 0) and the sources it included, as
    /// `parse` added them to `sources`.
    fn check_env_tags(&mut self, ids: &FileIds) {
        for (index, &file) in ids.0.iter().enumerate() {
            let text = self.sources.get(file).text.clone();
            for m in tags::misplaced_env(&text, index == 0) {
                let loc = Loc {
                    file,
                    line: m.line,
                    column: m.column,
                    len: m.len,
                };
                let e = self.at().error(
                    loc,
                    "`!ENV` is read only in `vars:`",
                    "not in `vars:`",
                    Some("declare it as a variable of the root file (`token: !ENV TOKEN` under `vars:`) and use `${token}` here".into()),
                );
                self.errors.push(e);
            }
        }
    }

    fn vars(
        &mut self,
        raw: Option<Pairs<Spanned<serde_saphyr::Tagged<String>>>>,
        ids: &FileIds,
        options: &LoadOptions,
    ) -> Vars {
        let raw = raw.map(|r| r.0).unwrap_or_default();
        let mut vars = Vars::default();
        let mut seen: BTreeMap<String, Loc> = BTreeMap::new();
        // `--var` wins over the file, and applies before interpolation: a
        // variable built from an overridden one sees the new value. New names
        // come first so file variables can use them.
        let overrides: BTreeMap<&str, &str> = options
            .var_overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (name, value) in &overrides {
            if !raw.iter().any(|(n, _)| n.value == *name) {
                vars.insert(name.to_string(), Var::plain(value.to_string()));
            }
        }
        for (name, value) in raw {
            let name_loc = ids.loc(&name.referenced);
            let value_loc = ids.loc(&value.referenced);
            let name = name.value;
            if !is_var_name(&name) {
                let e = self.at().error(
                    name_loc,
                    format!("`{name}` is not a valid variable name"),
                    "invalid name",
                    Some(
                        "variable names are letters, digits and `_`, not starting with a digit"
                            .into(),
                    ),
                );
                self.errors.push(e);
                continue;
            }
            if let Some(first) = seen.get(&name).copied() {
                let e = self
                    .at()
                    .error(
                        name_loc,
                        format!("variable `{name}` is declared twice"),
                        "declared again here",
                        Some(
                            "YAML keeps one value of a key: remove the one you do not mean".into(),
                        ),
                    )
                    .also_at(&self.sources, first, "first declared here");
                self.errors.push(e);
                continue;
            }
            seen.insert(name.clone(), name_loc);
            self.declared_vars.insert(
                name.clone(),
                DeclaredVar {
                    loc: name_loc,
                    value_loc,
                    from_env: value.value.1.as_deref() == Some("!ENV"),
                },
            );
            if let Some(v) = overrides.get(name.as_str()) {
                vars.insert(name, Var::plain(v.to_string()));
                continue;
            }
            let serde_saphyr::Tagged(text, tag) = value.value;
            // A variable whose value is in error stays declared (empty), so its
            // uses do not report a second, misleading "unknown variable".
            let broken = Var::plain(String::new());
            let var = match tag.as_deref() {
                None => match vars.interpolate(&text) {
                    Ok(t) if t.has_secret() => Var {
                        value: t.actual,
                        from_env: Some(format!("via {name}")),
                        secrets: t.secrets,
                    },
                    Ok(t) => Var::plain(t.actual),
                    Err(e) => {
                        let err = self.interp_error(value_loc, &text, e);
                        self.errors.push(err);
                        broken.clone()
                    }
                },
                Some("!ENV") => match EnvSpec::parse(&text) {
                    Ok(spec) => match (env_var(options, &spec.name), spec.default) {
                        (Ok(v), _) => Var::from_environment(spec.name, v),
                        // Written in the file: hashed in keys like any !ENV
                        // value, but nothing to mask.
                        (Err(_), Some(d)) => Var {
                            value: d,
                            from_env: Some(spec.name),
                            secrets: Vec::new(),
                        },
                        (Err(_), None) => {
                            let e = self.at().error(
                                value_loc,
                                format!("environment variable `{}` is not set", spec.name),
                                "required here",
                                Some(format!("set {} in the environment, or give a default: `!ENV ${{{}:default}}`", spec.name, spec.name)),
                            );
                            self.errors.push(e);
                            broken.clone()
                        }
                    },
                    Err(msg) => {
                        let e = self.at().error(
                            value_loc,
                            format!("bad !ENV reference: {msg}"),
                            "here",
                            Some("write `!ENV NAME` (required) or `!ENV ${NAME:default}`".into()),
                        );
                        self.errors.push(e);
                        broken.clone()
                    }
                },
                Some(other) => {
                    let e = self.at().error(
                        value_loc,
                        format!("unknown tag `{other}` on variable `{name}`"),
                        "unknown tag",
                        Some("the only tag a variable takes is `!ENV`".into()),
                    );
                    self.errors.push(e);
                    broken.clone()
                }
            };
            vars.insert(name, var);
        }
        if let Some(sde) = vars.get("SOURCE_DATE_EPOCH")
            && (sde.value.is_empty() || !sde.value.chars().all(|c| c.is_ascii_digit()))
        {
            let loc = seen.get("SOURCE_DATE_EPOCH").copied();
            let msg = "SOURCE_DATE_EPOCH must be a whole number of seconds".to_string();
            self.errors.push(match loc {
                Some(l) => self.at().error(
                    l,
                    msg,
                    "not a number",
                    Some("for example `SOURCE_DATE_EPOCH: \"1700000000\"`".into()),
                ),
                None => ConfigError::general(msg, None),
            });
        }
        vars
    }

    /// Queues the targets of one file and follows its `include:` patterns.
    fn collect(
        &mut self,
        targets: Option<Pairs<Spanned<Box<RawTarget>>>>,
        include: Option<Vec<Spanned<String>>>,
        ids: &FileIds,
        dir: &Path,
        vars: &Vars,
        pending: &mut Vec<Pending>,
    ) {
        for (name, value) in targets.map(|t| t.0).unwrap_or_default() {
            let name_loc = ids.loc(&name.referenced);
            let value_loc = ids.loc(&value.referenced);
            if !is_target_name(&name.value) {
                let e = self.at().error(
                    name_loc,
                    format!("`{}` is not a valid target name", name.value),
                    "invalid name",
                    Some("target names match [a-z0-9][a-z0-9_-]*".into()),
                );
                self.errors.push(e);
                continue;
            }
            pending.push(Pending {
                raw: value.value,
                ids: ids.clone(),
                name: Located {
                    value: name.value,
                    loc: name_loc,
                },
                dir: dir.to_path_buf(),
            });
            let _ = value_loc;
        }
        for pattern in include.unwrap_or_default() {
            let loc = ids.loc(&pattern.referenced);
            // `include: [arch/${arch}.yaml]` picks files by variable.
            let Some(text) = self.text(&pattern, loc, vars, false, "include") else {
                continue;
            };
            let pattern = Spanned {
                value: text.actual,
                referenced: pattern.referenced,
                defined: pattern.defined,
            };
            let files = match globs::expand(dir, &pattern.value, &[], &self.root) {
                Ok(f) if f.is_empty() => {
                    let e = self.at().error(
                        loc,
                        format!("include pattern `{}` matches no file", pattern.value),
                        "matches nothing",
                        Some(match self.display_name(dir) {
                            d if d.is_empty() => {
                                "patterns are relative to the root BUILD.yaml's folder".into()
                            }
                            d => format!(
                                "patterns are relative to `{d}`, the including file's folder"
                            ),
                        }),
                    );
                    self.errors.push(e);
                    continue;
                }
                Ok(f) => f,
                Err(e) => {
                    let err = self.glob_error(loc, &pattern.value, e, "include");
                    self.errors.push(err);
                    continue;
                }
            };
            for rel in files {
                let path = match fs::canonicalize(dir.join(&rel)) {
                    Ok(p) if p.starts_with(&self.root) => p,
                    _ => {
                        let e = self.at().error(
                            loc,
                            format!("`{rel}` is outside the workspace"),
                            "included from here",
                            Some(
                                "included files must be inside the folder of the root BUILD.yaml"
                                    .into(),
                            ),
                        );
                        self.errors.push(e);
                        continue;
                    }
                };
                if !self.seen_files.insert(path.clone()) {
                    let e = self.at().error(
                        loc,
                        format!("`{rel}` is included more than once"),
                        "included again here",
                        Some("each file may be included once; check for include cycles".into()),
                    );
                    self.errors.push(e);
                    continue;
                }
                let Some((file, sub_ids)) = self.parse(&path) else {
                    continue;
                };
                if let Some(v) = file.vars.as_ref().and_then(|v| v.0.first()) {
                    let e = self.at().error(
                        sub_ids.loc(&v.0.referenced),
                        "`vars` may only be declared in the root BUILD.yaml",
                        "not allowed in an included file",
                        Some(
                            "move the variable to the root file; every included file sees it"
                                .into(),
                        ),
                    );
                    self.errors.push(e);
                }
                let root_only = [
                    ("out_dir", file.out_dir.as_ref().map(|o| sub_ids.at(o))),
                    ("default", file.default.as_ref().map(|d| sub_ids.at(d))),
                    ("matrix", file.matrix.as_ref().map(|m| sub_ids.at(m))),
                ];
                for (key, loc) in root_only {
                    if let Some(loc) = loc {
                        let e = self.at().error(
                            loc,
                            format!("`{key}` may only be set in the root BUILD.yaml"),
                            "not allowed in an included file",
                            Some("move it to the root file".into()),
                        );
                        self.errors.push(e);
                    }
                }
                let sub_dir = path.parent().expect("a file has a parent").to_path_buf();
                self.collect(
                    file.targets,
                    file.include,
                    &sub_ids,
                    &sub_dir,
                    vars,
                    pending,
                );
            }
        }
    }

    /// `${var}` in every string of a built-in rule's field, each error at
    /// its own place. A secret has no use in a built-in rule and would end
    /// up in its output.
    fn interpolate_tree(&mut self, tree: &mut Tree, vars: &Vars) {
        let mut errors = Vec::new();
        tree.strings_mut(&mut |s, loc| match vars.interpolate(s) {
            Ok(t) if t.has_secret() => errors.push(self.at().error(
                self.find_in_source(loc, s.as_str()),
                "a value read with !ENV cannot be used in a built-in rule",
                "uses an !ENV value",
                Some("!ENV values are secrets; built-in rules write their parameters into outputs and keys".into()),
            )),
            Ok(t) => *s = t.actual,
            Err(e) => errors.push(self.interp_error(loc, s, e)),
        });
        self.errors.extend(errors);
    }

    /// A key written twice in one mapping of a built-in rule's field: YAML
    /// keeps one of them, so neither may be silently lost.
    fn repeated_keys(&mut self, tree: &Tree, field: &str) {
        for (first, again) in tree.repeated_keys() {
            let e = self
                .at()
                .error(
                    again.loc,
                    format!("`{}` is given twice in `{field}`", again.value),
                    "given again here",
                    Some("each key of a mapping is written once; keep the one you mean".into()),
                )
                .also_at(&self.sources, first.loc, "first given here");
            self.errors.push(e);
        }
    }

    fn interp_error(&self, loc: Loc, text: &str, e: interp::InterpError) -> ConfigError {
        let piece: String = text.chars().skip(e.offset).take(e.len).collect();
        let loc = self.find_in_source(loc, &piece);
        self.at().error(loc, e.message, "here", Some(e.help))
    }

    /// Narrows `loc` to where `piece` appears on or after it in the source.
    fn find_in_source(&self, loc: Loc, piece: &str) -> Loc {
        let text = self.sources.get(loc.file).text.clone();
        let start = self.sources.span(loc).offset();
        let window_end = (start + 4096).min(text.len());
        match text.get(start..window_end).and_then(|w| w.find(piece)) {
            Some(off) => {
                let abs = start + off;
                let before = &text[..abs];
                let line = before.matches('\n').count() as u64 + 1;
                let column = before.rsplit('\n').next().unwrap_or("").chars().count() as u64 + 1;
                Loc {
                    file: loc.file,
                    line,
                    column,
                    len: piece.chars().count() as u64,
                }
            }
            None => loc,
        }
    }

    fn glob_error(&self, loc: Loc, pattern: &str, e: globs::GlobError, what: &str) -> ConfigError {
        match e {
            globs::GlobError::Pattern(msg) => self.at().error(loc, format!("bad {what} pattern `{pattern}`: {msg}"), "bad pattern", Some("patterns are relative to the BUILD file's folder and stay inside the workspace".into())),
            globs::GlobError::Path { path, reason } => self.at().error(loc, format!("{what} pattern `{pattern}`: {}: {reason}", self.display_name(&path)), "while expanding this", None),
        }
    }

    /// Interpolates one string; secrets are refused where `allow_secret` is false.
    fn text(
        &mut self,
        s: &Spanned<String>,
        loc: Loc,
        vars: &Vars,
        allow_secret: bool,
        what: &str,
    ) -> Option<Text> {
        match vars.interpolate(&s.value) {
            Ok(t) if t.has_secret() && !allow_secret => {
                let e = self.at().error(loc, format!("a value read with !ENV cannot be used in {what}"), "uses an !ENV value", Some(format!("!ENV values are secrets and never appear in paths or names; use a plain variable or `--var` for {what}")));
                self.errors.push(e);
                None
            }
            Ok(t) => Some(t),
            Err(e) => {
                let err = self.interp_error(loc, &s.value, e);
                self.errors.push(err);
                None
            }
        }
    }

    fn target(
        &mut self,
        mut raw: RawTarget,
        ids: &FileIds,
        name: Located<String>,
        dir: PathBuf,
        vars: &Vars,
        source_date_epoch: &Text,
    ) -> Vec<Target> {
        let errors_before = self.errors.len();
        let rule_loc = ids.at(&raw.rule);
        let Some(rule) = table::rule(&raw.rule.value) else {
            let known = known_rules();
            let hint = did_you_mean(&raw.rule.value, known.iter().copied())
                .unwrap_or_else(|| format!("known rules: {}", known.join(", ")));
            let e = self.at().error(
                rule_loc,
                format!("unknown rule `{}`", raw.rule.value),
                "unknown rule",
                Some(hint),
            );
            self.errors.push(e);
            return Vec::new();
        };
        let srcs = self.sources(&raw.srcs, ids, vars);
        let mut deps = self.dependencies(&raw.deps, ids, vars);
        let common = |srcs, deps| containers::Common {
            name: name.clone(),
            dir: dir.clone(),
            srcs,
            deps,
            source_date_epoch: source_date_epoch.clone(),
            errors_before,
        };
        match rule.parse {
            Parse::Stage => return self.stage_targets(raw, ids, vars, common(srcs, deps)),
            Parse::ImagePull => {
                return self
                    .image_pull_target(raw, ids, vars, common(srcs, deps))
                    .into_iter()
                    .collect();
            }
            Parse::DataRoot => {
                return self
                    .data_root_target(raw, ids, vars, common(srcs, deps))
                    .into_iter()
                    .collect();
            }
            Parse::Builtin(_) => {
                return self.builtin_target(
                    raw,
                    rule,
                    ids,
                    name,
                    dir,
                    vars,
                    source_date_epoch,
                    srcs,
                    deps,
                    errors_before,
                );
            }
            Parse::Run => {}
        }
        // `platform` of a step in an image is read with `image:`.
        for (field, value) in raw.generic_fields() {
            if rule.takes(field) {
                continue;
            }
            let e = self.at().error(
                ids.at(value),
                format!("field `{field}` does not apply to rule `run`"),
                "not a field of `run`",
                Some(format!(
                    "`run` takes: srcs, deps, {}",
                    rule.field_names().join(", ")
                )),
            );
            self.errors.push(e);
        }
        let mut outs: Vec<Located<String>> = Vec::new();
        for o in &raw.outs {
            let loc = ids.at(o);
            let Some(t) = self.text(o, loc, vars, false, "outs") else {
                continue;
            };
            if let Err(msg) = check_out_path(&t.actual) {
                let e = self.at().error(loc, format!("output `{}` is outside $OUT: {msg}", t.actual), "outside $OUT", Some("outs are paths relative to $OUT, such as `words.txt`, or `dist/` for a folder".into()));
                self.errors.push(e);
                continue;
            }
            let norm = t.actual.trim_end_matches('/');
            if let Some(other) = outs.iter().find(|x| {
                let x = x.value.trim_end_matches('/');
                x == norm
                    || norm.starts_with(&format!("{x}/"))
                    || x.starts_with(&format!("{norm}/"))
            }) {
                let e = self.at().error(loc, format!("output `{}` overlaps output `{}`", t.actual, other.value), "overlaps another output", Some("each output is declared once; a folder output already holds everything below it".into()));
                self.errors.push(e);
                continue;
            }
            outs.push(Located {
                value: t.actual,
                loc,
            });
        }
        let program = self.program(
            &raw.cmd,
            &raw.argv,
            ids,
            vars,
            name.loc,
            &format!("target `{}`", name.value),
        );
        let env = self.env(raw.env.take(), ids, vars, RunParams::RESERVED_ENV);
        let output_digest = match &raw.output_digest {
            Some(d) => {
                let loc = ids.at(d);
                match self
                    .text(d, loc, vars, false, "output_digest")
                    .map(|t| FixedOutput::parse(&t.actual))
                {
                    Some(Ok(f)) => Some(Located { value: f, loc }),
                    Some(Err(msg)) => {
                        let e = self.at().error(loc, format!("bad output_digest: {msg}"), "not a digest", Some("run the step once with any digest; the error shows the digest of what it produced".into()));
                        self.errors.push(e);
                        None
                    }
                    None => None,
                }
            }
            None => None,
        };
        let limits = self.limits(raw.limits.as_ref(), raw.image.as_ref(), ids);
        let container = self.run_container(&mut raw, ids, vars, &name, &mut deps);
        let tools = self.tools(
            &raw,
            ids,
            vars,
            container.is_some() || output_digest.is_some(),
        );
        if self.errors.len() > errors_before {
            return Vec::new();
        }
        let Some(program) = program else {
            return Vec::new();
        };
        let run = RunParams {
            program,
            env,
            outs: outs.iter().map(|o| o.value.clone()).collect(),
            network: raw.network.as_ref().map(|n| n.value).unwrap_or(false),
            local: raw.local.as_ref().is_some_and(|l| l.value),
            fixed_output: output_digest.as_ref().map(|d| d.value.clone()),
            source_date_epoch: source_date_epoch.clone(),
            container,
            tools,
            limits,
        };
        vec![Target {
            name: name.value,
            loc: name.loc,
            dir,
            srcs,
            named_srcs: Vec::new(),
            deps,
            outs,
            output_digest,
            hidden: false,
            run: Some(run.declared()),
            work: Work::Run(run.step()),
        }]
    }

    /// `tools:` of a `run` step, each found on this machine now (a missing
    /// one is an error at its place, not a step failing later).
    fn tools(
        &mut self,
        raw: &RawTarget,
        ids: &FileIds,
        vars: &Vars,
        hermetic: bool,
    ) -> Option<Vec<String>> {
        let list = raw.tools.as_ref()?;
        if hermetic {
            let e = self.at().error(
                ids.at(list),
                "`tools` keys a step that runs on the host",
                "not a host step",
                Some("a step in an image is keyed by the image's digest, and a fixed-output step by its output digest; remove `tools`".into()),
            );
            self.errors.push(e);
            return None;
        }
        let mut tools = Vec::new();
        for item in &list.value {
            let loc = ids.at(item);
            let Some(t) = self.text(item, loc, vars, false, "tools") else {
                continue;
            };
            match crate::tools::resolve(&t.actual) {
                Ok(_) => tools.push(t.actual),
                Err(msg) => {
                    let e = self.at().error(
                        loc,
                        format!("tool not found: {msg}"),
                        "not found",
                        Some("name a program the step runs, found in its PATH, or give its absolute path; install it if it is missing".into()),
                    );
                    self.errors.push(e);
                }
            }
        }
        Some(tools)
    }

    /// `limits:` of a `run` target, each value checked where it stands.
    fn limits(
        &mut self,
        raw: Option<&Spanned<RawLimits>>,
        image: Option<&Spanned<String>>,
        ids: &FileIds,
    ) -> Limits {
        let mut limits = Limits::default();
        let Some(raw) = raw else {
            return limits;
        };
        let sandbox_only = raw.value.processes.is_some() || raw.value.memory.is_some();
        if let (Some(image), true) = (image, sandbox_only) {
            // Docker runs those steps, under its own process and memory
            // limits; a time limit is Strata's to keep (it removes the
            // container), so it applies there too.
            let e = self.at().error(
                ids.at(raw),
                "`limits: processes` and `memory` apply to steps in the sandbox, not in a container",
                "with `image:`",
                Some(format!(
                    "drop them here (`time` may stay), or run the step in the sandbox without `image: {}`",
                    image.value
                )),
            );
            self.errors.push(e);
            return limits;
        }
        if let Some(p) = &raw.value.processes {
            match p.value.as_u64() {
                Some(n) if (1..=MAX_PROCESSES).contains(&n) => limits.processes = Some(n as u32),
                _ => {
                    let shown = match &p.value {
                        serde_json::Value::String(s) => s.clone(),
                        v => v.to_string(),
                    };
                    let e = self.at().error(ids.at(p), format!("bad limits.processes `{shown}`: not a whole number from 1 to {MAX_PROCESSES}"), "not a number of processes", Some("the most processes (threads included) the step may run at once, such as `processes: 512`".into()));
                    self.errors.push(e);
                }
            }
        }
        if let Some(m) = &raw.value.memory {
            let parsed = match &m.value {
                serde_json::Value::String(s) => {
                    size::parse_memory(s).map_err(|why| (s.clone(), why))
                }
                serde_json::Value::Number(n) => match n.as_u64() {
                    Some(b) if b >= size::MIN_MEMORY => Ok(b),
                    Some(_) => Err((n.to_string(), "less than 1 MiB")),
                    None => Err((n.to_string(), "not a whole number of bytes")),
                },
                v => Err((v.to_string(), "not a size")),
            };
            match parsed {
                Ok(bytes) => limits.memory = Some(bytes),
                Err((shown, why)) => {
                    let e = self.at().error(
                        ids.at(m),
                        format!("bad limits.memory `{shown}`: {why}"),
                        "not a memory size",
                        Some("the most memory the step may use, in bytes or with a binary unit: `512MiB` (or `512M`), `2GiB` (or `2G`); at least 1 MiB".into()),
                    );
                    self.errors.push(e);
                }
            }
        }
        if let Some(t) = &raw.value.time {
            let parsed = match &t.value {
                serde_json::Value::String(s) => {
                    duration::parse_time(s).map_err(|why| (s.clone(), why))
                }
                serde_json::Value::Number(n) => {
                    Err((n.to_string(), "no unit: write `90s`, `10m` or `2h`"))
                }
                v => Err((v.to_string(), "not a duration")),
            };
            match parsed {
                Ok(limit) => limits.time = Some(limit),
                Err((shown, why)) => {
                    let e = self.at().error(
                        ids.at(t),
                        format!("bad limits.time `{shown}`: {why}"),
                        "not a time limit",
                        Some("how long the step may run, a whole number of seconds, minutes or hours: `90s`, `10m`, `2h`".into()),
                    );
                    self.errors.push(e);
                }
            }
        }
        limits
    }

    /// `srcs:` patterns, interpolated and checked.
    fn sources(
        &mut self,
        raw: &[Spanned<String>],
        ids: &FileIds,
        vars: &Vars,
    ) -> Vec<Located<String>> {
        let mut srcs = Vec::new();
        for s in raw {
            let loc = ids.at(s);
            if let Some(t) = self.text(s, loc, vars, false, "srcs") {
                if let Err(msg) = globs::check_relative(&t.actual) {
                    let e = self.at().error(loc, format!("source pattern outside the workspace: {msg}"), "outside the workspace", Some("srcs are relative to the BUILD file's folder and cannot leave the workspace".into()));
                    self.errors.push(e);
                    continue;
                }
                srcs.push(Located {
                    value: t.actual,
                    loc,
                });
            }
        }
        srcs
    }

    /// `deps:` names, interpolated, each once.
    fn dependencies(
        &mut self,
        raw: &[Spanned<String>],
        ids: &FileIds,
        vars: &Vars,
    ) -> Vec<Located<String>> {
        let mut deps = Vec::new();
        for d in raw {
            let loc = ids.at(d);
            if let Some(t) = self.text(d, loc, vars, false, "deps") {
                if self.is_switched_off(&t.actual) {
                    continue;
                }
                if let Some(first) = deps.iter().find(|x: &&Located<String>| x.value == t.actual) {
                    let e = self
                        .at()
                        .error(
                            loc,
                            format!("dependency `{}` is listed twice", t.actual),
                            "listed again",
                            Some("a dependency is listed once".into()),
                        )
                        .also_at(&self.sources, first.loc, "first listed here");
                    self.errors.push(e);
                    continue;
                }
                deps.push(Located {
                    value: t.actual,
                    loc,
                });
            }
        }
        deps
    }

    /// `cmd:` or `argv:` (exactly one) of a `run` target or a stage step.
    fn program(
        &mut self,
        cmd: &Option<Spanned<String>>,
        argv: &Option<Spanned<Vec<Spanned<String>>>>,
        ids: &FileIds,
        vars: &Vars,
        name_loc: Loc,
        what: &str,
    ) -> Option<Program> {
        match (cmd, argv) {
            (Some(cmd), None) => self
                .text(cmd, ids.at(cmd), vars, true, "cmd")
                .map(Program::Shell),
            (None, Some(argv)) => {
                if argv.value.is_empty() {
                    let e = self.at().error(
                        ids.at(argv),
                        "`argv` is empty",
                        "empty",
                        Some(
                            "give the program and its arguments, such as `argv: [make, -C, src]`"
                                .into(),
                        ),
                    );
                    self.errors.push(e);
                    None
                } else {
                    let items: Vec<Option<Text>> = argv
                        .value
                        .iter()
                        .map(|a| self.text(a, ids.at(a), vars, true, "argv"))
                        .collect();
                    items
                        .into_iter()
                        .collect::<Option<Vec<_>>>()
                        .map(Program::Argv)
                }
            }
            (Some(_), Some(argv)) => {
                let e = self.at().error(
                    ids.at(argv),
                    "a `run` target takes `cmd` or `argv`, not both",
                    "second command",
                    Some("`cmd` runs through /bin/sh -c; `argv` runs a program directly".into()),
                );
                self.errors.push(e);
                None
            }
            (None, None) => {
                let e = self.at().error(
                    name_loc,
                    format!("{what} has no command"),
                    "no `cmd` or `argv`",
                    Some("a `run` target needs `cmd: \"...\"` or `argv: [...]`".into()),
                );
                self.errors.push(e);
                None
            }
        }
    }

    /// `env:` of a `run` target or a stage step; `reserved` names are refused.
    fn env(
        &mut self,
        raw_env: Option<Pairs<Spanned<String>>>,
        ids: &FileIds,
        vars: &Vars,
        reserved: &[&str],
    ) -> BTreeMap<String, Text> {
        let mut env = BTreeMap::new();
        let mut declared_at: BTreeMap<String, Loc> = BTreeMap::new();
        for (k, v) in raw_env.map(|e| e.0).unwrap_or_default() {
            let kloc = ids.at(&k);
            if !is_var_name(&k.value) {
                let e = self.at().error(
                    kloc,
                    format!("`{}` is not a valid environment variable name", k.value),
                    "invalid name",
                    None,
                );
                self.errors.push(e);
                continue;
            }
            if reserved.contains(&k.value.as_str()) {
                let e = self.at().error(
                    kloc,
                    format!("`{}` is set by Strata and cannot be declared", k.value),
                    "reserved",
                    Some(format!("reserved names: {}", reserved.join(", "))),
                );
                self.errors.push(e);
                continue;
            }
            if let Some(first) = declared_at.get(&k.value).copied() {
                let e = self
                    .at()
                    .error(
                        kloc,
                        format!("environment variable `{}` is declared twice", k.value),
                        "declared again",
                        Some(
                            "YAML keeps one value of a key: remove the one you do not mean".into(),
                        ),
                    )
                    .also_at(&self.sources, first, "first declared here");
                self.errors.push(e);
                continue;
            }
            declared_at.insert(k.value.clone(), kloc);
            if let Some(t) = self.text(&v, ids.at(&v), vars, true, "env") {
                env.insert(k.value, t);
            }
        }
        env
    }

    /// The rest of a built-in rule's target: its own fields, read by the rule.
    #[allow(clippy::too_many_arguments)]
    fn builtin_target(
        &mut self,
        raw: RawTarget,
        decl: &Rule,
        ids: &FileIds,
        name: Located<String>,
        dir: PathBuf,
        vars: &Vars,
        source_date_epoch: &Text,
        srcs: Vec<Located<String>>,
        mut deps: Vec<Located<String>>,
        errors_before: usize,
    ) -> Vec<Target> {
        let rule = decl.name;
        let rule_loc = ids.at(&raw.rule);
        let accepted = decl.field_names();
        let help = format!("`{rule}` takes: {}", accepted.join(", "));
        for (field, loc) in raw.run_fields() {
            let e = self.at().error(
                ids.loc(&loc),
                format!("field `{field}` does not apply to rule `{rule}`"),
                format!("not a field of `{rule}`"),
                Some(help.clone()),
            );
            self.errors.push(e);
        }
        let mut fields = serde_json::Map::new();
        let mut trees: BTreeMap<&str, Tree> = BTreeMap::new();
        for (field, value) in raw.generic_fields() {
            let mut tree = Tree::new(value, &|l| ids.loc(l));
            if !accepted.contains(&field) {
                let e = self.at().error(
                    tree.loc,
                    format!("field `{field}` does not apply to rule `{rule}`"),
                    format!("not a field of `{rule}`"),
                    Some(help.clone()),
                );
                self.errors.push(e);
                continue;
            }
            self.repeated_keys(&tree, field);
            self.interpolate_tree(&mut tree, vars);
            self.drop_switched_off(&mut tree);
            fields.insert(field.to_string(), tree.to_json());
            trees.insert(field, tree);
        }
        let field_locs: BTreeMap<&str, Loc> = trees.iter().map(|(f, t)| (*f, t.loc)).collect();
        // Where a parameter of the rule is written: the value at its path
        // (`components[4].chmod`), else the target's `rule:`.
        let place = |path: &[Seg]| match path.split_first() {
            Some((Seg::Key(field) | Seg::Name(field), rest)) => trees
                .get(field.as_str())
                .map_or(rule_loc, |t| t.locate(rest)),
            _ => rule_loc,
        };
        // `version: git-describe` (deb) makes the workspace's git state an
        // input: the description is resolved here, so it enters the key.
        if let Some(field) = decl.field_of_kind(FieldKind::GitDescribe)
            && fields.get(field.name).and_then(|v| v.as_str()) == Some("git-describe")
        {
            match git_describe(&self.root) {
                Ok(described) => {
                    fields.insert(field.name.into(), serde_json::Value::String(described));
                }
                Err(msg) => {
                    let loc = field_locs.get(field.name).copied().unwrap_or(rule_loc);
                    let e = self.at().error(
                        loc,
                        format!("cannot use `git describe`: {msg}"),
                        "here",
                        Some(
                            "the workspace must be a git checkout with at least one commit".into(),
                        ),
                    );
                    self.errors.push(e);
                }
            }
        }
        // `docker-compose` components (rootfs) bring hidden targets of
        // their own.
        let components = decl.field_of_kind(FieldKind::Components);
        let hidden = match components.and_then(|f| Some((f.name, trees.get(f.name)?))) {
            Some((field, tree)) => {
                self.compose_components(&mut fields, field, tree, &name.value, &dir, vars)
            }
            None => Vec::new(),
        };
        if self.errors.len() > errors_before {
            return Vec::new();
        }
        let parsed = match Builtin::parse(rule, fields) {
            Ok(b) => b,
            Err(e) => {
                let what = e
                    .field()
                    .map(|f| format!("field `{f}`: "))
                    .unwrap_or_default();
                let label = match e.path.len() {
                    0 | 1 => "here".to_string(),
                    _ => path_text(&e.path),
                };
                let help = e
                    .hint
                    .clone()
                    .or_else(|| unknown_field_hint(&e.message))
                    .unwrap_or(help);
                let err = self.at().error(
                    place(&e.path),
                    format!("{what}{}", e.message),
                    label,
                    Some(help),
                );
                self.errors.push(err);
                return Vec::new();
            }
        };
        // Targets a rule reads are dependencies even when `deps` omits
        // them (in name order), each at the first place that names it.
        let mut inputs: Vec<Located<String>> = Vec::new();
        for input in parsed.inputs() {
            if !inputs.iter().any(|i| i.value == input.value) {
                inputs.push(Located {
                    loc: place(&input.path),
                    value: input.value,
                });
            }
        }
        inputs.sort_by(|a, b| a.value.cmp(&b.value));
        for input in inputs {
            if !deps.iter().any(|d| d.value == input.value) {
                deps.push(input);
            }
        }
        // So are the source files it installs by name: `srcs:` need not
        // list them again (inputs::resolve stages them).
        let mut named_srcs: Vec<Located<String>> = Vec::new();
        for file in parsed.source_files() {
            let loc = place(&file.path);
            if globs::has_meta(&file.value) {
                let e = self.at().error(
                    loc,
                    format!("`{}` holds a wildcard character (`*`, `?`, `[` or `{{`)", file.value),
                    "not a plain path",
                    Some("a file a rule installs by name is staged as it is written; rename the file, or stage it through `srcs:` with a pattern".into()),
                );
                self.errors.push(e);
                continue;
            }
            if !named_srcs.iter().any(|s| s.value == file.value) {
                named_srcs.push(Located {
                    value: file.value,
                    loc,
                });
            }
        }
        if self.errors.len() > errors_before {
            return Vec::new();
        }
        if decl.image_output {
            self.platforms.image(&name.value, &field_locs);
        }
        let mut targets = hidden;
        // A rule a standard tool makes (`ext4`): the built-in rule lays the
        // input out as the hidden `<name>#layout`, and a `run` step with
        // the tools keyed makes the output under the target's own name.
        let layout = strata_rules::builtin::layout_target(&name.value);
        let tool_step = parsed.tool_step(&layout);
        if let Some(step) = &tool_step {
            for tool in step.tools {
                if let Err(msg) = crate::tools::resolve(tool) {
                    let e = self.at().error(
                        rule_loc,
                        format!("rule `{rule}` runs `{tool}`, which this machine lacks: {msg}"),
                        "needs a tool",
                        Some(format!(
                            "install the `{}` package (Debian: `apt-get install {}`)",
                            step.package, step.package
                        )),
                    );
                    self.errors.push(e);
                }
            }
            if self.errors.len() > errors_before {
                return Vec::new();
            }
        }
        targets.push(Target {
            name: if tool_step.is_some() {
                layout.clone()
            } else {
                name.value.clone()
            },
            loc: name.loc,
            dir: dir.clone(),
            srcs,
            named_srcs,
            deps,
            outs: Vec::new(),
            output_digest: None,
            hidden: tool_step.is_some(),
            work: Work::Builtin {
                rule: parsed,
                source_date_epoch: source_date_epoch.clone(),
            },
            run: None,
        });
        if let Some(step) = tool_step {
            let run = RunParams {
                program: Program::Shell(Text::plain(step.command)),
                env: BTreeMap::new(),
                outs: vec![step.output.clone()],
                network: false,
                local: false,
                fixed_output: None,
                source_date_epoch: source_date_epoch.clone(),
                container: None,
                tools: Some(step.tools.iter().map(|t| t.to_string()).collect()),
                limits: Limits::default(),
            };
            targets.push(Target {
                name: name.value,
                loc: name.loc,
                dir,
                srcs: Vec::new(),
                named_srcs: Vec::new(),
                deps: vec![Located {
                    value: layout,
                    loc: name.loc,
                }],
                outs: vec![Located {
                    value: step.output,
                    loc: name.loc,
                }],
                output_digest: None,
                hidden: false,
                run: Some(run.declared()),
                work: Work::Run(run.step()),
            });
        }
        targets
    }
}

/// `git describe --tags --dirty` of the workspace, as a Debian version
/// (`v1.2.0-3-gabc1234` gives `1.2.0-3-gabc1234`; a tag not starting with a
/// digit gets `0~`). Without any tag it is the abbreviated commit,
/// `0~g<commit>[-dirty]`, which sorts before every tagged version (a bare
/// commit that happens to start with a digit is never taken for one).
fn git_describe(root: &Path) -> Result<String, String> {
    let describe = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("describe")
            .args(args)
            .current_dir(root)
            .output()
            .map_err(|e| format!("cannot run git: {e}"))
    };
    let out = describe(&["--tags", "--dirty"])?;
    if out.status.success() {
        let described = String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches('v')
            .to_string();
        return Ok(if described.starts_with(|c: char| c.is_ascii_digit()) {
            described
        } else {
            format!("0~{described}")
        });
    }
    // No tag (or no repository: then this fails too, and says so).
    let out = describe(&["--always", "--dirty"])?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(format!(
        "0~g{}",
        String::from_utf8_lossy(&out.stdout).trim()
    ))
}

/// Every rule's name, sorted.
fn known_rules() -> Vec<&'static str> {
    let mut rules: Vec<&str> = table::RULES.iter().map(|r| r.name).collect();
    rules.sort();
    rules
}

/// The kernel's own bound on process ids (`PID_MAX_LIMIT`): a limit above
/// it is a typo.
const MAX_PROCESSES: u64 = 4_194_304;

fn is_target_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn check_out_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p == "/" {
        return Err("the path is empty".into());
    }
    if p.starts_with('/') {
        return Err("it is an absolute path".into());
    }
    for part in p.trim_end_matches('/').split('/') {
        match part {
            "" => return Err("it has an empty component (`//`)".into()),
            "." | ".." => return Err(format!("it contains `{part}`")),
            _ => {}
        }
    }
    Ok(())
}

fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
