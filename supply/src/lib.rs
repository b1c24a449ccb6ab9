//! Supply-chain documents from the facts of a build: SBOMs (SPDX 2.3 JSON,
//! CycloneDX 1.6 JSON), the in-toto Statement v1 with a SLSA provenance v1
//! predicate, and DSSE envelopes around it (ed25519, the keys of
//! `strata cache keygen`).
//!
//! Pure: `Facts` in, bytes out. The engine gathers the facts from a build's
//! records and the store (`strata_engine::supply`); nothing here reads a
//! store, a clock, the network or the environment. The same facts give the
//! same bytes: times come from the facts' SOURCE_DATE_EPOCH, the SPDX
//! namespace and the CycloneDX serial number from a digest of the facts,
//! and every list is sorted.

pub mod cyclonedx;
pub mod deb;
pub mod dsse;
pub mod facts;
pub mod keys;
pub mod provenance;
pub mod purl;
pub mod spdx;
mod time;

pub use facts::{Component, Facts, Kind, Relation, RelationKind};

/// The formats `strata sbom --format` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbomFormat {
    SpdxJson,
    CycloneDxJson,
}

impl SbomFormat {
    pub const NAMES: [&str; 2] = ["spdx-json", "cyclonedx-json"];

    pub fn parse(s: &str) -> Option<SbomFormat> {
        match s {
            "spdx-json" => Some(SbomFormat::SpdxJson),
            "cyclonedx-json" => Some(SbomFormat::CycloneDxJson),
            _ => None,
        }
    }

    /// The document, pretty JSON with a final newline.
    pub fn render(self, facts: &Facts) -> String {
        let doc = match self {
            SbomFormat::SpdxJson => spdx::document(facts),
            SbomFormat::CycloneDxJson => cyclonedx::document(facts),
        };
        pretty(&doc)
    }
}

/// Pretty JSON with a final newline. Documents are built in a fixed order
/// (sorted maps, or insertion order should a dependency turn on serde_json's
/// `preserve_order`), so equal facts are equal bytes.
pub fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON values serialize");
    s.push('\n');
    s
}
