//! `rootfs`: assemble a root file system tree from ordered layers and
//! components. Modes (setuid included), owners, symlinks and device nodes
//! are kept as metadata in the tree, so no root privileges are needed.
//!
//! ```yaml
//! rootfs:
//!   rule: rootfs
//!   srcs: ["files/**"]
//!   layers:                                  # applied in order; later ones win
//!     - {from: base}                          # a target's output tree at /
//!     - {from: app, prefix: /opt/app}
//!   components:
//!     - {type: file, source: files/motd, target: /etc/motd, chmod: "0644", chown: "root:root"}
//!     - {type: directory, source: files/conf, target: /etc/app, chmod: "0755", chown: "0:0"}
//!     - {type: directory, target: /tmp, chmod: "1777"}   # an empty folder
//!     - {type: systemd, service: files/app.service, enable: true}
//!     - {type: symlink, target: /usr/bin/python3, link: /usr/bin/python}
//!     - {type: device, path: /dev/console, kind: char, major: 5, minor: 1, mode: "0600"}
//!     - {type: docker-compose, file: compose.yaml, target: /etc/app/compose.yaml,
//!        images: {web: web-image}, data_root: /var/lib/docker}
//!   remove: [/usr/share/doc]
//! ```
//! The tree starts as an empty root folder (0755 root:root). Layers are
//! overlaid in order (files replace files, folders merge), then components
//! are installed in order, then `remove` deletes whole subtrees (a missing
//! path is not an error). Paths are absolute in the image and cannot hold
//! `..`; folders the rule creates are 0755 root:root, and nothing is ever
//! installed through a symlink. A `file` target ending in `/` keeps the
//! source's name. Errors name the layer or component (`components[2]`) and
//! its path.
//!
//! A `docker-compose` component is read by the loader at load time (see
//! `load/src/compose.rs` in strata-load), which hands this rule its resolved form: the
//! compose file's text, where to install it, and a `docker-data-root`
//! target (`preload`) holding the services' images, placed at `data_root`
//! with the owners and modes Docker gave it.

use serde::{Deserialize, Serialize};
use strata_store::tree::{DeviceKind, Entry, Meta, Node, TreeBuilder, walk};
use strata_store::{Cas, Digest};

use serde_json::Value;

use super::Builtin;
use super::{
    BuiltinError, Ctx, From, Mode, Named, Owner, ParamError, PathExt, Seg, Source, key, located,
};
use crate::table::{Field, FieldKind, Parse, Rule};

/// `rootfs`: a root filesystem assembled from layers and components.
pub const RULE: Rule = Rule {
    name: "rootfs",
    doc: "assembles a root filesystem from layers, components and removals",
    fields: &[
        Field::value("layers", "trees laid over one another, in order"),
        Field {
            name: "components",
            doc: "files, folders, links and `docker-compose` bundles installed on top",
            kind: FieldKind::Components,
        },
        Field::value("remove", "paths removed from the result"),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Rootfs(Params::parse(f)?))),
    image_output: false,
    contains_inputs: true,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default)]
    pub layers: Vec<Layer>,
    #[serde(default)]
    pub components: Vec<Component>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub from: From,
    #[serde(default)]
    pub prefix: Option<String>,
}

fn file_mode() -> Mode {
    Mode(0o644)
}
fn dir_mode() -> Mode {
    Mode(0o755)
}
fn yes() -> bool {
    true
}

/// One item of `components:`. Each kind's fields are a struct of their own,
/// so an item can be read alone as its `type:` says (`Params::parse`),
/// which names the field at fault: serde reads an internally tagged enum
/// through a buffer that loses the path. The serialized form (in keys) is
/// `{"type": ..., fields...}` either way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Component {
    /// Installs one file.
    File(FileSpec),
    /// Installs a folder's contents (files keep their executable bit: 0755
    /// if executable, else `chmod`, default 0644; folders get 0755). Without
    /// `source`, makes the folder itself with mode `chmod` (default 0755),
    /// keeping what a layer put in it: `/tmp` with 1777.
    Directory(DirectorySpec),
    /// Installs a unit under /etc/systemd/system and, if enabled, its
    /// multi-user.target.wants symlink.
    Systemd(SystemdSpec),
    Symlink(SymlinkSpec),
    Device(DeviceSpec),
    /// A compose file and the Docker data-root holding its services'
    /// images, in the form the engine resolves `{type: docker-compose,
    /// file, images, ...}` to: the file's text (interpolated at load time)
    /// and the target that preloads the images.
    #[serde(rename = "docker-compose")]
    DockerCompose(DockerComposeSpec),
}

