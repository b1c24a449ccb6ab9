//! `iso`: an ISO 9660 image with Rock Ridge of a tree, bootable through El
//! Torito (isolinux), made by xorriso.
//!
//! ```yaml
//! cd:
//!   rule: iso
//!   from: cd-root            # a target's output, `target:sub/dir`, or `srcs`
//!   volume_id: TINYIPA       # optional, at most 32 characters
//!   boot: {isolinux: /isolinux}   # optional: El Torito, isolinux.bin there
//!   name: tinyipa.iso        # optional output file name
//! ```
//!
//! As `ext4`, a target of two steps: this built-in rule lays the tree out
//! in-process (`<target>#layout`: each file's content under `files/<n>`,
//! an xorriso command file mapping them into the image in name order with
//! their modes, owners and SOURCE_DATE_EPOCH as every time, and
//! `make.sh`), and a `run` step with `tools: [xorriso]` makes the image in
//! the sandbox. xorriso honours SOURCE_DATE_EPOCH for the volume's dates
//! and UUID. ISO 9660 here holds no device nodes (xorriso cannot make
//! them from nothing): a tree with one is refused naming it.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use strata_store::tree::{Node, TreeBuilder};

use super::volume::{Kind, items, root_meta};
use super::{Builtin, PathExt, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, check_file_name, key};
use crate::table::{Field, Parse, Rule};

/// `iso`: a tree as one ISO 9660 image file.
pub const RULE: Rule = Rule {
    name: "iso",
    doc: "lays a tree out as a reproducible ISO 9660 image with Rock Ridge, bootable through El Torito (xorriso, keyed by version)",
    fields: &[
        Field::value(
            "from",
            "the tree to lay out: `srcs` or a target, optionally a path inside",
        ),
        Field::value("volume_id", "the volume ID, at most 32 characters"),
        Field::value(
            "boot",
            "El Torito: `{isolinux: /isolinux}`, the folder holding isolinux.bin",
        ),
        Field::value(
            "name",
            "the image's file name (default `<from's target>.iso`)",
        ),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Iso(from_fields(f)?))),
    image_output: false,
    // An image of its input tree (a disk image of its partitions) holds it.
    contains_inputs: true,
};

/// The program the image step runs; `tools:` of its `run` step.
pub const TOOLS: &[&str] = &["xorriso"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub from: From,
    #[serde(default)]
    pub volume_id: Option<String>,
    #[serde(default)]
    pub boot: Option<Boot>,
    #[serde(default)]
    pub name: Option<String>,
}

