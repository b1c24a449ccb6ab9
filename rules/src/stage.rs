//! The `stage` rule: Docker's multi-stage semantics with content keys.
//!
//! A stage starts `from:` a tree or an image and applies an ordered list of
//! steps. Each step is its own node with its own key, like a Docker layer:
//! its input is the parent's *output* tree, so a step that reproduces
//! byte-identical results leaves every later step's key unchanged (early
//! cutoff), where Docker's layer chain re-runs them. A step's output is the
//! whole root file system after it; the layer between two steps (with
//! whiteouts for deletions) is derived from the two trees when an image is
//! written.

use std::collections::BTreeMap;

use serde::Serialize;
use strata_store::tree::{EditError, Entry, Meta, Node, TreeBuilder};
use strata_store::{Digest, reapi};

use crate::Text;
use crate::builtin::{BuiltinError, Ctx, Mode, Owner, Source};
use crate::platform::RunsOn;
use crate::run::Program;
use crate::table::{Field, Parse, Rule};

/// `stage`: steps in containers on an image, each a target.
pub const RULE: Rule = Rule {
    name: "stage",
    doc: "runs steps on an image's tree in containers, each step's tree a layer",
    fields: &[
        Field::typed("from", "the image or stage the first step starts on"),
        Field::typed("platform", "the platform the steps run as"),
        Field::typed(
            "steps",
            "commands (`cmd`, `argv`) and `copy` steps, in order",
        ),
    ],
    parse: Parse::Stage,
    image_output: false,
    contains_inputs: false,
};

const STAGE_SALT: &[u8] = b"strata/stage/v1";

/// The PATH of a step inside a stage's root file system (Docker's default).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a step's sources and dependencies are mounted, read-only.
pub const SRCS_MOUNT: &str = "/strata/work";
pub const DEPS_MOUNT: &str = "/strata/deps";

/// One step of a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageStep {
    /// A command run in a container whose root file system is the parent.
    Run(RunInStage),
    /// A file or folder placed into the tree, in-process (Docker's `COPY`):
    /// works in images without a shell.
    Copy(CopyInto),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInStage {
    pub program: Program,
    pub env: BTreeMap<String, Text>,
    pub network: bool,
    pub user: Option<String>,
    pub workdir: String,
    pub caches: BTreeMap<String, String>,
    pub source_date_epoch: Text,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CopyInto {
    pub from: Source,
    /// Absolute destination; a trailing `/` places the source inside that
    /// folder under its own name.
    pub to: String,
    pub mode: Option<Mode>,
    pub owner: Option<Owner>,
}

impl RunInStage {
    /// Arguments as the step receives them and as they are keyed.
    pub fn argv(&self) -> (Vec<String>, Vec<String>) {
        self.program.argv()
    }

    /// Secret values the step receives, longest first: what its logs are
    /// masked with.
    pub fn secrets(&self) -> Vec<String> {
        crate::text::secrets_of(self.program.texts().chain(self.env.values()))
    }

    /// The environment, fixed variables first (declarations cannot override
    /// them: the loader refuses that).
    pub fn env(&self) -> BTreeMap<String, Text> {
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("PATH", PATH),
            ("LANG", "C.UTF-8"),
            ("TZ", "UTC"),
            ("DEPS", DEPS_MOUNT),
        ] {
            env.insert(k.to_string(), Text::plain(v));
        }
        env.insert("SOURCE_DATE_EPOCH".into(), self.source_date_epoch.clone());
        for (k, v) in &self.env {
            env.insert(k.clone(), v.clone());
        }
        env
    }

    /// Variables a step may not declare.
    pub const RESERVED_ENV: &'static [&'static str] = &["PATH", "DEPS", "SOURCE_DATE_EPOCH"];
}

impl StageStep {
    pub fn network(&self) -> bool {
        matches!(self, StageStep::Run(r) if r.network)
    }

