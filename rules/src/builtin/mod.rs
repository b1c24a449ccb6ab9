//! Built-in rules: operations that run in-process on trees in the store.
//!
//! A built-in rule reads its inputs from the action's input root (sources
//! under `work/`, dependency outputs under `deps/<name>/`) straight from the
//! store and writes its output tree back into it. It runs no process and
//! writes no file outside the store, and its output depends only on its
//! parameters, its inputs and `SOURCE_DATE_EPOCH`: byte-identical on any
//! machine, path, umask, TZ and locale.
//!
//! Each rule has a `Params` type read from the target's fields (as a JSON
//! object, so this crate knows nothing of YAML) and a `run` function.

pub mod archive;
pub mod checksums;
pub mod deb;
pub mod disk;
pub mod ext4;
pub mod extract;
pub mod image;
pub mod initramfs;
pub mod iso;
pub mod makeself;
pub mod rootfs;
pub mod sbom;
pub mod squashfs;
#[cfg(test)]
pub(crate) mod testkit;
pub mod vfat;
mod volume;

pub use volume::Size;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_formats::FormatError;
use strata_formats::compress;
use strata_store::tree::{Entry, walk};
use strata_store::{Cas, Digest, StoreError, reapi};

/// Version of the key encoding of built-in rules; bump it when an output
/// format changes, so old cache entries are not reused.
const BUILTIN_SALT: &[u8] = b"strata/builtin/v1";

/// A built-in rule with its parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum Builtin {
    Archive(archive::Params),
    Checksums(checksums::Params),
    Deb(deb::Params),
    Disk(disk::Params),
    Ext4(ext4::Params),
    Extract(extract::Params),
    Image(image::Params),
    Initramfs(initramfs::Params),
    Iso(iso::Params),
    Makeself(makeself::Params),
    Rootfs(rootfs::Params),
    Sbom(sbom::Params),
    Squashfs(squashfs::Params),
    Vfat(vfat::Params),
}

/// Applies one expression to the parameters of whichever rule `$b` is.
macro_rules! each_rule {
    ($b:expr, $p:ident => $e:expr) => {
        match $b {
            Builtin::Archive($p) => $e,
            Builtin::Checksums($p) => $e,
            Builtin::Deb($p) => $e,
            Builtin::Disk($p) => $e,
            Builtin::Ext4($p) => $e,
            Builtin::Extract($p) => $e,
            Builtin::Image($p) => $e,
            Builtin::Initramfs($p) => $e,
            Builtin::Iso($p) => $e,
            Builtin::Makeself($p) => $e,
            Builtin::Rootfs($p) => $e,
            Builtin::Sbom($p) => $e,
            Builtin::Squashfs($p) => $e,
            Builtin::Vfat($p) => $e,
        }
    };
}

/// One step from a target's field down to a value inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// The value of a mapping's key (`chmod` in `{chmod: "0644"}`).
    Key(String),
    /// A mapping's key itself, when the key is at fault (an unknown field).
    Name(String),
    /// An item of a list.
    Index(usize),
}

/// Where a parameter is: the target's field first (`components`), then
/// the way down to the value at fault (`[4]`, `chmod`).
pub type ParamPath = Vec<Seg>;