/// How the image boots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// The folder (in the image) holding `isolinux.bin`; the boot catalog
    /// is written beside it as `boot.cat`.
    pub isolinux: String,
}

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        if let Some(name) = &self.name {
            check_file_name("name", name)?;
        }
        if let Some(id) = &self.volume_id
            && (id.is_empty()
                || id.len() > 32
                || !id
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        {
            return Err(ParamError::new(
                "volume_id",
                format!(
                    "`{id}` is not 1 to 32 upper-case letters, digits or `_` (ISO 9660's d-characters)"
                ),
            ));
        }
        if let Some(boot) = &self.boot {
            let dir = boot.isolinux.trim_matches('/');
            if dir.is_empty() || dir.split('/').any(|p| p == ".." || p == ".") {
                return Err(ParamError::at(
                    key("boot").key("isolinux"),
                    format!("`{}` is not a folder inside the image", boot.isolinux),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        self.from.named(key("from"))
    }

    pub fn file_name(&self) -> String {
        super::volume::image_name(&self.name, &self.from, "iso")
    }
}

/// A path as an xorriso command file quotes it: in single quotes, or in
/// double quotes when it holds a single quote (inside quotes the other
/// kind is plain); refused when it holds both or a line break.
fn quoted(path: &str) -> Result<String, BuiltinError> {
    let refuse = |reason: &str| BuiltinError::Refused {
        entry: path.to_string(),
        reason: reason.into(),
    };
    if path.contains(['\n', '\r']) {
        return Err(refuse(
            "a name with a line break cannot be written through xorriso",
        ));
    }
    match (path.contains('\''), path.contains('"')) {
        (false, _) => Ok(format!("'{path}'")),
        (true, false) => Ok(format!("\"{path}\"")),
        (true, true) => Err(refuse(
            "a name with both kinds of quote cannot be written through xorriso",
        )),
    }
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<strata_store::Digest, BuiltinError> {
    let (root, root_meta) = match ctx.entry(&p.from)? {
        strata_store::tree::Entry::Dir { digest, meta } => (digest, root_meta(meta)),
        _ => {
            return Err(BuiltinError::Input {
                what: String::from(p.from.clone()),
                reason: "is not a folder".into(),
            });
        }
    };
    let items = items(ctx.cas, &root)?;
    let epoch = ctx.source_date_epoch;
    let mut out = TreeBuilder::new();
    let mut cmds = String::new();
    let volume_id = p.volume_id.as_deref().unwrap_or("CDROM");
    let _ = writeln!(cmds, "-volid '{volume_id}'");
    cmds.push_str("-rockridge on\n-joliet off\n");
    let attributes = |cmds: &mut String, path: &str, meta: strata_store::tree::Meta| {
        let _ = writeln!(cmds, "-chmod 0{:o} {path} --", meta.mode);
        let _ = writeln!(cmds, "-chown {} {path} --", meta.uid);
        let _ = writeln!(cmds, "-chgrp {} {path} --", meta.gid);
    };
    let mut has_boot = false;
    let boot_bin = p
        .boot
        .as_ref()
        .map(|b| format!("{}/isolinux.bin", b.isolinux.trim_matches('/')));
    for (n, item) in items.iter().enumerate() {
        let path = quoted(&format!("/{}", item.path))?;
        match &item.kind {
            Kind::Dir => {
                let _ = writeln!(cmds, "-mkdir {path}");
            }
            Kind::File { digest } => {
                let _ = writeln!(cmds, "-map files/{n} {path}");
                out.insert(&format!("files/{n}"), Node::file(*digest, false))
                    .map_err(BuiltinError::Format)?;
                has_boot |= boot_bin.as_deref() == Some(item.path.as_str());
            }
            Kind::Symlink { target } => {
                let _ = writeln!(cmds, "-lns {} {path}", quoted(target)?);
            }
            Kind::Device { .. } => {
                return Err(BuiltinError::Refused {
                    entry: item.path.clone(),
                    reason: "an ISO image made here holds no device nodes or FIFOs (xorriso cannot make them); remove it from the tree".into(),
                });
            }
        }
        attributes(&mut cmds, &path, item.meta);
    }
    attributes(&mut cmds, "/", root_meta);
    for kind in ["a", "m", "c"] {
        let _ = writeln!(cmds, "-alter_date_r {kind} ={epoch} / --");
    }
    if let Some(boot) = &p.boot {
        if !has_boot {
            return Err(BuiltinError::Input {
                what: String::from(p.from.clone()),
                reason: format!(
                    "has no `{}`, the El Torito boot image `boot: {{isolinux: {}}}` names",
                    boot_bin.unwrap_or_default(),
                    boot.isolinux
                ),
            });
        }
        let _ = writeln!(
            cmds,
            "-boot_image isolinux dir={}",
            quoted(&format!("/{}", boot.isolinux.trim_matches('/')))?
        );
    }
    let image = p.file_name();
    let make = format!(
        r#"# Made by Strata's `iso` rule: the image from this folder's layout.
set -eu
here=$(dirname "$0")
img="$OUT/{image}"
# xorriso takes the volume's dates and UUID from SOURCE_DATE_EPOCH, which
# the step has; names sort as bytes.
LC_ALL=C
export LC_ALL
cd "$here"
xorriso -no_rc -abort_on FAILURE -return_with SORRY 32 \
  -outdev "stdio:$img" -options_from_file xorriso.cmds -commit
"#
    );
    out.insert(
        "xorriso.cmds",
        Node::file(ctx.cas.put_bytes(cmds.as_bytes())?, false),
    )
    .map_err(BuiltinError::Format)?;
    out.insert(
        "make.sh",
        Node::file(ctx.cas.put_bytes(make.as_bytes())?, false),
    )
    .map_err(BuiltinError::Format)?;
    Ok(out.store(ctx.cas)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_for_xorriso_or_refused() {
        assert_eq!(quoted("/a b").unwrap(), "'/a b'");
        assert_eq!(quoted("/it's").unwrap(), "\"/it's\"");
        assert_eq!(quoted("/say \"hi\"").unwrap(), "'/say \"hi\"'");
        assert!(quoted("/it's \"x\"").is_err());
        assert!(quoted("/a\nb").is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let parse = |json: serde_json::Value| {
            crate::builtin::Builtin::parse("iso", json.as_object().unwrap().clone())
        };
        parse(serde_json::json!({"from": "cd", "volume_id": "TINYIPA", "boot": {"isolinux": "/isolinux"}})).unwrap();
        for (json, field) in [
            (
                serde_json::json!({"from": "cd", "volume_id": "lower"}),
                "volume_id",
            ),
            (
                serde_json::json!({"from": "cd", "boot": {"isolinux": "/"}}),
                "boot",
            ),
            (
                serde_json::json!({"from": "cd", "boot": {"grub": "/boot"}}),
                "boot",
            ),
        ] {
            let e = parse(json.clone()).unwrap_err();
            assert_eq!(e.field(), Some(field), "{json}: {}", e.message);
        }
    }
}
