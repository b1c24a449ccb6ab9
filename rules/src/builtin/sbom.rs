//! `sbom`: another target's SBOM (SPDX 2.3, CycloneDX 1.6) and its SLSA
//! provenance statement as files of the build, beside `checksums`' ones.
//!
//! ```yaml
//! ramdisk-sbom:
//!   rule: sbom
//!   of: ramdisk                      # the target described
//!   formats: [spdx-json, cyclonedx-json, provenance]   # the default
//!   files: false                     # every component's files too
//!   holds_inputs: [disk]             # run/stage steps that pack their inputs
//! ```
//!
//! Writes `<of>.spdx.json`, `<of>.cdx.json` and `<of>.intoto.json` (the
//! unsigned in-toto statement: signing needs a key, which has no place in
//! a build; `strata provenance --sign-key` signs). A built-in rule sees only
//! its inputs, so the graph's facts are one: the engine gathers them (as
//! `strata sbom` does from a record, here from the running build) once
//! `of` and everything it was made from are done, and hands them to the
//! rule as `deps/.facts/facts.json`, which enters the key like any input.
//! The statement made here lists no variables (they are in no key of
//! this target); `strata provenance` does.

use serde::{Deserialize, Serialize};
use strata_store::Digest;
use strata_store::tree::{Entry, Node, TreeBuilder};
use strata_supply::{Facts, SbomFormat};

use super::{Builtin, from_fields};
use super::{BuiltinError, Ctx, From, Named, ParamError, PathExt, key};
use crate::table::{Field, Parse, Rule};

/// `sbom`: supply-chain documents of another target.
pub const RULE: Rule = Rule {
    name: "sbom",
    doc: "writes another target's SBOM (SPDX, CycloneDX) and SLSA provenance, from the build graph",
    fields: &[
        Field::value("of", "the target described"),
        Field::value(
            "formats",
            "what to write: `spdx-json`, `cyclonedx-json`, `provenance` (default all three)",
        ),
        Field::value(
            "files",
            "list every file of every component with its SHA-256 (default false)",
        ),
        Field::value(
            "holds_inputs",
            "`run` or `stage` targets whose output holds their inputs (a disk image made from a rootfs): contained, not only made from them",
        ),
    ],
    parse: Parse::Builtin(|f| Ok(Builtin::Sbom(from_fields(f)?))),
    image_output: false,
    contains_inputs: false,
};

/// The dependency name the engine gives the facts document; no target can
/// be named so.
pub const FACTS_DEP: &str = ".facts";
/// The facts document's name in it.
pub const FACTS_FILE: &str = "facts.json";

const FORMATS: [&str; 3] = ["spdx-json", "cyclonedx-json", "provenance"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub of: From,
    #[serde(default)]
    pub formats: Option<Vec<String>>,
    #[serde(default)]
    pub files: bool,
    /// `run` and `stage` targets whose output holds their dependencies'.
    #[serde(default)]
    pub holds_inputs: Vec<String>,
}

impl Params {
    pub(super) fn validate(&self) -> Result<(), ParamError> {
        if self.of.target.is_none() || !self.of.path.is_empty() {
            return Err(ParamError::new(
                "of",
                format!(
                    "`{}` is not a target name: an SBOM describes a whole target",
                    String::from(self.of.clone())
                ),
            ));
        }
        let formats = self.formats();
        for (i, f) in formats.iter().enumerate() {
            if !FORMATS.contains(&f.as_str()) {
                return Err(ParamError::at(
                    key("formats").index(i),
                    format!("unknown format `{f}` (known: {})", FORMATS.join(", ")),
                ));
            }
            if formats[..i].contains(f) {
                return Err(ParamError::at(
                    key("formats").index(i),
                    format!("`{f}` is listed twice"),
                ));
            }
        }
        if formats.is_empty() {
            return Err(ParamError::new("formats", "name at least one format"));
        }
        Ok(())
    }

    pub(super) fn inputs(&self) -> Vec<Named<String>> {
        self.of.named(key("of"))
    }

    /// The described target.
    pub fn target(&self) -> &str {
        self.of.target.as_deref().expect("validated: a target")
    }

    fn formats(&self) -> Vec<String> {
        self.formats
            .clone()
            .unwrap_or_else(|| FORMATS.iter().map(|s| s.to_string()).collect())
    }
}

pub fn run(p: &Params, ctx: &Ctx) -> Result<Digest, BuiltinError> {
    let facts_from = From {
        target: Some(FACTS_DEP.into()),
        path: FACTS_FILE.into(),
    };
    let Entry::File { digest, .. } = ctx.entry(&facts_from)? else {
        return Err(BuiltinError::Input {
            what: FACTS_FILE.into(),
            reason: "is not a file".into(),
        });
    };
    let facts: Facts = serde_json::from_slice(&ctx.cas.read(&digest)?)
        .map_err(|e| BuiltinError::Format(format!("the build's facts are unreadable: {e}")))?;
    let mut out = TreeBuilder::new();
    for format in p.formats() {
        let (name, text) = match format.as_str() {
            "spdx-json" => (
                format!("{}.spdx.json", p.target()),
                SbomFormat::SpdxJson.render(&facts),
            ),
            "cyclonedx-json" => (
                format!("{}.cdx.json", p.target()),
                SbomFormat::CycloneDxJson.render(&facts),
            ),
            _ => (
                format!("{}.intoto.json", p.target()),
                strata_supply::pretty(&strata_supply::provenance::statement(&facts)),
            ),
        };
        let blob = ctx.cas.put_bytes(text.as_bytes())?;
        out.insert(&name, Node::file(blob, false))
            .map_err(BuiltinError::Format)?;
    }
    Ok(out.store(ctx.cas)?)
}