/// `components[4].chmod`, as messages write a place inside a field.
pub fn path_text(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) | Seg::Name(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) | Seg::Name(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A parameter error with the path of the value at fault, so the loader
/// can point at that value wherever it is inside the field.
#[derive(Debug, PartialEq, Eq)]
pub struct ParamError {
    pub path: ParamPath,
    pub message: String,
    /// What to write instead, when the rule knows better than a list of
    /// its fields.
    pub hint: Option<String>,
}

impl ParamError {
    /// An error in the target's field `field` as a whole.
    pub fn new(field: &str, message: impl Into<String>) -> ParamError {
        ParamError {
            path: vec![Seg::Key(field.into())],
            message: message.into(),
            hint: None,
        }
    }

    /// An error at `path` below the target.
    pub fn at(path: ParamPath, message: impl Into<String>) -> ParamError {
        ParamError {
            path,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> ParamError {
        self.hint = Some(hint.into());
        self
    }

    /// The target's field the error is in, if any.
    pub fn field(&self) -> Option<&str> {
        match self.path.first() {
            Some(Seg::Key(k) | Seg::Name(k)) => Some(k),
            _ => None,
        }
    }
}

/// A file or target a rule reads, and where its parameters name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named<T> {
    pub value: T,
    pub path: ParamPath,
}

/// `path` as a list of segments: `key("layers").index(2).key("from")`.
pub(crate) fn key(k: &str) -> ParamPath {
    vec![Seg::Key(k.into())]
}

pub(crate) trait PathExt {
    fn index(self, i: usize) -> ParamPath;
    fn key(self, k: &str) -> ParamPath;
    fn name(self, k: &str) -> ParamPath;
}

impl PathExt for ParamPath {
    fn index(mut self, i: usize) -> ParamPath {
        self.push(Seg::Index(i));
        self
    }
    fn key(mut self, k: &str) -> ParamPath {
        self.push(Seg::Key(k.into()));
        self
    }
    fn name(mut self, k: &str) -> ParamPath {
        self.push(Seg::Name(k.into()));
        self
    }
}

/// Checks an output file name given in `field`: a single path component
/// (no `/`, NUL, newline or backslash, which `sha256sum` would escape).
pub(crate) fn check_file_name(field: &str, name: &str) -> Result<(), ParamError> {
    if name.is_empty() || name.contains(['/', '\0', '\n', '\\']) || name == "." || name == ".." {
        return Err(ParamError::new(
            field,
            format!("`{name}` is not a file name"),
        ));
    }
    Ok(())
}

/// Checks a compression level (the `level` field) against its codec.
pub(crate) fn check_level(
    compression: compress::Compression,
    level: Option<i32>,
) -> Result<(), ParamError> {
    let range = compression.levels();
    match level {
        Some(l) if !range.contains(&l) => Err(ParamError::new(
            "level",
            format!(
                "level {l} is out of range for {compression:?} ({}..={})",
                range.start(),
                range.end()
            ),
        )),
        _ => Ok(()),
    }
}

fn from_fields<T: serde::de::DeserializeOwned>(
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<T, ParamError> {
    located(serde_json::Value::Object(fields))
}

/// Reads `value` as a `T`, an error naming the path to the value at fault.
pub(crate) fn located<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, ParamError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path: ParamPath = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                _ => None,
            })
            .collect();
        let message = e.inner().to_string();
        // An unknown field is reported at the mapping holding it; point at
        // the field's own name instead.
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            if path.last() == Some(&Seg::Key(name.to_string())) {
                path.pop();
            }
            path.push(Seg::Name(name.to_string()));
        }
        let hint = message.contains("is not an octal mode").then(|| {
            "a mode is octal digits, quoted or not: `\"0644\"`, `0755`, `\"1777\"`".to_string()
        });
        ParamError {
            path,
            message,
            hint,
        }
    })
}

impl Builtin {
    /// The one file the rule's output tree holds, for rules that write a
    /// single file (`archive`, `deb`, `initramfs`, `makeself`, the image rules); `None` for
    /// the others, whose trees depend on their inputs.
    pub fn single_output_file(&self) -> Option<String> {
        match self {
            Builtin::Archive(p) => Some(p.file_name()),
            Builtin::Deb(p) => p.file_name().ok(),
            Builtin::Initramfs(p) => Some(p.file_name()),
            Builtin::Makeself(p) => Some(p.file_name()),
            Builtin::Disk(p) => Some(p.file_name()),
            Builtin::Squashfs(p) => Some(p.file_name()),
            Builtin::Vfat(p) => Some(p.file_name()),
            _ => None,
        }
    }

    /// The `run` step that finishes a rule made by a standard tool (`ext4`),
    /// reading what this rule lays out: the loader makes the built-in rule
    /// a hidden target named `layout` and this step the target itself, so
    /// the tools run in the sandbox and their versions enter its key
    /// (`tools:`). `None` for rules that make their output alone.
    pub fn tool_step(&self, layout: &str) -> Option<ToolStep> {
        match self {
            Builtin::Ext4(p) => Some(ToolStep {
                tools: ext4::TOOLS,
                package: "e2fsprogs",
                command: layout_command(layout),
                output: p.file_name(),
            }),
            Builtin::Iso(p) => Some(ToolStep {
                tools: iso::TOOLS,
                package: "xorriso",
                command: layout_command(layout),
                output: p.file_name(),
            }),
            _ => None,
        }
    }