    /// The command that stands for the step in its key and in the store,
    /// with the platform it is for (and, for a command, the emulator that
    /// runs it): a stage for arm64 and one for amd64 never share a key, even
    /// from the same tree.
    pub fn keyed_command(&self, runs_on: &RunsOn) -> reapi::Command {
        let prop = |name: &str, value: String| reapi::Property {
            name: name.to_string(),
            value,
        };
        match self {
            StageStep::Run(r) => {
                let mut props = vec![prop("network", r.network.to_string())];
                if let Some(u) = &r.user {
                    props.push(prop("user", u.clone()));
                }
                for (name, path) in &r.caches {
                    props.push(prop(&format!("cache:{name}"), path.clone()));
                }
                props.extend(runs_on.properties());
                reapi::Command {
                    arguments: r.argv().1,
                    environment_variables: r
                        .env()
                        .into_iter()
                        .map(|(name, v)| reapi::EnvironmentVariable {
                            name,
                            value: v.keyed,
                        })
                        .collect(),
                    platform: Some(reapi::Platform { properties: props }),
                    working_directory: r.workdir.clone(),
                    output_paths: Vec::new(),
                }
            }
            StageStep::Copy(c) => reapi::Command {
                arguments: vec![
                    "strata-stage-copy".into(),
                    serde_json::to_string(c).expect("copy step serializes"),
                ],
                // Nothing runs: the platform only, never an emulator.
                platform: Some(reapi::Platform {
                    properties: RunsOn::native(runs_on.platform.clone()).properties(),
                }),
                ..Default::default()
            },
        }
    }

    /// The action whose digest is the step's key: the command and the input
    /// root (the parent tree under `deps/`, sources, dependencies).
    pub fn action(&self, command_digest: Digest, input_root: Digest) -> reapi::Action {
        reapi::Action {
            command_digest: Some(command_digest.to_proto()),
            input_root_digest: Some(input_root.to_proto()),
            salt: STAGE_SALT.to_vec(),
            platform: Some(reapi::Platform {
                properties: vec![
                    reapi::Property {
                        name: "strata.rule".into(),
                        value: "stage".into(),
                    },
                    reapi::Property {
                        name: "strata.sandbox".into(),
                        value: match self {
                            StageStep::Run(_) => "docker".into(),
                            StageStep::Copy(_) => "none".into(),
                        },
                    },
                ],
            }),
            ..Default::default()
        }
    }
}

