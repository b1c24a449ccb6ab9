//! `archive`: a tar of a tree, optionally compressed.
//!
//! ```yaml
//! bundle:
//!   rule: archive
//!   from: rootfs            # a target's output, `target:sub/dir`, or `srcs`
//!   compression: zstd       # none | gzip (default) | zstd | xz
//!   level: 19               # optional, per codec
//!   name: rootfs.tar.zst    # optional output file name
//!   prefix: opt/app         # optional folder the entries are placed under
//! ```

use serde::{Deserialize, Serialize};
use strata_formats::compress::Compression;
use strata_formats::tarball::{TarOptions, write_tree};
use strata_store::tree::{Node, TreeBuilder};

use super::{Builtin, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, check_file_name, check_level, key};
use crate::table::{Field, Parse, Rule};

/// `archive`: a tree packed into one tar file.
pub const RULE: Rule = Rule {
    name: "archive",
    doc: "packs a tree into one reproducible tar file, compressed or not",
    fields: &[
        Field::value(
            "from",
            "the tree to pack: `srcs` or a target, optionally a path inside",
        ),
        Field::value("compression", "none, gzip, zstd or xz (default gzip)"),
        Field::value("level", "the compression level, within the codec's range"),
        Field::value(
            "name",
            "the archive's file name (default `<from's target>.tar[.ext]`, `srcs.tar[.ext]` from `srcs`)",
        ),
        Field::value("prefix", "a folder every entry is placed under"),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Archive(from_fields(f)?))),
    image_output: false,
    contains_inputs: true,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub from: From,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub level: Option<i32>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
}

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        check_level(self.compression, self.level)?;
        if let Some(name) = &self.name {
            check_file_name("name", name)?;
        }
        if let Some(prefix) = &self.prefix
            && prefix.split('/').any(|p| p == "..")
        {
            return Err(ParamError::new("prefix", "the prefix cannot contain `..`"));
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        self.from.named(key("from"))
    }

    /// The output file name.
    pub fn file_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let stem = self.from.target.clone().unwrap_or_else(|| "srcs".into());
            format!("{stem}.tar{}", self.compression.extension())
        })
    }
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<strata_store::Digest, BuiltinError> {
    let tree = ctx.tree(&p.from)?;
    let opts = TarOptions {
        dot_prefix: false,
        prefix: p
            .prefix
            .clone()
            .unwrap_or_default()
            .trim_matches('/')
            .to_string(),
        mtime: ctx.source_date_epoch,
        owner_names: false,
    };
    let level = p.level.unwrap_or(p.compression.default_level());
    let writer = ctx.cas.writer()?;
    let mut result = Ok(());
    let writer = p.compression.encode(level, writer, |w| {
        result = write_tree(ctx.cas, &tree, w, &opts).map(|_| ());
        Ok(())
    })?;
    result?;
    let blob = writer.finish()?;
    let mut out = TreeBuilder::new();
    out.insert(&p.file_name(), Node::file(blob, false))
        .map_err(BuiltinError::Format)?;
    Ok(out.store(ctx.cas)?)
}