    /// Reads the parameters of `rule` from the target's own fields.
    pub fn parse(
        rule: &str,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Builtin, ParamError> {
        let b = match crate::table::rule(rule).map(|r| r.parse) {
            Some(crate::table::Parse::Builtin(parse)) => parse(fields)?,
            _ => {
                return Err(ParamError::at(
                    Vec::new(),
                    format!("unknown built-in rule `{rule}`"),
                ));
            }
        };
        b.validate()?;
        Ok(b)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Builtin::Archive(_) => "archive",
            Builtin::Checksums(_) => "checksums",
            Builtin::Deb(_) => "deb",
            Builtin::Disk(_) => "disk",
            Builtin::Ext4(_) => "ext4",
            Builtin::Extract(_) => "extract",
            Builtin::Image(_) => "image",
            Builtin::Initramfs(_) => "initramfs",
            Builtin::Iso(_) => "iso",
            Builtin::Makeself(_) => "makeself",
            Builtin::Rootfs(_) => "rootfs",
            Builtin::Sbom(_) => "sbom",
            Builtin::Squashfs(_) => "squashfs",
            Builtin::Vfat(_) => "vfat",
        }
    }

    fn validate(&self) -> Result<(), ParamError> {
        each_rule!(self, p => p.validate())
    }

    /// Targets whose outputs this rule reads, each with where its
    /// parameters name it (once per place); the engine adds them to `deps`.
    pub fn inputs(&self) -> Vec<Named<String>> {
        each_rule!(self, p => p.inputs())
    }

    /// Files among the target's sources that the rule installs by name
    /// (a component's `source:`, a maintainer script), with where they are
    /// named: the engine adds them to the target's sources.
    pub fn source_files(&self) -> Vec<Named<String>> {
        match self {
            Builtin::Rootfs(p) => p.source_files(),
            Builtin::Deb(p) => p.source_files(),
            _ => Vec::new(),
        }
    }

    /// Whether the rule records its dependencies' keys in its output (so
    /// those keys must enter its own key).
    pub fn uses_dep_keys(&self) -> bool {
        matches!(self, Builtin::Checksums(_))
    }

    /// The canonical form of the parameters that enters the key.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("parameters serialize")
    }

    /// The command that stands for this rule in its key and in the store:
    /// the rule, its canonical parameters, and the SOURCE_DATE_EPOCH (keyed
    /// form) it stamps into outputs.
    pub fn keyed_command(
        &self,
        source_date_epoch_keyed: &str,
        dep_keys: &BTreeMap<String, Digest>,
    ) -> reapi::Command {
        let mut arguments = vec![
            "strata-builtin".into(),
            self.name().into(),
            self.canonical(),
        ];
        if self.uses_dep_keys() {
            arguments.extend(
                dep_keys
                    .iter()
                    .map(|(name, key)| format!("dep-key:{name}={}", key.hex())),
            );
        }
        reapi::Command {
            arguments,
            environment_variables: vec![reapi::EnvironmentVariable {
                name: "SOURCE_DATE_EPOCH".into(),
                value: source_date_epoch_keyed.into(),
            }],
            platform: None,
            working_directory: String::new(),
            output_paths: Vec::new(),
        }
    }

    /// The action whose digest is the key: command and input root, under a
    /// versioned salt shared by all built-in rules.
    pub fn action(&self, command_digest: Digest, input_root: Digest) -> reapi::Action {
        reapi::Action {
            command_digest: Some(command_digest.to_proto()),
            input_root_digest: Some(input_root.to_proto()),
            salt: BUILTIN_SALT.to_vec(),
            platform: Some(reapi::Platform {
                properties: vec![reapi::Property {
                    name: "strata.rule".into(),
                    value: self.name().into(),
                }],
            }),
            ..Default::default()
        }
    }

    /// Runs the rule; returns the output tree.
    pub fn run(&self, ctx: &Ctx) -> Result<Digest, BuiltinError> {
        match self {
            Builtin::Archive(p) => archive::run(p, ctx),
            Builtin::Checksums(p) => checksums::run(p, ctx),
            Builtin::Deb(p) => deb::run(p, ctx),
            Builtin::Disk(p) => disk::run(p, ctx),
            Builtin::Ext4(p) => ext4::run(p, ctx),
            Builtin::Extract(p) => extract::run(p, ctx),
            Builtin::Image(p) => image::run(p, ctx),
            Builtin::Initramfs(p) => initramfs::run(p, ctx),
            Builtin::Iso(p) => iso::run(p, ctx),
            Builtin::Makeself(p) => makeself::run(p, ctx),
            Builtin::Rootfs(p) => rootfs::run(p, ctx),
            Builtin::Sbom(p) => sbom::run(p, ctx),
            Builtin::Squashfs(p) => squashfs::run(p, ctx),
            Builtin::Vfat(p) => vfat::run(p, ctx),
        }
    }
}