/// Folders a copy creates on its way to the destination.
const NEW_DIR_META: Meta = Meta {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

/// Runs a `copy` step: the parent tree (empty for `scratch`) with the
/// source placed at the destination, as Docker's `COPY` does: a file lands
/// at `to` (or inside it when `to` ends with `/`); a folder's contents merge
/// into `to`.
pub fn copy_into(ctx: &Ctx, parent: Option<Digest>, c: &CopyInto) -> Result<Digest, BuiltinError> {
    let entry = ctx.entry(&c.from.0)?;
    let mut root = match parent {
        Some(d) => TreeBuilder::load(ctx.cas, &d)?,
        None => TreeBuilder::new(),
    };
    let to = c.to.trim_matches('/');
    let name = c
        .from
        .0
        .path
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .or(c.from.0.target.as_deref())
        .unwrap_or("srcs")
        .to_string();
    let refused = |e: EditError| BuiltinError::Refused {
        entry: c.to.clone(),
        reason: e.to_string(),
    };
    let meta_of = |old: Option<Meta>, executable: bool| -> Option<Meta> {
        if c.mode.is_none() && c.owner.is_none() {
            return old;
        }
        let base = old.unwrap_or(Meta {
            mode: if executable { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
        });
        Some(Meta {
            mode: c.mode.map(|m| m.0).unwrap_or(base.mode),
            uid: c.owner.map(|o| o.uid).unwrap_or(base.uid),
            gid: c.owner.map(|o| o.gid).unwrap_or(base.gid),
        })
    };
    match entry {
        Entry::Dir { digest, .. } => {
            if c.mode.is_some() || c.owner.is_some() {
                return Err(BuiltinError::Input {
                    what: String::from(c.from.0.clone()),
                    reason: "is a folder; `mode` and `owner` apply to a copied file".into(),
                });
            }
            if to.is_empty() {
                root.overlay(ctx.cas, "", &digest).map_err(refused)?;
            } else {
                root.insert_at(
                    ctx.cas,
                    to,
                    Node::Dir(TreeBuilder::new()),
                    Some(NEW_DIR_META),
                )
                .map_err(refused)?;
                root.overlay(ctx.cas, to, &digest).map_err(refused)?;
            }
        }
        other => {
            let dest = if c.to.ends_with('/') {
                if to.is_empty() {
                    name
                } else {
                    format!("{to}/{name}")
                }
            } else {
                to.to_string()
            };
            // The entry as stored, then `mode` and `owner` over its meta.
            let mut node = Node::from(other);
            match &mut node {
                Node::File {
                    executable, meta, ..
                } => {
                    *meta = meta_of(*meta, *executable);
                    if let Some(m) = meta {
                        *executable = m.mode & 0o111 != 0;
                    }
                }
                Node::Symlink { meta, .. } | Node::Device { meta, .. } => {
                    *meta = meta_of(*meta, false);
                }
                _ => {}
            }
            root.insert_at(ctx.cas, &dest, node, Some(NEW_DIR_META))
                .map_err(refused)?;
        }
    }
    Ok(root.store(ctx.cas)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::From;
    use strata_store::tree::walk;
    use strata_store::{DigestFunction, Store};

    /// An input root with an executable `work/tool` and a symlink
    /// `work/link`, both without stored meta.
    fn input(cas: &strata_store::Cas) -> Digest {
        let mut b = TreeBuilder::new();
        let tool = cas.put_bytes(b"#!/bin/sh\n").unwrap();
        b.insert("work/tool", Node::file(tool, true)).unwrap();
        b.insert(
            "work/link",
            Node::Symlink {
                target: "tool".into(),
                meta: None,
            },
        )
        .unwrap();
        b.store(cas).unwrap()
    }

    fn copy(
        cas: &strata_store::Cas,
        from: &str,
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
    ) -> Entry {
        let ctx = Ctx {
            cas,
            input_root: input(cas),
            source_date_epoch: 0,
            dep_keys: Default::default(),
        };
        let c = CopyInto {
            from: Source(From {
                target: None,
                path: from.into(),
            }),
            to: "/opt/x".into(),
            mode: mode.map(Mode),
            owner: owner.map(|(uid, gid)| Owner { uid, gid }),
        };
        let tree = copy_into(&ctx, None, &c).unwrap();
        walk(cas, &tree)
            .unwrap()
            .into_iter()
            .find(|(p, _)| p == "opt/x")
            .expect("opt/x copied")
            .1
    }

    #[test]
    fn a_copy_keeps_the_entry_and_mode_and_owner_apply_over_it() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path(), DigestFunction::Blake3).unwrap();
        let cas = store.cas();
        // As stored: executable, no meta.
        let Entry::File {
            executable, meta, ..
        } = copy(cas, "tool", None, None)
        else {
            panic!("not a file")
        };
        assert!(executable && meta.is_none());
        // A mode without the x bits makes it not executable; the owner
        // defaults to root.
        let Entry::File {
            executable, meta, ..
        } = copy(cas, "tool", Some(0o640), None)
        else {
            panic!("not a file")
        };
        assert!(!executable);
        assert_eq!(
            meta,
            Some(Meta {
                mode: 0o640,
                uid: 0,
                gid: 0
            })
        );
        // An owner alone keeps the mode the executable bit implies.
        let Entry::File {
            executable, meta, ..
        } = copy(cas, "tool", None, Some((1000, 100)))
        else {
            panic!("not a file")
        };
        assert!(executable);
        assert_eq!(
            meta,
            Some(Meta {
                mode: 0o755,
                uid: 1000,
                gid: 100
            })
        );
        // A symlink takes the owner too, and stays a symlink.
        let Entry::Symlink { target, meta } = copy(cas, "link", None, Some((7, 8))) else {
            panic!("not a symlink")
        };
        assert_eq!(target, "tool");
        assert_eq!(
            meta,
            Some(Meta {
                mode: 0o644,
                uid: 7,
                gid: 8
            })
        );
    }
}
