//! What a key is made of, read back from the store, and how two keys
//! differ: the basis of `explain` and of `manifest diff`.
//!
//! Every action whose result is cached was stored with its command and
//! input root (see `KeyedAction::store`), so a key found in a build record
//! can be taken apart again: the rule and its properties, the arguments,
//! the environment (secrets appear as the hashes that were keyed), every
//! source with its digest, and every dependency's output digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_rules::layout;
use strata_store::tree::{Entry, list, walk};
use strata_store::{Digest, Store, reapi};

/// The parts of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The versioned salt (`strata/run/v1`, ...).
    pub salt: String,
    /// The action's platform properties (`strata.rule`, `strata.network`, ...)
    /// and the command's (`image`, `user`, `cache:<name>`).
    pub properties: BTreeMap<String, String>,
    pub arguments: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Source path (relative to the target's folder) -> digest, with ` (x)`
    /// for an executable.
    pub sources: BTreeMap<String, String>,
    /// Dependency name -> output tree digest.
    pub deps: BTreeMap<String, String>,
}

impl KeyInfo {
    /// How a container step's programs ran, read from its key: the platform
    /// and, under emulation, the emulator (`linux/arm64, emulated by
    /// /usr/libexec/qemu-binfmt/aarch64-binfmt-P (flags POF, sha256:...)`),
    /// else `natively`. `None` for work that runs no image's programs.
    pub fn execution(&self) -> Option<String> {
        let platform = self.properties.get("platform")?;
        if self.properties.get("strata.sandbox").map(String::as_str) != Some("docker") {
            return None;
        }
        Some(match self.properties.get("emulator") {
            Some(interpreter) => format!(
                "{platform}, emulated by {interpreter} (flags {}, {})",
                self.properties
                    .get("emulator.flags")
                    .map(String::as_str)
                    .unwrap_or(""),
                self.properties
                    .get("emulator.sha256")
                    .map(String::as_str)
                    .unwrap_or("")
            ),
            None => format!("{platform}, natively"),
        })
    }
}

/// One difference between two keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Salt {
        old: String,
        new: String,
    },
    Property {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    Arguments {
        old: Vec<String>,
        new: Vec<String>,
    },
    Env {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    Source {
        path: String,
        old: Option<String>,
        new: Option<String>,
    },
    Dep {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
}

fn short(d: &str) -> String {
    // `blake3:0123abcd...` -> `0123abcd..`
    let hex = d.rsplit(':').next().unwrap_or(d);
    let (hex, suffix) = hex.split_once(' ').unwrap_or((hex, ""));
    let cut: String = hex.chars().take(10).collect();
    if suffix.is_empty() {
        format!("{cut}..")
    } else {
        format!("{cut}.. {suffix}")
    }
}

fn either(old: &Option<String>, new: &Option<String>, f: impl Fn(&str) -> String) -> String {
    match (old, new) {
        (Some(o), Some(n)) => format!("{} -> {}", f(o), f(n)),
        (None, Some(n)) => format!("added ({})", f(n)),
        (Some(o), None) => format!("removed (was {})", f(o)),
        (None, None) => "unchanged".into(),
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quote = |s: &str| format!("{s:?}");
        match self {
            Change::Salt { old, new } => write!(f, "rule version {old} -> {new}"),
            Change::Property { name, old, new } => {
                write!(f, "{name} {}", either(old, new, quote))
            }
            Change::Arguments { old, new } => {
                write!(
                    f,
                    "command {} -> {}",
                    quote(&old.join(" ")),
                    quote(&new.join(" "))
                )
            }
            Change::Env { name, old, new } => write!(f, "env `{name}` {}", either(old, new, quote)),
            Change::Source { path, old, new } => {
                write!(f, "source `{path}` {}", either(old, new, short))
            }
            Change::Dep { name, old, new } => {
                write!(f, "dependency `{name}` output {}", either(old, new, short))
            }
        }
    }
}

/// Reads the parts of `key` from the store; `None` when the action is not
/// there (never stored, or collected).
pub fn read(store: &Store, key: &Digest) -> Option<KeyInfo> {
    let cas = store.cas();
    let function = store.function();
    let action: reapi::Action = cas.get_message(key, "an action").ok()?;
    let mut info = KeyInfo {
        salt: String::from_utf8_lossy(&action.salt).into_owned(),
        ..KeyInfo::default()
    };
    for p in action.platform.iter().flat_map(|p| &p.properties) {
        info.properties.insert(p.name.clone(), p.value.clone());
    }
    if let Some(d) = action.command_digest.as_ref().and_then(Digest::from_proto) {
        let command: reapi::Command = cas.get_message(&d, "a command").ok()?;
        info.arguments = command.arguments;
        for v in command.environment_variables {
            info.env.insert(v.name, v.value);
        }
        for p in command.platform.iter().flat_map(|p| &p.properties) {
            info.properties.insert(p.name.clone(), p.value.clone());
        }
    }
    if let Some(root) = action
        .input_root_digest
        .as_ref()
        .and_then(Digest::from_proto)
    {
        // Sources are walked; dependencies only named, so a key whose
        // dependency output is not stored (`explain` before it was ever
        // built) still shows its parts.
        for (top, entry) in list(cas, &root).ok()? {
            let Entry::Dir { digest: dir, .. } = entry else {
                continue;
            };
            if top == layout::WORK {
                for (rel, entry) in walk(cas, &dir).ok()? {
                    if let Entry::File {
                        digest, executable, ..
                    } = entry
                    {
                        let mut d = function.qualified(&digest);
                        if executable {
                            d.push_str(" (x)");
                        }
                        info.sources.insert(rel, d);
                    }
                }
            } else if top == layout::DEPS {
                // The record itself: listing would read each dependency's.
                let deps: reapi::Directory = cas.get_message(&dir, "a directory").ok()?;
                for d in deps.directories {
                    if let Some(digest) = d.digest.as_ref().and_then(Digest::from_proto) {
                        info.deps.insert(d.name, function.qualified(&digest));
                    }
                }
            }
        }
    }
    Some(info)
}

fn map_changes(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    make: impl Fn(String, Option<String>, Option<String>) -> Change,
) -> Vec<Change> {
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| old.get(*n) != new.get(*n))
        .map(|n| make(n.clone(), old.get(n).cloned(), new.get(n).cloned()))
        .collect()
}

/// What differs from `old` to `new`, in a fixed order: rule, properties,
/// command, environment, sources, dependencies.
pub fn diff(old: &KeyInfo, new: &KeyInfo) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.salt != new.salt {
        changes.push(Change::Salt {
            old: old.salt.clone(),
            new: new.salt.clone(),
        });
    }
    changes.extend(map_changes(
        &old.properties,
        &new.properties,
        |name, old, new| Change::Property { name, old, new },
    ));
    if old.arguments != new.arguments {
        changes.push(Change::Arguments {
            old: old.arguments.clone(),
            new: new.arguments.clone(),
        });
    }
    changes.extend(map_changes(&old.env, &new.env, |name, old, new| {
        Change::Env { name, old, new }
    }));
    changes.extend(map_changes(&old.sources, &new.sources, |path, old, new| {
        Change::Source { path, old, new }
    }));
    changes.extend(map_changes(&old.deps, &new.deps, |name, old, new| {
        Change::Dep { name, old, new }
    }));
    changes
}
