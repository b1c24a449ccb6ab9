//! What a build says about one target and everything that went into it:
//! the input of every document this crate writes.
//!
//! Components are keyed by the target's label in the build record; the
//! relations between them come from the graph (which target's output went
//! into which). Everything is sorted, so equal builds give equal facts.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// The described target: its label in the build record.
    pub target: String,
    /// The build's SOURCE_DATE_EPOCH: the only time the documents hold.
    pub source_date_epoch: u64,
    /// The store's digest function (`blake3`), of `output` and `sources`.
    pub digest_function: String,
    /// Strata's version, the documents' creator.
    pub tool_version: String,
    /// The target and every target its output was made from, by label.
    pub components: BTreeMap<String, Component>,
    pub relations: BTreeSet<Relation>,
    /// The build's variables as keys see them (a secret as its hash only);
    /// empty when the record does not hold them (a matrix build).
    pub vars: BTreeMap<String, String>,
    /// Every source file of the closure's keys: `<target>/<path>` -> digest.
    pub sources: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// The rule (`extract`, `rootfs`, `run`, ...).
    pub rule: String,
    /// `<function>:<hex>` of the output tree.
    pub output: Option<String>,
    /// The key's hex digest.
    pub key: Option<String>,
    pub kind: Kind,
    /// Source packages this step compiled (a tool built from Debian source
    /// packages), found through its inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub built_from: Vec<SourcePackage>,
    /// Every file of the output with its SHA-256: always for the described
    /// target, for the others with `--files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileFact>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Kind {
    /// A Debian binary package unpacked by `extract`.
    Deb(DebPackage),
    /// A fixed-output step (`output_digest`): files fetched from outside.
    Fetched {
        files: Vec<FetchedFile>,
        /// Every URL its command names.
        urls: Vec<String>,
    },
    /// An `image-pull`: an image pinned by digest.
    Image(PulledImage),
    /// Anything else Strata made (a rootfs, an archive, a compiled tool).
    Built,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebPackage {
    /// `Package:` of the control file.
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// `Source:` without its version (the package's own name when absent).
    pub source: String,
    /// The version in `Source: name (version)`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// SHA-256 of the .deb, hex.
    pub sha256: String,
    /// Where it was fetched from, when the step that fetched it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchedFile {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A Debian source package's `.dsc`: its name and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_package: Option<SourcePackage>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePackage {
    pub name: String,
    pub version: String,
    /// The label of the fetch that holds its `.dsc`.
    pub fetched_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PulledImage {
    /// `host/name@sha256:<hex>` as written, when the record has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `sha256:<hex>` of the manifest or index.
    pub digest: String,
    /// `os/arch`.
    pub platform: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFact {
    pub path: String,
    pub sha256: String,
    /// SPDX requires a SHA-1 of every file it lists.
    pub sha1: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relation {
    pub from: String,
    pub kind: RelationKind,
    pub to: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    /// `from`'s output holds `to`'s (a rootfs its layers, an archive its
    /// files, an image its root file system).
    Contains,
    /// `from` was made from `to` without holding it (a step's inputs, an
    /// extract's archive).
    GeneratedFrom,
}

impl FileFact {
    /// The fact of a file at `path` holding `bytes`.
    pub fn of(path: String, bytes: &[u8]) -> FileFact {
        FileFact {
            path,
            sha256: hex::encode(Sha256::digest(bytes)),
            sha1: sha1_smol::Sha1::from(bytes).digest().to_string(),
            size: bytes.len() as u64,
        }
    }
}

impl Facts {
    /// SHA-256 of the facts' canonical JSON, without the variables (which
    /// no SBOM shows): what the SPDX namespace and the CycloneDX serial
    /// number are derived from, so they name the content, and an SBOM made
    /// in the build (the `sbom` rule) is the one `strata sbom` prints.
    pub fn digest(&self) -> String {
        let without_vars = Facts {
            vars: BTreeMap::new(),
            ..self.clone()
        };
        let bytes = serde_json::to_vec(&without_vars).expect("facts serialize");
        hex::encode(Sha256::digest(bytes))
    }

    /// The described component.
    pub fn root(&self) -> Option<&Component> {
        self.components.get(&self.target)
    }

    /// Labels reachable from the target through `Contains` only: what is
    /// inside the output, as opposed to what only helped make it.
    pub fn contained(&self) -> BTreeSet<&str> {
        let mut seen = BTreeSet::from([self.target.as_str()]);
        let mut todo = vec![self.target.as_str()];
        while let Some(at) = todo.pop() {
            for r in self.relations_from(at) {
                if r.kind == RelationKind::Contains && seen.insert(r.to.as_str()) {
                    todo.push(r.to.as_str());
                }
            }
        }
        seen
    }

    pub fn relations_from<'a>(&'a self, label: &'a str) -> impl Iterator<Item = &'a Relation> {
        self.relations.iter().filter(move |r| r.from == label)
    }
}

impl Component {
    /// The name documents give the component: a package's or image's own,
    /// else the target's label.
    pub fn name<'a>(&'a self, label: &'a str) -> &'a str {
        match &self.kind {
            Kind::Deb(d) => &d.package,
            Kind::Image(i) => i
                .reference
                .as_deref()
                .map(crate::purl::image_name)
                .unwrap_or(label),
            _ => label,
        }
    }

    /// The version documents give it: a package's, an image's digest, or
    /// the version of the one source package a step compiled.
    pub fn version(&self) -> Option<&str> {
        match &self.kind {
            Kind::Deb(d) => Some(&d.version),
            Kind::Image(i) => Some(&i.digest),
            _ => match self.built_from.as_slice() {
                [one] => Some(&one.version),
                _ => None,
            },
        }
    }
}
