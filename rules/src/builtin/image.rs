//! `image`: a container image from a root file system tree, in-process (no
//! Docker needed), as an image layout tree that `docker load` also accepts.
//!
//! ```yaml
//! app-image:
//!   rule: image
//!   from: rootfs                  # a rootfs tree (or `srcs`, or an image layout: flattened)
//!   tag: "example.com/app:1.0"    # optional: RepoTags and the index's ref.name
//!   platform: linux/amd64         # the default
//!   config:                       # all optional
//!     env: {PATH: "/usr/bin:/bin", LANG: C.UTF-8}
//!     entrypoint: ["/usr/bin/app"]
//!     cmd: ["--serve"]
//!     workdir: /srv
//!     user: "1000:1000"
//!     labels: {org.opencontainers.image.source: "https://example.com/app"}
//! ```
//!
//! The output is an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/`) with a docker-archive `manifest.json`: tar it and pipe
//! it to `docker load`. The image has one uncompressed layer, the tree
//! written as by `archive` (entries in path order, times from
//! SOURCE_DATE_EPOCH, owners and modes from the tree, root:root and
//! 0755/0644 where it has none); its config records `created` as
//! SOURCE_DATE_EPOCH. So the output, and the image ID (the config's
//! SHA-256), depend only on the tree, the fields and SOURCE_DATE_EPOCH.
//!
//! A `from` tree that is itself an image layout (an `image` or a pulled
//! image) is flattened first: its layers for `platform` applied in order.
//! Its config is not inherited.
//!
//! With `base:` (an image layout), the image is that image plus one layer:
//! the changes from the base's files to the `from` tree, with OCI whiteouts
//! (`.wh.<name>`) for what the tree no longer has, as `docker build` makes
//! one layer per step. The base's layers are kept as they are (so they are
//! shared on push and load) and its config is inherited, the `config:`
//! fields given here overriding it (`env` merged by name). A tree holding a name starting with `.wh.`
//! is refused: in a layer such a name means a deletion.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_formats::oci::layer::{WHITEOUT_PREFIX, diff, flatten};
use strata_formats::oci::layout::{Platform, assemble, is_layout, read};
use strata_formats::oci::reference::check_tag;
use strata_formats::oci::spec::{
    ContainerConfig, History, ImageConfig, Manifest, RootFs, media_type, rfc3339, to_json,
};
use strata_formats::oci::{Blob, BlobSink};
use strata_formats::tarball::{TarOptions, write_tree};
use strata_store::Digest;
use strata_store::tree::walk;

use super::{Builtin, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, key};
use crate::platform::DEFAULT_PLATFORM;
use crate::table::{Field, Parse, Rule};

/// `image`: an OCI image layout made from a tree.
pub const RULE: Rule = Rule {
    name: "image",
    doc: "makes an OCI image layout (and docker-archive) whose layer is a tree",
    fields: &[
        Field::value("from", "the tree that becomes the image's layer"),
        Field::value("base", "an image layout the new layer goes on top of"),
        Field::value("tag", "`name:tag` the docker-archive loads as"),
        Field::value(
            "platform",
            "`os/architecture[/variant]` (default linux/amd64)",
        ),
        Field::value(
            "config",
            "the image config: entrypoint, cmd, env, user, ...",
        ),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Image(from_fields(f)?))),
    image_output: true,
    contains_inputs: true,
};

fn default_platform() -> String {
    DEFAULT_PLATFORM.into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub from: From,
    /// An image layout the new layer goes on top of.
    #[serde(default)]
    pub base: Option<From>,
    #[serde(default)]
    pub tag: Option<String>,
    /// `os/architecture[/variant]`.
    #[serde(default = "default_platform")]
    pub platform: String,
    #[serde(default)]
    pub config: Config,
}

/// How containers of the image run (Docker's `Env`, `Entrypoint`, `Cmd`,
/// `WorkingDir`, `User`, `Labels`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        let err = |field: &str, message: String| ParamError::new(field, message);
        if let Some(tag) = &self.tag {
            check_tag(tag).map_err(|m| err("tag", m))?;
        }
        Platform::parse_known(&self.platform).map_err(|m| err("platform", m))?;
        self.config.check().map_err(|m| err("config", m))
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        let mut v = self.from.named(key("from"));
        if let Some(base) = &self.base {
            v.extend(base.named(key("base")));
        }
        v
    }
}

impl Config {
    fn check(&self) -> Result<(), String> {
        let nul = |field: &str, s: &str| {
            if s.contains('\0') {
                Err(format!("config.{field}: {s:?} contains a NUL byte"))
            } else {
                Ok(())
            }
        };
        for (name, value) in &self.env {
            if name.is_empty() || name.contains('=') {
                return Err(format!(
                    "config.env: `{name}` is not a variable name (it must be non-empty, without `=`)"
                ));
            }
            nul("env", name)?;
            nul("env", value)?;
        }
        for (field, list) in [("entrypoint", &self.entrypoint), ("cmd", &self.cmd)] {
            for arg in list.iter().flatten() {
                nul(field, arg)?;
            }
        }
        if let Some(dir) = &self.workdir {
            if !dir.starts_with('/') {
                return Err(format!(
                    "config.workdir: `{dir}` is not an absolute path (Docker requires one)"
                ));
            }
            nul("workdir", dir)?;
        }
        if let Some(user) = &self.user {
            if user.is_empty() {
                return Err("config.user: empty (leave it out for root)".into());
            }
            nul("user", user)?;
        }
        for (key, value) in &self.labels {
            if key.is_empty() {
                return Err("config.labels: a label has an empty name".into());
            }
            nul("labels", key)?;
            nul("labels", value)?;
        }
        Ok(())
    }