/// The `type:` names of components, in the order messages list them.
const COMPONENT_TYPES: &[&str] = &[
    "file",
    "directory",
    "systemd",
    "symlink",
    "device",
    "docker-compose",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub source: Source,
    pub target: String,
    #[serde(default = "file_mode")]
    pub chmod: Mode,
    #[serde(default)]
    pub chown: Owner,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chmod: Option<Mode>,
    #[serde(default)]
    pub chown: Owner,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdSpec {
    pub service: Source,
    #[serde(default = "yes")]
    pub enable: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSpec {
    pub target: String,
    pub link: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub path: String,
    pub kind: String,
    pub major: u32,
    pub minor: u32,
    #[serde(default = "dir_mode")]
    pub mode: Mode,
    #[serde(default)]
    pub chown: Owner,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerComposeSpec {
    /// The compose file's text, installed 0644 root:root at `target`.
    pub compose: String,
    pub target: String,
    /// A `docker-data-root` target (a dependency).
    pub preload: String,
    /// Where the data-root goes (`/var/lib/docker`).
    pub data_root: String,
}

impl Params {
    /// Reads the rule's fields. An error inside a component is read again
    /// from that component alone, as its `type:` says, to name the field
    /// at fault (`components[4].chmod`).
    pub(super) fn parse(fields: serde_json::Map<String, Value>) -> Result<Params, ParamError> {
        let components = fields.get("components").cloned();
        located::<Params>(Value::Object(fields)).map_err(|e| {
            let (Some(Seg::Index(i)), Some(items)) = (e.path.get(1), &components) else {
                return e;
            };
            if e.field() != Some("components") {
                return e;
            }
            let item = items.get(*i);
            if item.is_some_and(|v| !v.is_object()) {
                return ParamError::at(
                    key("components").index(*i),
                    format!(
                        "components[{i}] is {}, not a component",
                        kind_of(item.expect("some"))
                    ),
                )
                .with_hint("a component is a mapping such as `{type: file, source: files/motd, target: /etc/motd}`; to read the list of components from a file, write `components: !include file.yaml`");
            }
            if e.path.len() != 2 {
                return e;
            }
            match item.and_then(component_error) {
                Some(inner) => {
                    let mut path = key("components").index(*i);
                    path.extend(inner.path);
                    ParamError { path, ..inner }
                }
                None => e,
            }
        })
    }

    pub(super) fn validate(&self) -> Result<(), ParamError> {
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(prefix) = &layer.prefix {
                image_path(prefix).map_err(|m| {
                    ParamError::at(
                        key("layers").index(i).key("prefix"),
                        format!("layers[{i}]: prefix {m}"),
                    )
                })?;
            }
        }
        for (i, c) in self.components.iter().enumerate() {
            c.check().map_err(|(field, m)| {
                ParamError::at(
                    key("components").index(i).key(field),
                    format!("{}: {m}", c.describe(i)),
                )
            })?;
        }
        for (i, path) in self.remove.iter().enumerate() {
            entry_path(path)
                .map_err(|m| ParamError::at(key("remove").index(i), format!("remove[{i}]: {m}")))?;
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        let mut v: Vec<Named<String>> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                l.from.targets().into_iter().map(move |t| Named {
                    value: t,
                    path: key("layers").index(i).key("from"),
                })
            })
            .collect();
        for (i, c) in self.components.iter().enumerate() {
            match c.source() {
                Some((field, source)) => v.extend(source.0.targets().into_iter().map(|t| Named {
                    value: t,
                    path: key("components").index(i).key(field),
                })),
                None => {
                    if let Component::DockerCompose(DockerComposeSpec { preload, .. }) = c {
                        v.push(Named {
                            value: preload.clone(),
                            path: key("components").index(i),
                        });
                    }
                }
            }
        }
        v
    }

    /// Files of the target's sources that components install.
    pub(super) fn source_files(&self) -> Vec<Named<String>> {
        self.components
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let (field, source) = c.source()?;
                source.0.target.is_none().then(|| Named {
                    value: source.0.path.clone(),
                    path: key("components").index(i).key(field),
                })
            })
            .collect()
    }
}

/// What a YAML value is, for messages.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The first error in one `components:` item, read alone as its `type:`
/// says; `None` when it reads well (the error was elsewhere).
fn component_error(item: &Value) -> Option<ParamError> {
    let map = item.as_object()?;
    let Some(kind) = map.get("type") else {
        return Some(ParamError::at(
            Vec::new(),
            format!(
                "a component needs a `type:`, one of {}",
                COMPONENT_TYPES.join(", ")
            ),
        ));
    };
    let mut rest = map.clone();
    rest.remove("type");
    let rest = Value::Object(rest);
    let read = match kind.as_str() {
        Some("file") => located::<FileSpec>(rest).map(drop),
        Some("directory") => located::<DirectorySpec>(rest).map(drop),
        Some("systemd") => located::<SystemdSpec>(rest).map(drop),
        Some("symlink") => located::<SymlinkSpec>(rest).map(drop),
        Some("device") => located::<DeviceSpec>(rest).map(drop),
        Some("docker-compose") => located::<DockerComposeSpec>(rest).map(drop),
        _ => Err(ParamError::at(
            key("type"),
            format!(
                "`{}` is not a component type: one of {}",
                kind.as_str()
                    .map_or_else(|| kind.to_string(), str::to_string),
                COMPONENT_TYPES.join(", ")
            ),
        )),
    };
    read.err()
}

