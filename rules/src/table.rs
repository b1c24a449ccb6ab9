//! The rule table: every rule a BUILD.yaml target may name, each declared
//! once, in its own module, as a [`Rule`]: its name, its fields with their
//! docs and how they are read, how its parameters are parsed, and what the
//! loader does for it beyond reading them.
//!
//! The loader derives from this table which fields a rule takes, the lists
//! its messages show, and its rule-specific steps (a field's
//! [`FieldKind`], a rule's [`Rule::image_output`]); it never asks a rule's
//! name. This crate knows no YAML: a built-in rule's fields reach
//! [`Parse::Builtin`] as JSON.

use crate::builtin::{
    Builtin, ParamError, archive, checksums, deb, disk, extract, image, initramfs,
};
use crate::builtin::{ext4, iso, makeself, rootfs, sbom, squashfs, vfat};
use crate::{data_root, image_pull, run, stage};

/// A rule a target names with `rule:`.
#[derive(Debug)]
pub struct Rule {
    /// The name written in BUILD.yaml.
    pub name: &'static str,
    /// What a target of the rule makes, in a line.
    pub doc: &'static str,
    /// The fields it takes besides `rule`, `when`, `srcs` and `deps`, in the
    /// order messages list them.
    pub fields: &'static [Field],
    /// How its parameters are read.
    pub parse: Parse,
    /// Its output is an OCI image for the platform its `platform:` names:
    /// the loader records where `platform`, `from` and `base` are written,
    /// to check the platforms of the images it is made from.
    pub image_output: bool,
    /// Its output holds its dependencies' outputs (a rootfs its layers, an
    /// archive its tree, a data-root its images): SBOMs nest them in it
    /// rather than saying it was made from them.
    pub contains_inputs: bool,
}

/// How a rule's parameters are read.
#[derive(Clone, Copy)]
pub enum Parse {
    // By the loader, from its typed fields: they name targets, images and
    // platforms the whole workspace resolves.
    /// A command ([`crate::run::RunParams`]).
    Run,
    /// Steps in containers ([`crate::stage::StageStep`]).
    Stage,
    /// A pinned registry image ([`crate::image_pull::PullParams`]).
    ImagePull,
    /// A preloaded data-root ([`crate::data_root::DataRootParams`]).
    DataRoot,
    /// By the rule, from its fields as a JSON object (after
    /// interpolation), the error naming the path to the value at fault.
    Builtin(fn(serde_json::Map<String, serde_json::Value>) -> Result<Builtin, ParamError>),
}

impl std::fmt::Debug for Parse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Parse::Run => "Run",
            Parse::Stage => "Stage",
            Parse::ImagePull => "ImagePull",
            Parse::DataRoot => "DataRoot",
            Parse::Builtin(_) => "Builtin",
        })
    }
}

/// One field of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub doc: &'static str,
    pub kind: FieldKind,
}

/// How the loader reads a field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// Read by the loader itself: typed by its schema, or (`from`,
    /// `platform` of the container rules) a value it checks.
    Typed,
    /// Any value, interpolated, with the place of every value inside it,
    /// handed to the rule.
    Value,
    /// A value where the string `git-describe` stands for the workspace's
    /// `git describe`, resolved when loading so that it enters the key.
    GitDescribe,
    /// A list of components, where a `docker-compose` component brings
    /// hidden targets of its own (the images it preloads).
    Components,
}

impl Field {
    pub const fn typed(name: &'static str, doc: &'static str) -> Field {
        Field {
            name,
            doc,
            kind: FieldKind::Typed,
        }
    }

    pub const fn value(name: &'static str, doc: &'static str) -> Field {
        Field {
            name,
            doc,
            kind: FieldKind::Value,
        }
    }
}

/// Every rule, `run` first, then the container rules and the built-in
/// rules.
pub const RULES: &[&Rule] = &[
    &run::RULE,
    &stage::RULE,
    &image_pull::RULE,
    &data_root::RULE,
    &archive::RULE,
    &checksums::RULE,
    &deb::RULE,
    &disk::RULE,
    &ext4::RULE,
    &extract::RULE,
    &image::RULE,
    &initramfs::RULE,
    &iso::RULE,
    &makeself::RULE,
    &rootfs::RULE,
    &sbom::RULE,
    &squashfs::RULE,
    &vfat::RULE,
];

/// Fields every target takes, whatever its rule.
pub const COMMON_FIELDS: &[&str] = &["rule", "when", "srcs", "deps"];

/// The rule named `name`, if Strata knows it.
pub fn rule(name: &str) -> Option<&'static Rule> {
    RULES.iter().copied().find(|r| r.name == name)
}

impl Rule {
    /// Its fields' names, in declaration order.
    pub fn field_names(&self) -> Vec<&'static str> {
        self.fields.iter().map(|f| f.name).collect()
    }

    /// Whether it takes the field `name` (besides the common ones).
    pub fn takes(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name == name)
    }

    /// The first of its fields of `kind`.
    pub fn field_of_kind(&self, kind: FieldKind) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.kind == kind)
    }

    /// Whether it is a built-in rule (one that runs in-process).
    pub fn is_builtin(&self) -> bool {
        matches!(self.parse, Parse::Builtin(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_and_their_field_names_are_unique() {
        let mut names: Vec<&str> = RULES.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RULES.len());
        for r in RULES {
            let mut fields = r.field_names();
            fields.sort();
            fields.dedup();
            assert_eq!(fields.len(), r.fields.len(), "{}", r.name);
            assert!(
                r.fields.iter().all(|f| !COMMON_FIELDS.contains(&f.name)),
                "{}",
                r.name
            );
            assert!(r.fields.iter().all(|f| !f.doc.is_empty()), "{}", r.name);
        }
    }

    #[test]
    fn every_builtin_rule_parses_as_itself() {
        for r in RULES {
            let Parse::Builtin(parse) = r.parse else {
                continue;
            };
            // Empty fields make the rule itself, or an error naming one of
            // its own fields.
            let parsed = parse(serde_json::Map::new());
            if let Err(Some(field)) = parsed.as_ref().map_err(|e| e.field()) {
                assert!(r.takes(field), "{}: {field}", r.name);
            }
            if let Ok(b) = parsed {
                assert_eq!(b.name(), r.name);
            }
        }
        assert_eq!(
            rule("deb")
                .and_then(|r| r.field_of_kind(FieldKind::GitDescribe))
                .map(|f| f.name),
            Some("version")
        );
        assert!(rule("nope").is_none());
    }
}
