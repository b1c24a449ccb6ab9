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
pub mod compress;
pub mod tarball;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_store::tree::{Entry, walk};
use strata_store::{Cas, Digest, StoreError, reapi};

/// Version of the key encoding of built-in rules; bump it when an output
/// format changes, so old cache entries are not reused.
const BUILTIN_SALT: &[u8] = b"strata/builtin/v1";

/// The built-in rule kinds and the target fields each accepts (besides
/// `rule`, `srcs` and `deps`).
pub const RULES: &[(&str, &[&str])] = &[("archive", archive::FIELDS)];

/// Every field name any built-in rule accepts.
pub fn all_fields() -> impl Iterator<Item = &'static str> {
    RULES.iter().flat_map(|(_, f)| f.iter().copied())
}

/// A built-in rule with its parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum Builtin {
    Archive(archive::Params),
}

/// A parameter error, naming the field (its first path segment) so the
/// loader can point at it.
#[derive(Debug, PartialEq, Eq)]
pub struct ParamError {
    pub field: Option<String>,
    pub message: String,
}

fn from_fields<T: serde::de::DeserializeOwned>(
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<T, ParamError> {
    let value = serde_json::Value::Object(fields);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().iter().find_map(|seg| match seg {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
        let message = e.inner().to_string();
        // An unknown field is reported at the map itself; name it instead.
        let field = field.or_else(|| {
            message
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                .map(str::to_string)
        });
        ParamError { field, message }
    })
}

impl Builtin {
    /// Reads the parameters of `rule` from the target's own fields.
    pub fn parse(
        rule: &str,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Builtin, ParamError> {
        let b = match rule {
            "archive" => Builtin::Archive(from_fields(fields)?),
            other => {
                return Err(ParamError {
                    field: None,
                    message: format!("unknown built-in rule `{other}`"),
                });
            }
        };
        b.validate()?;
        Ok(b)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Builtin::Archive(_) => "archive",
        }
    }

    fn validate(&self) -> Result<(), ParamError> {
        match self {
            Builtin::Archive(p) => p.validate(),
        }
    }

    /// Targets whose outputs this rule reads; the engine adds them to `deps`.
    pub fn inputs(&self) -> Vec<String> {
        match self {
            Builtin::Archive(p) => p.from.targets(),
        }
    }

    /// The canonical form of the parameters that enters the key.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("parameters serialize")
    }

    /// The command that stands for this rule in its key and in the store:
    /// the rule, its canonical parameters, and the SOURCE_DATE_EPOCH (keyed
    /// form) it stamps into outputs.
    pub fn keyed_command(&self, source_date_epoch_keyed: &str) -> reapi::Command {
        reapi::Command {
            arguments: vec![
                "strata-builtin".into(),
                self.name().into(),
                self.canonical(),
            ],
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
        }
    }
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
            let dir = strata_store::tree::read_directory(self.cas, &digest)?;
            entry = child(self.cas, &dir, part)?.ok_or_else(|| BuiltinError::Input {
                what: String::from(from.clone()),
                reason: format!("`{part}` does not exist"),
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

fn child(
    cas: &Cas,
    dir: &strata_store::reapi::Directory,
    name: &str,
) -> Result<Option<Entry>, BuiltinError> {
    if let Some(f) = dir.files.iter().find(|f| f.name == name) {
        let digest = Digest::from_proto(f.digest.as_ref().expect("validated")).expect("validated");
        return Ok(Some(Entry::File {
            digest,
            executable: f.is_executable,
            meta: None,
        }));
    }
    if let Some(d) = dir.directories.iter().find(|d| d.name == name) {
        let digest = Digest::from_proto(d.digest.as_ref().expect("validated")).expect("validated");
        let _ = cas;
        return Ok(Some(Entry::Dir { digest, meta: None }));
    }
    if let Some(s) = dir.symlinks.iter().find(|s| s.name == name) {
        return Ok(Some(Entry::Symlink {
            target: s.target.clone(),
            meta: None,
        }));
    }
    Ok(None)
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