/// Folders the rule creates (the root, parents of installed entries):
/// 0755 root:root.
const ROOT_DIR: Meta = Meta {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

/// Where `systemd` components install units, and their enable links.
const SYSTEMD_DIR: &str = "etc/systemd/system";
const WANTS_DIR: &str = "etc/systemd/system/multi-user.target.wants";

/// An absolute path of the image as a path relative to its root ("" for
/// `/` itself). Refuses `..`, `.` and NUL bytes.
fn image_path(path: &str) -> Result<String, String> {
    if path.contains('\0') {
        return Err(format!("`{}` contains a NUL byte", path.escape_debug()));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.contains(&"..") {
        return Err(format!("`{path}` cannot contain `..`"));
    }
    if parts.contains(&".") {
        return Err(format!("`{path}` cannot contain `.` as a component"));
    }
    Ok(parts.join("/"))
}

/// Like [`image_path`], but the path must name an entry, not `/` itself.
fn entry_path(path: &str) -> Result<String, String> {
    let rel = image_path(path)?;
    if rel.is_empty() {
        return Err(format!("`{path}` is the root folder, not an entry in it"));
    }
    Ok(rel)
}

fn join(base: &str, rel: &str) -> String {
    if base.is_empty() {
        rel.to_string()
    } else {
        format!("{base}/{rel}")
    }
}

fn device_kind(kind: &str) -> Result<DeviceKind, String> {
    match kind {
        "char" => Ok(DeviceKind::Char),
        "block" => Ok(DeviceKind::Block),
        "fifo" => Ok(DeviceKind::Fifo),
        other => Err(format!(
            "device kind `{other}` is not one of `char`, `block`, `fifo`"
        )),
    }
}

impl Component {
    /// `components[i] (type path)`, for messages.
    fn describe(&self, i: usize) -> String {
        let (kind, path) = match self {
            Component::File(FileSpec { target, .. }) => ("file", target.clone()),
            Component::Directory(DirectorySpec { target, .. }) => ("directory", target.clone()),
            Component::Systemd(SystemdSpec { service, .. }) => {
                ("systemd", String::from(service.clone()))
            }
            Component::Symlink(SymlinkSpec { link, .. }) => ("symlink", link.clone()),
            Component::Device(DeviceSpec { path, .. }) => ("device", path.clone()),
            Component::DockerCompose(DockerComposeSpec { target, .. }) => {
                ("docker-compose", target.clone())
            }
        };
        format!("components[{i}] ({kind} `{path}`)")
    }

    /// The file a component installs from, and the field naming it.
    fn source(&self) -> Option<(&'static str, &Source)> {
        match self {
            Component::File(FileSpec { source, .. })
            | Component::Directory(DirectorySpec {
                source: Some(source),
                ..
            }) => Some(("source", source)),
            Component::Systemd(SystemdSpec { service, .. }) => Some(("service", service)),
            _ => None,
        }
    }

    /// The checks that need no inputs; an error names the field at fault.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let at = |field: &'static str| move |m: String| (field, m);
        match self {
            Component::File(FileSpec { target, .. }) => {
                entry_path(target).map(drop).map_err(at("target"))
            }
            Component::Directory(DirectorySpec {
                source: Some(_),
                target,
                ..
            }) => image_path(target).map(drop).map_err(at("target")),
            Component::Directory(DirectorySpec {
                source: None,
                target,
                ..
            }) => entry_path(target).map(drop).map_err(at("target")),
            Component::Systemd(SystemdSpec { .. }) => Ok(()),
            Component::Symlink(SymlinkSpec { target, link }) => {
                entry_path(link).map_err(at("link"))?;
                if target.is_empty() || target.contains('\0') {
                    return Err((
                        "target",
                        "a symlink needs a target, without NUL bytes".into(),
                    ));
                }
                Ok(())
            }
            Component::Device(DeviceSpec { path, kind, .. }) => {
                entry_path(path).map_err(at("path"))?;
                device_kind(kind).map(drop).map_err(at("kind"))
            }
            Component::DockerCompose(DockerComposeSpec {
                target,
                preload,
                data_root,
                ..
            }) => {
                entry_path(target).map_err(at("target"))?;
                entry_path(data_root).map_err(at("data_root"))?;
                if preload.is_empty() || preload.contains(['/', ':', '\0']) {
                    return Err(("preload", format!("`{preload}` is not a target")));
                }
                Ok(())
            }
        }
    }
}

/// Creates the folder `path` (with `meta`, parents 0755 root:root) unless
/// something is already there.
fn ensure_dir(root: &mut TreeBuilder, cas: &Cas, path: &str, meta: Meta) -> Result<(), String> {
    if path.is_empty() || root.get(cas, path).map_err(|e| e.to_string())?.is_some() {
        return Ok(());
    }
    let mut dir = TreeBuilder::new();
    dir.set_meta(Some(meta));
    root.insert_at(cas, path, Node::Dir(dir), Some(ROOT_DIR))
        .map_err(|e| e.to_string())
}

fn install(root: &mut TreeBuilder, cas: &Cas, path: &str, node: Node) -> Result<(), String> {
    root.insert_at(cas, path, node, Some(ROOT_DIR))
        .map_err(|e| e.to_string())
}

fn apply(root: &mut TreeBuilder, ctx: &Ctx, c: &Component) -> Result<(), String> {
    let cas = ctx.cas;
    match c {
        Component::File(FileSpec {
            source,
            target,
            chmod,
            chown,
        }) => {
            let (name, digest) = ctx.file(&source.0).map_err(|e| e.to_string())?;
            let mut path = entry_path(target)?;
            // `target: /usr/bin/` installs under the source's own name.
            if target.ends_with('/') {
                path = join(&path, &name);
            }
            let node = Node::File {
                digest,
                executable: chmod.0 & 0o111 != 0,
                meta: Some(Meta {
                    mode: chmod.0,
                    uid: chown.uid,
                    gid: chown.gid,
                }),
            };
            install(root, cas, &path, node)
        }
        Component::Directory(DirectorySpec {
            source: None,
            target,
            chmod,
            chown,
        }) => {
            let mut dir = TreeBuilder::new();
            dir.set_meta(Some(Meta {
                mode: chmod.map_or(0o755, |m| m.0),
                uid: chown.uid,
                gid: chown.gid,
            }));
            install(root, cas, &entry_path(target)?, Node::Dir(dir))
        }
        Component::Directory(DirectorySpec {
            source: Some(source),
            target,
            chmod,
            chown,
        }) => {
            let tree = ctx.tree(&source.0).map_err(|e| e.to_string())?;
            let base = image_path(target)?;
            let file_mode = chmod.map_or(0o644, |m| m.0);
            let meta = |mode: u32| {
                Some(Meta {
                    mode,
                    uid: chown.uid,
                    gid: chown.gid,
                })
            };
            ensure_dir(root, cas, &base, meta(0o755).expect("some"))?;
            for (rel, entry) in walk(cas, &tree).map_err(|e| e.to_string())? {
                let node = match entry {
                    Entry::Dir { .. } => {
                        let mut dir = TreeBuilder::new();
                        dir.set_meta(meta(0o755));
                        Node::Dir(dir)
                    }
                    Entry::File {
                        digest, executable, ..
                    } => Node::File {
                        digest,
                        executable,
                        meta: meta(if executable { 0o755 } else { file_mode }),
                    },
                    Entry::Symlink { target, .. } => Node::Symlink {
                        target,
                        meta: meta(0o777),
                    },
                    Entry::Device {
                        kind,
                        major,
                        minor,
                        meta: m,
                    } => Node::Device {
                        kind,
                        major,
                        minor,
                        meta: meta(m.map_or(0o644, |m| m.mode)),
                    },
                };
                install(root, cas, &join(&base, &rel), node)?;
            }
            Ok(())
        }
        Component::Systemd(SystemdSpec { service, enable }) => {
            let (name, digest) = ctx.file(&service.0).map_err(|e| e.to_string())?;
            let unit = format!("{SYSTEMD_DIR}/{name}");
            let node = root_config_file(digest);
            install(root, cas, &unit, node)?;
            if *enable {
                let link = Node::Symlink {
                    target: format!("/{unit}"),
                    meta: Some(Meta {
                        mode: 0o777,
                        uid: 0,
                        gid: 0,
                    }),
                };
                install(root, cas, &format!("{WANTS_DIR}/{name}"), link)?;
            }
            Ok(())
        }
        Component::Symlink(SymlinkSpec { target, link }) => {
            let node = Node::Symlink {
                target: target.clone(),
                meta: Some(Meta {
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                }),
            };
            install(root, cas, &entry_path(link)?, node)
        }
        Component::Device(DeviceSpec {
            path,
            kind,
            major,
            minor,
            mode,
            chown,
        }) => {
            let node = Node::Device {
                kind: device_kind(kind)?,
                major: *major,
                minor: *minor,
                meta: Some(Meta {
                    mode: mode.0,
                    uid: chown.uid,
                    gid: chown.gid,
                }),
            };
            install(root, cas, &entry_path(path)?, node)
        }
        Component::DockerCompose(DockerComposeSpec {
            compose,
            target,
            preload,
            data_root,
        }) => {
            let digest = cas
                .put_bytes(compose.as_bytes())
                .map_err(|e| e.to_string())?;
            let node = root_config_file(digest);
            install(root, cas, &entry_path(target)?, node)?;
            let from = From {
                target: Some(preload.clone()),
                path: String::new(),
            };
            let tree = ctx.tree(&from).map_err(|e| e.to_string())?;
            let base = entry_path(data_root)?;
            ensure_dir(root, cas, &base, ROOT_DIR)?;
            root.overlay(cas, &base, &tree).map_err(|e| e.to_string())
        }
    }
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<Digest, BuiltinError> {
    // The engine validated the parameters; checked again for direct callers.
    p.validate().map_err(|e| BuiltinError::Format(e.message))?;
    let cas = ctx.cas;
    let mut root = TreeBuilder::new();
    root.set_meta(Some(ROOT_DIR));
    for (i, layer) in p.layers.iter().enumerate() {
        let fail = |e: String| {
            BuiltinError::Format(format!(
                "layers[{i}] (`{}`): {e}",
                String::from(layer.from.clone())
            ))
        };
        let prefix = image_path(layer.prefix.as_deref().unwrap_or("")).map_err(fail)?;
        let tree = ctx.tree(&layer.from).map_err(|e| fail(e.to_string()))?;
        ensure_dir(&mut root, cas, &prefix, ROOT_DIR).map_err(fail)?;
        root.overlay(cas, &prefix, &tree)
            .map_err(|e| fail(e.to_string()))?;
    }
    for (i, c) in p.components.iter().enumerate() {
        apply(&mut root, ctx, c)
            .map_err(|e| BuiltinError::Format(format!("{}: {e}", c.describe(i))))?;
    }
    for (i, path) in p.remove.iter().enumerate() {
        let fail = |e: String| BuiltinError::Format(format!("remove[{i}] (`{path}`): {e}"));
        let rel = entry_path(path).map_err(fail)?;
        root.remove(cas, &rel).map_err(|e| fail(e.to_string()))?;
    }
    Ok(root.store(cas)?)
}

/// A configuration file the rule writes itself (a unit, a compose file):
/// 0644, owned by root.
fn root_config_file(digest: Digest) -> Node {
    Node::File {
        digest,
        executable: false,
        meta: Some(Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use strata_store::{DigestFunction, Store};

    use super::super::Builtin;
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), DigestFunction::Blake3).unwrap();
            Fixture { _dir: dir, store }
        }

        fn cas(&self) -> &Cas {
            self.store.cas()
        }

        /// An input root from `(path, content)` pairs: content `"->x"` is a
        /// symlink to `x`, a trailing `*` on the path marks an executable.
        fn input_root(&self, entries: &[(&str, &str)]) -> Digest {
            let mut b = TreeBuilder::new();
            for (path, content) in entries {
                let node = if let Some(target) = content.strip_prefix("->") {
                    Node::Symlink {
                        target: target.into(),
                        meta: None,
                    }
                } else {
                    let d = self.cas().put_bytes(content.as_bytes()).unwrap();
                    Node::file(d, path.ends_with('*'))
                };
                b.insert(path.trim_end_matches('*'), node).unwrap();
            }
            b.store(self.cas()).unwrap()
        }

        fn ctx(&self, input_root: Digest) -> Ctx<'_> {
            Ctx {
                cas: self.cas(),
                input_root,
                source_date_epoch: 0,
                dep_keys: BTreeMap::new(),
            }
        }

        fn run(
            &self,
            params: serde_json::Value,
            input_root: Digest,
        ) -> Result<Digest, BuiltinError> {
            let Builtin::Rootfs(p) = parse(params).unwrap() else {
                unreachable!()
            };
            run(&p, &self.ctx(input_root))
        }

        /// The tree as `path kind mode uid:gid [detail]` lines.
        fn listing(&self, tree: &Digest) -> Vec<String> {
            walk(self.cas(), tree)
                .unwrap()
                .into_iter()
                .map(|(path, e)| {
                    let m = |meta: Option<Meta>| match meta {
                        Some(m) => format!("{:04o} {}:{}", m.mode, m.uid, m.gid),
                        None => "-".into(),
                    };
                    match e {
                        Entry::Dir { meta, .. } => format!("{path}/ {}", m(meta)),
                        Entry::File {
                            digest,
                            executable,
                            meta,
                        } => {
                            let text =
                                String::from_utf8(self.cas().read(&digest).unwrap()).unwrap();
                            let x = if executable { "x" } else { "" };
                            format!("{path} {}{x} {text:?}", m(meta))
                        }
                        Entry::Symlink { target, meta } => {
                            format!("{path} -> {target} {}", m(meta))
                        }
                        Entry::Device {
                            kind,
                            major,
                            minor,
                            meta,
                        } => format!("{path} {} {major}:{minor} {}", kind.name(), m(meta)),
                    }
                })
                .collect()
        }
    }

    fn parse(params: serde_json::Value) -> Result<Builtin, ParamError> {
        let serde_json::Value::Object(fields) = params else {
            panic!("params are an object")
        };
        Builtin::parse("rootfs", fields)
    }

    fn inputs(f: &Fixture) -> Digest {
        f.input_root(&[
            ("work/files/motd", "welcome\n"),
            ("work/files/su", "setuid tool\n"),
            ("work/files/app.service", "[Unit]\n"),
            ("work/files/conf/app.conf", "key=1\n"),
            ("work/files/conf/hook.sh*", "#!/bin/sh\n"),
            ("work/files/conf/sub/deep.conf", "deep\n"),
            ("work/files/conf/current", "->app.conf"),
            ("deps/base/etc/hostname", "base\n"),
            ("deps/base/usr/bin/sh*", "sh\n"),
            ("deps/base/usr/share/doc/readme", "doc\n"),
            ("deps/base/lib", "->usr/lib"),
            ("deps/app/bin/app*", "app\n"),
            ("deps/app/etc/hostname", "app\n"),
        ])
    }

    #[test]
    fn assembles_layers_components_and_removals() {
        let f = Fixture::new();
        let root = inputs(&f);
        let out = f
            .run(
                json!({
                    "layers": [{"from": "base"}, {"from": "app", "prefix": "/opt/app"}],
                    "components": [
                        {"type": "file", "source": "files/motd", "target": "/etc/motd"},
                        {"type": "file", "source": "files/su", "target": "/usr/bin/su", "chmod": "4755", "chown": "0:0"},
                        {"type": "directory", "source": "files/conf", "target": "/etc/app", "chmod": "0640", "chown": "1000:1000"},
                        {"type": "systemd", "service": "files/app.service", "enable": true},
                        {"type": "symlink", "target": "../opt/app/bin/app", "link": "/usr/bin/app"},
                        {"type": "device", "path": "/dev/console", "kind": "char", "major": 5, "minor": 1, "mode": "0600"},
                    ],
                    "remove": ["/usr/share/doc", "/does/not/exist"],
                }),
                root,
            )
            .unwrap();
        assert_eq!(
            f.listing(&out),
            [
                "dev/ 0755 0:0",
                "dev/console char 5:1 0600 0:0",
                "etc/ -",
                "etc/app/ 0755 1000:1000",
                "etc/app/app.conf 0640 1000:1000 \"key=1\\n\"",
                "etc/app/current -> app.conf 0777 1000:1000",
                "etc/app/hook.sh 0755 1000:1000x \"#!/bin/sh\\n\"",
                "etc/app/sub/ 0755 1000:1000",
                "etc/app/sub/deep.conf 0640 1000:1000 \"deep\\n\"",
                "etc/hostname - \"base\\n\"",
                "etc/motd 0644 0:0 \"welcome\\n\"",
                "etc/systemd/ 0755 0:0",
                "etc/systemd/system/ 0755 0:0",
                "etc/systemd/system/app.service 0644 0:0 \"[Unit]\\n\"",
                "etc/systemd/system/multi-user.target.wants/ 0755 0:0",
                "etc/systemd/system/multi-user.target.wants/app.service -> /etc/systemd/system/app.service 0777 0:0",
                "lib -> usr/lib -",
                "opt/ 0755 0:0",
                "opt/app/ 0755 0:0",
                "opt/app/bin/ -",
                "opt/app/bin/app -x \"app\\n\"",
                "opt/app/etc/ -",
                "opt/app/etc/hostname - \"app\\n\"",
                "usr/ -",
                "usr/bin/ -",
                "usr/bin/app -> ../opt/app/bin/app 0777 0:0",
                "usr/bin/sh -x \"sh\\n\"",
                "usr/bin/su 4755 0:0x \"setuid tool\\n\"",
                "usr/share/ -",
            ]
        );
        // The root folder itself is 0755 root:root.
        let mut b = TreeBuilder::load(f.cas(), &out).unwrap();
        assert_eq!(b.meta(), Some(ROOT_DIR));
        assert!(b.get(f.cas(), "usr/share/doc").unwrap().is_none());
    }

    #[test]
    fn later_layers_win_and_folders_merge() {
        let f = Fixture::new();
        let root = inputs(&f);
        let out = f
            .run(
                json!({"layers": [{"from": "base"}, {"from": "app", "prefix": "/"}]}),
                root,
            )
            .unwrap();
        let listing = f.listing(&out);
        assert!(
            listing.contains(&"etc/hostname - \"app\\n\"".to_string()),
            "{listing:?}"
        );
        assert!(
            listing.contains(&"bin/app -x \"app\\n\"".to_string()),
            "{listing:?}"
        );
        assert!(
            listing.contains(&"usr/bin/sh -x \"sh\\n\"".to_string()),
            "{listing:?}"
        );
    }

    #[test]
    fn the_same_inputs_give_the_same_tree_and_order_matters() {
        let f = Fixture::new();
        let root = inputs(&f);
        let params = json!({
            "layers": [{"from": "base"}],
            "components": [
                {"type": "file", "source": "files/motd", "target": "/etc/hostname"},
                {"type": "file", "source": "files/su", "target": "/usr/bin/"},
            ],
        });
        let a = f.run(params.clone(), root).unwrap();
        assert_eq!(a, f.run(params, root).unwrap());
        let listing = f.listing(&a);
        assert!(
            listing.contains(&"etc/hostname 0644 0:0 \"welcome\\n\"".to_string()),
            "{listing:?}"
        );
        // A target ending in `/` keeps the source's name.
        assert!(
            listing.contains(&"usr/bin/su 0644 0:0 \"setuid tool\\n\"".to_string()),
            "{listing:?}"
        );
        // `remove` runs after every component.
        let b = f
            .run(
                json!({
                    "layers": [{"from": "base"}],
                    "components": [{"type": "file", "source": "files/motd", "target": "/x"}],
                    "remove": ["/x"],
                }),
                root,
            )
            .unwrap();
        assert!(!f.listing(&b).iter().any(|l| l.starts_with("x ")));
    }

    #[test]
    fn an_empty_rootfs_is_a_root_folder() {
        let f = Fixture::new();
        let root = f.input_root(&[("work/x", "x")]);
        let out = f.run(json!({}), root).unwrap();
        assert!(f.listing(&out).is_empty());
        assert_eq!(
            TreeBuilder::load(f.cas(), &out).unwrap().meta(),
            Some(ROOT_DIR)
        );
    }

    #[test]
    fn an_error_inside_a_component_names_the_field_at_fault() {
        let at = |v: serde_json::Value| {
            let e = parse(v).unwrap_err();
            (super::super::path_text(&e.path), e.message)
        };
        let fine = json!({"type": "directory", "target": "/a"});
        let with = |bad: serde_json::Value| json!({"components": [fine, fine, fine, fine, bad]});
        let (path, m) = at(with(
            json!({"type": "file", "source": "m", "target": "/m", "chmod": "9999"}),
        ));
        assert_eq!(path, "components[4].chmod", "{m}");
        assert!(m.contains("`9999` is not an octal mode"), "{m}");
        let (path, m) = at(with(
            json!({"type": "symlnk", "target": "/x", "link": "/y"}),
        ));
        assert_eq!(path, "components[4].type", "{m}");
        assert!(m.contains("`symlnk`") && m.contains("`symlink`"), "{m}");
        let (path, m) = at(with(
            json!({"type": "file", "source": "m", "target": "/m", "chmood": "0644"}),
        ));
        assert_eq!(path, "components[4].chmood", "{m}");
        assert!(m.starts_with("unknown field `chmood`"), "{m}");
        let (path, _) = at(with(
            json!({"type": "device", "path": "/dev/x", "kind": "pipe", "major": 1, "minor": 1}),
        ));
        assert_eq!(path, "components[4].kind");
        let (path, _) = at(json!({"layers": [{"from": "a"}, {"from": "b", "prefix": "/x/../y"}]}));
        assert_eq!(path, "layers[1].prefix");
        let (path, _) = at(json!({"remove": ["/a", "/"]}));
        assert_eq!(path, "remove[1]");
    }

    #[test]
    fn components_are_keyed_as_tagged_mappings() {
        let Builtin::Rootfs(p) = parse(json!({"components": [
            {"type": "file", "source": "files/motd", "target": "/etc/motd", "chmod": "0644"},
            {"type": "directory", "target": "/tmp", "chmod": "1777"},
            {"type": "systemd", "service": "files/app.service"},
        ]}))
        .unwrap() else {
            unreachable!()
        };
        // The serialized form is the key's: it must not change with the
        // Rust shape of `Component`.
        assert_eq!(
            serde_json::to_string(&p.components).unwrap(),
            r#"[{"type":"file","source":"files/motd","target":"/etc/motd","chmod":"0644","chown":"0:0"},{"type":"directory","target":"/tmp","chmod":"1777","chown":"0:0"},{"type":"systemd","service":"files/app.service","enable":true}]"#
        );
        let files: Vec<(String, String)> = p
            .source_files()
            .into_iter()
            .map(|n| (n.value, super::super::path_text(&n.path)))
            .collect();
        assert_eq!(
            files,
            [
                ("files/motd".to_string(), "components[0].source".to_string()),
                (
                    "files/app.service".to_string(),
                    "components[2].service".to_string()
                ),
            ]
        );
    }

    #[test]
    fn bad_paths_and_kinds_are_refused_where_written() {
        let field = |v: serde_json::Value| {
            let e = parse(v).unwrap_err();
            (e.field().unwrap_or_default().to_string(), e.message)
        };
        let (f, m) = field(json!({"components": [
            {"type": "symlink", "target": "x", "link": "/a"},
            {"type": "file", "source": "files/motd", "target": "/etc/../../motd"},
        ]}));
        assert_eq!(f, "components");
        assert!(
            m.contains("components[1] (file `/etc/../../motd`)") && m.contains("`..`"),
            "{m}"
        );
        let (f, m) = field(json!({"components": [
            {"type": "device", "path": "/dev/x", "kind": "socket", "major": 1, "minor": 2},
        ]}));
        assert_eq!(f, "components");
        assert!(
            m.contains("components[0] (device `/dev/x`)") && m.contains("socket"),
            "{m}"
        );
        let (f, m) = field(json!({"components": [{"type": "file", "source": "a", "target": "/"}]}));
        assert_eq!(f, "components");
        assert!(m.contains("root folder"), "{m}");
        let (f, m) = field(json!({"remove": ["/ok", "/a/./b"]}));
        assert_eq!(f, "remove");
        assert!(m.contains("remove[1]"), "{m}");
        let (f, _) = field(json!({"layers": [{"from": "base", "prefix": "/opt/../.."}]}));
        assert_eq!(f, "layers");
        let (f, _) =
            field(json!({"components": [{"type": "file", "source": "../x", "target": "/x"}]}));
        assert_eq!(f, "components");
        let (f, _) = field(json!({"components": [{"type": "fifo", "path": "/x"}]}));
        assert_eq!(f, "components");
        // Fifos and block devices are fine.
        parse(json!({"components": [
            {"type": "device", "path": "/run/initctl", "kind": "fifo", "major": 0, "minor": 0, "mode": "0600"},
            {"type": "device", "path": "/dev/sda", "kind": "block", "major": 8, "minor": 0},
        ]}))
        .unwrap();
    }

    #[test]
    fn run_errors_name_the_component_and_its_path() {
        let f = Fixture::new();
        let root = inputs(&f);
        let err = f
            .run(
                json!({"components": [
                    {"type": "symlink", "target": "x", "link": "/a"},
                    {"type": "file", "source": "files/missing", "target": "/etc/missing"},
                ]}),
                root,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("components[1] (file `/etc/missing`)") && err.contains("missing"),
            "{err}"
        );
        // Installing through a symlink of a layer is refused.
        let err = f
            .run(
                json!({
                    "layers": [{"from": "base"}],
                    "components": [{"type": "file", "source": "files/motd", "target": "/lib/motd"}],
                }),
                root,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("components[0] (file `/lib/motd`)") && err.contains("symlink"),
            "{err}"
        );
        // A file where a folder is needed.
        let err = f
            .run(
                json!({"layers": [{"from": "base"}], "components": [
                    {"type": "directory", "source": "files/conf", "target": "/etc/hostname"},
                ]}),
                root,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("components[0] (directory `/etc/hostname`)"),
            "{err}"
        );
        let err = f
            .run(json!({"layers": [{"from": "app:bin/app"}]}), root)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("layers[0] (`app:bin/app`)") && err.contains("not a folder"),
            "{err}"
        );
    }

    #[test]
    fn a_compose_component_installs_its_file_and_the_preloaded_data_root() {
        let f = Fixture::new();
        let mut b = TreeBuilder::new();
        let repos = f.cas().put_bytes(b"{}").unwrap();
        let mut dir = TreeBuilder::new();
        dir.set_meta(Some(Meta {
            mode: 0o710,
            uid: 0,
            gid: 0,
        }));
        b.insert("deps/app#compose-0", Node::Dir(dir)).unwrap();
        b.insert(
            "deps/app#compose-0/image/overlay2/repositories.json",
            Node::File {
                digest: repos,
                executable: false,
                meta: Some(Meta {
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                }),
            },
        )
        .unwrap();
        b.insert(
            "deps/app#compose-0/overlay2/l/.wh.x",
            Node::Device {
                kind: DeviceKind::Char,
                major: 0,
                minor: 0,
                meta: None,
            },
        )
        .unwrap();
        let root = b.store(f.cas()).unwrap();
        let out = f
            .run(
                json!({"components": [{
                    "type": "docker-compose",
                    "compose": "services: {}\n",
                    "target": "/etc/app/compose.yaml",
                    "preload": "app#compose-0",
                    "data_root": "/var/lib/docker",
                }]}),
                root,
            )
            .unwrap();
        let listing = f.listing(&out);
        for line in [
            "etc/app/compose.yaml 0644 0:0 \"services: {}\\n\"",
            "var/lib/docker/ 0710 0:0",
            "var/lib/docker/image/overlay2/repositories.json 0600 0:0 \"{}\"",
            "var/lib/docker/overlay2/l/.wh.x char 0:0 -",
        ] {
            assert!(listing.contains(&line.to_string()), "{line}: {listing:?}");
        }
        let Builtin::Rootfs(p) = parse(json!({"components": [{
            "type": "docker-compose", "compose": "", "target": "/c.yaml",
            "preload": "app#compose-0", "data_root": "/var/lib/docker",
        }]}))
        .unwrap() else {
            unreachable!()
        };
        assert_eq!(
            p.inputs().into_iter().map(|n| n.value).collect::<Vec<_>>(),
            ["app#compose-0"]
        );
        let e = parse(json!({"components": [{
            "type": "docker-compose", "compose": "", "target": "/c.yaml",
            "preload": "app", "data_root": "/",
        }]}))
        .unwrap_err();
        assert!(e.message.contains("root folder"), "{}", e.message);
    }

    #[test]
    fn components_install_into_a_dependency_file_and_disabled_units() {
        let f = Fixture::new();
        let root = inputs(&f);
        let out = f
            .run(
                json!({"components": [
                    {"type": "file", "source": "app:bin/app", "target": "/usr/local/bin/app", "chmod": 755},
                    {"type": "systemd", "service": "files/app.service", "enable": false},
                ]}),
                root,
            )
            .unwrap();
        assert_eq!(
            f.listing(&out),
            [
                "etc/ 0755 0:0",
                "etc/systemd/ 0755 0:0",
                "etc/systemd/system/ 0755 0:0",
                "etc/systemd/system/app.service 0644 0:0 \"[Unit]\\n\"",
                "usr/ 0755 0:0",
                "usr/local/ 0755 0:0",
                "usr/local/bin/ 0755 0:0",
                "usr/local/bin/app 0755 0:0x \"app\\n\"",
            ]
        );
    }
}