/// The hidden target that lays out the input of `target`, a rule made by a
/// standard tool (see [`Builtin::tool_step`]): `<target>#layout`.
pub fn layout_target(target: &str) -> String {
    format!("{target}#layout")
}

/// The command of the `run` step that makes a tool-made rule's output
/// from what its layout wrote, found at `$DEPS/<layout>` (every such
/// layout writes a `make.sh`).
fn layout_command(layout: &str) -> String {
    format!("sh \"$DEPS/{layout}/make.sh\"")
}

/// The `run` step of a rule made by a standard tool; see
/// [`Builtin::tool_step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolStep {
    /// The programs it runs (`tools:`).
    pub tools: &'static [&'static str],
    /// The Debian package that has them, for the hint when one is missing.
    pub package: &'static str,
    /// Its shell command.
    pub command: String,
    /// The one file it makes.
    pub output: String,
}

/// Where a rule reads a tree from: the target's sources, or a dependency's
/// output, optionally a path inside either.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct From {
    /// `None` for the sources (`srcs`), else a target name.
    pub target: Option<String>,
    /// A path inside that tree (`target:path`), "" for all of it.
    pub path: String,
}

impl TryFrom<String> for From {
    type Error = String;
    fn try_from(s: String) -> Result<From, String> {
        let (head, path) = s.split_once(':').unwrap_or((&s, ""));
        let path = path.trim_matches('/').to_string();
        if path.split('/').any(|p| p == "..") {
            return Err(format!("`{s}`: a path inside a tree cannot contain `..`"));
        }
        match head {
            "srcs" => Ok(From { target: None, path }),
            t if !t.is_empty()
                && t.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                }) =>
            {
                Ok(From {
                    target: Some(t.to_string()),
                    path,
                })
            }
            _ => Err(format!(
                "`{s}` is neither `srcs` nor a target name (optionally followed by `:path`)"
            )),
        }
    }
}

impl std::convert::From<From> for String {
    fn from(f: From) -> String {
        let head = f.target.unwrap_or_else(|| "srcs".into());
        if f.path.is_empty() {
            head
        } else {
            format!("{head}:{}", f.path)
        }
    }
}

impl From {
    pub fn targets(&self) -> Vec<String> {
        self.target.iter().cloned().collect()
    }

    /// The target this names, if any, with where it is named.
    pub(crate) fn named(&self, path: ParamPath) -> Vec<Named<String>> {
        self.target
            .iter()
            .map(|t| Named {
                value: t.clone(),
                path: path.clone(),
            })
            .collect()
    }

    /// The path of this source inside the action's input root.
    fn root_path(&self) -> String {
        let base = match &self.target {
            None => "work".to_string(),
            Some(t) => format!("deps/{t}"),
        };
        if self.path.is_empty() {
            base
        } else {
            format!("{base}/{}", self.path)
        }
    }
}

/// A file or folder named by a component: a path among the target's
/// sources (`files/motd`), or `target:path` inside a dependency's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Source(pub From);

impl TryFrom<String> for Source {
    type Error = String;
    fn try_from(s: String) -> Result<Source, String> {
        if s.contains(':') {
            return From::try_from(s).map(Source);
        }
        let path = s.trim_matches('/').to_string();
        if path.is_empty() || path.split('/').any(|p| p == "..") {
            return Err(format!("`{s}` is not a path inside the sources"));
        }
        Ok(Source(From { target: None, path }))
    }
}

impl std::convert::From<Source> for String {
    fn from(s: Source) -> String {
        match &s.0.target {
            None => s.0.path.clone(),
            Some(_) => String::from(s.0),
        }
    }
}

/// Permission bits written as in chmod: `"0644"`, `"644"`, `"4755"` or an
/// integer read as octal digits (`644`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "String")]
pub struct Mode(pub u32);

impl TryFrom<serde_json::Value> for Mode {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Mode, String> {
        let s = match &v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(format!("{v} is not a mode such as \"0644\"")),
        };
        let bits = u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .map_err(|_| format!("`{s}` is not an octal mode such as \"0644\""))?;
        if bits > 0o7777 {
            return Err(format!("`{s}` has bits beyond 07777"));
        }
        Ok(Mode(bits))
    }
}

impl std::convert::From<Mode> for String {
    fn from(m: Mode) -> String {
        format!("{:04o}", m.0)
    }
}