    /// The base image's config with the fields given here laid over it.
    fn over(&self, base: ContainerConfig) -> ContainerConfig {
        let mut env: Vec<String> = base
            .env
            .into_iter()
            .filter(|e| {
                let name = e.split('=').next().unwrap_or("");
                !self.env.contains_key(name)
            })
            .collect();
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        let mut labels = base.labels;
        labels.extend(self.labels.clone());
        ContainerConfig {
            user: self.user.clone().or(base.user),
            env,
            entrypoint: self.entrypoint.clone().or(base.entrypoint),
            cmd: self.cmd.clone().or(base.cmd),
            working_dir: self.workdir.clone().or(base.working_dir),
            labels,
        }
    }

    fn container_config(&self) -> ContainerConfig {
        ContainerConfig {
            user: self.user.clone(),
            env: self.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            working_dir: self.workdir.clone(),
            labels: self.labels.clone(),
        }
    }
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<Digest, BuiltinError> {
    let cas = ctx.cas;
    let platform = Platform::parse(&p.platform).map_err(BuiltinError::Format)?;
    let what = || String::from(p.from.clone());
    let mut rootfs = ctx.tree(&p.from)?;
    if is_layout(cas, &rootfs)? {
        let base = read(cas, &rootfs, &p.platform).map_err(|e| BuiltinError::Input {
            what: what(),
            reason: format!("is an image layout that cannot be read: {e}"),
        })?;
        rootfs = flatten(cas, &base).map_err(|e| BuiltinError::Input {
            what: what(),
            reason: format!("is an image whose layers cannot be applied: {e}"),
        })?;
    }
    for (path, _) in walk(cas, &rootfs)? {
        if path
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with(WHITEOUT_PREFIX))
        {
            return Err(BuiltinError::Input {
                what: what(),
                reason: format!(
                    "holds `{path}`, which an image layer cannot carry: names starting with \
                     `{WHITEOUT_PREFIX}` mark deletions"
                ),
            });
        }
    }

    let created = rfc3339(ctx.source_date_epoch);
    let opts = TarOptions {
        mtime: ctx.source_date_epoch,
        ..TarOptions::default()
    };
    let base = match &p.base {
        None => None,
        Some(b) => Some(base_image(ctx, b, &p.platform)?),
    };
    let layer_tree = match &base {
        Some(base) => diff(cas, &base.files, &rootfs)?,
        None => rootfs,
    };
    let layer =
        write_tree(cas, &layer_tree, BlobSink::new(cas)?, &opts)?.finish(media_type::OCI_LAYER)?;
    let history = History {
        created: Some(created.clone()),
        created_by: Some("strata image".into()),
        ..History::default()
    };
    let (mut diff_ids, mut layers, mut histories, container) = match base {
        Some(base) => (
            base.config.rootfs.diff_ids,
            base.image.layers,
            base.config.history,
            p.config.over(base.config.config.unwrap_or_default()),
        ),
        None => (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            p.config.container_config(),
        ),
    };
    // The layer is uncompressed: its digest is its diff ID.
    diff_ids.push(layer.sha256.clone());
    histories.push(history);
    layers.push(layer);
    let config = ImageConfig {
        created: Some(created),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        config: Some(container),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        history: histories,
    };
    let config = Blob::from_bytes(cas, media_type::OCI_CONFIG, &to_json(&config))?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        config: config.descriptor(),
        layers: layers.iter().map(Blob::descriptor).collect(),
    };
    let manifest = Blob::from_bytes(cas, media_type::OCI_MANIFEST, &to_json(&manifest))?;
    Ok(assemble(
        cas,
        &manifest,
        &config,
        &layers,
        p.tag.as_deref(),
    )?)
}

/// A base image: its blobs, its config and its files.
struct Base {
    image: strata_formats::oci::layout::Image,
    config: ImageConfig,
    files: Digest,
}

fn base_image(ctx: &Ctx, from: &From, platform: &str) -> Result<Base, BuiltinError> {
    let cas = ctx.cas;
    let what = || String::from(from.clone());
    let tree = ctx.tree(from)?;
    if !is_layout(cas, &tree)? {
        return Err(BuiltinError::Input {
            what: what(),
            reason: "is not an image layout (`base:` takes an `image` or `image-pull` target)"
                .into(),
        });
    }
    let image = read(cas, &tree, platform).map_err(|e| BuiltinError::Input {
        what: what(),
        reason: format!("is an image layout that cannot be read: {e}"),
    })?;
    let config: ImageConfig =
        serde_json::from_slice(&cas.read(&image.config.stored)?).map_err(|e| {
            BuiltinError::Input {
                what: what(),
                reason: format!("has a config that cannot be read: {e}"),
            }
        })?;
    let files = flatten(cas, &image).map_err(|e| BuiltinError::Input {
        what: what(),
        reason: format!("is an image whose layers cannot be applied: {e}"),
    })?;
    Ok(Base {
        image,
        config,
        files,
    })
}

#[cfg(test)]
mod tests;