/// Ownership written as in chown: `"root:root"`, `"0:0"`, `"1000:1000"`.
/// `root` is the only name understood: Strata does not read the build
/// machine's user database, so ids elsewhere are numeric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl TryFrom<String> for Owner {
    type Error = String;
    fn try_from(s: String) -> Result<Owner, String> {
        let id = |x: &str| -> Result<u32, String> {
            match x {
                "root" => Ok(0),
                n => n.parse().map_err(|_| format!("`{n}` is neither `root` nor a numeric id (user names other than root are not looked up)")),
            }
        };
        let (u, g) = s.split_once(':').unwrap_or((&s, &s));
        Ok(Owner {
            uid: id(u)?,
            gid: id(g)?,
        })
    }
}

impl std::convert::From<Owner> for String {
    fn from(o: Owner) -> String {
        format!("{}:{}", o.uid, o.gid)
    }
}

/// What a built-in rule may use while running.
pub struct Ctx<'a> {
    pub cas: &'a Cas,
    /// The action's input root: `work/` (sources) and `deps/<name>/`.
    pub input_root: Digest,
    pub source_date_epoch: u64,
    /// Keys of the dependencies, for rules that record provenance.
    pub dep_keys: BTreeMap<String, Digest>,
}

impl Ctx<'_> {
    /// The entry at `from` in the input root.
    pub fn entry(&self, from: &From) -> Result<Entry, BuiltinError> {
        let wanted = from.root_path();
        let mut digest = self.input_root;
        let mut entry = Entry::Dir { digest, meta: None };
        for part in wanted.split('/') {
            let Entry::Dir { digest: d, .. } = entry else {
                return Err(BuiltinError::Input {
                    what: String::from(from.clone()),
                    reason: "a path component is not a folder".into(),
                });
            };
            digest = d;
            entry = strata_store::tree::list(self.cas, &digest)?
                .into_iter()
                .find_map(|(name, e)| (name == part).then_some(e))
                .ok_or_else(|| BuiltinError::Input {
                    what: String::from(from.clone()),
                    reason: match &from.target {
                        None => "is not among the target's sources (add it to `srcs:`)".to_string(),
                        Some(t) => {
                            format!("does not exist: `{part}` is not in the output of `{t}`")
                        }
                    },
                })?;
        }
        Ok(entry)
    }

    /// The folder at `from`, as a tree digest.
    pub fn tree(&self, from: &From) -> Result<Digest, BuiltinError> {
        match self.entry(from)? {
            Entry::Dir { digest, .. } => Ok(digest),
            _ => Err(BuiltinError::Input {
                what: String::from(from.clone()),
                reason: "is not a folder".into(),
            }),
        }
    }

    /// The file at `from`; if `from` is a folder holding exactly one file
    /// (anywhere below it), that file.
    pub fn file(&self, from: &From) -> Result<(String, Digest), BuiltinError> {
        match self.entry(from)? {
            Entry::File { digest, .. } => Ok((
                from.path.rsplit('/').next().unwrap_or("").to_string(),
                digest,
            )),
            Entry::Dir { digest, .. } => {
                let files: Vec<(String, Digest)> = walk(self.cas, &digest)?
                    .into_iter()
                    .filter_map(|(p, e)| match e {
                        Entry::File { digest, .. } => Some((p, digest)),
                        _ => None,
                    })
                    .collect();
                match files.as_slice() {
                    [(p, d)] => Ok((p.rsplit('/').next().unwrap_or(p).to_string(), *d)),
                    _ => Err(BuiltinError::Input {
                        what: String::from(from.clone()),
                        reason: format!("holds {} files; name one with `target:path`", files.len()),
                    }),
                }
            }
            _ => Err(BuiltinError::Input {
                what: String::from(from.clone()),
                reason: "is not a file".into(),
            }),
        }
    }
}

/// Why a built-in rule failed.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    #[error("input `{what}` {reason}")]
    Input { what: String, reason: String },
    /// An archive entry (or similar) refused for safety, naming it.
    #[error("refused entry `{entry}`: {reason}")]
    Refused { entry: String, reason: String },
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A format's error is the rule's, with the same message.
impl std::convert::From<FormatError> for BuiltinError {
    fn from(e: FormatError) -> BuiltinError {
        match e {
            FormatError::Refused { entry, reason } => BuiltinError::Refused { entry, reason },
            FormatError::Format(m) => BuiltinError::Format(m),
            FormatError::Store(e) => BuiltinError::Store(e),
            FormatError::Io(e) => BuiltinError::Io(e),
        }
    }
}
