//! The in-toto Statement v1 (github.com/in-toto/attestation) with a SLSA
//! provenance v1 predicate (slsa.dev/spec/v1.0/provenance) for one target:
//! its output files as subjects, the target and the build's variables (a
//! secret as its hash only) as external parameters, every fixed-output
//! input, pulled image and the sources as resolved dependencies.
//!
//! It holds no time and no host name: builds that agree agree byte for
//! byte. Strata is no hosted build platform, so the builder id says only
//! that a local Strata made it; signing (`dsse`) says who vouches for it.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::facts::{Facts, Kind};
use crate::purl;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What the external parameters mean: a Strata build of a target.
pub const BUILD_TYPE: &str = "urn:strata:build-type:target:v1";
pub const BUILDER_ID: &str = "urn:strata:builder:local";

pub fn statement(facts: &Facts) -> Value {
    let root = facts.root();
    let mut subject: Vec<Value> = root
        .and_then(|c| c.files.as_ref())
        .into_iter()
        .flatten()
        .map(|f| {
            json!({
                "name": format!("{}/{}", facts.target, f.path),
                "digest": {"sha256": f.sha256},
            })
        })
        .collect();
    if subject.is_empty() {
        // An output without files (an empty tree): the tree itself.
        let (function, hex) = root
            .and_then(|c| c.output.as_deref())
            .and_then(|o| o.split_once(':'))
            .unwrap_or(("blake3", ""));
        subject.push(json!({"name": facts.target, "digest": {function: hex}}));
    }
    json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "target": facts.target,
                    "vars": facts.vars,
                },
                "internalParameters": {
                    "digestFunction": facts.digest_function,
                    "sourceDateEpoch": facts.source_date_epoch,
                },
                "resolvedDependencies": resolved(facts),
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {"strata": facts.tool_version},
                },
                "metadata": {
                    // The target's key: the action that made the subjects.
                    "invocationId": root
                        .and_then(|c| c.key.as_deref())
                        .map(|k| format!("{}:{k}", facts.digest_function))
                        .unwrap_or_default(),
                },
            },
        },
    })
}

/// Fixed-output files (with their URL where the command names it), pulled
/// images, Debian packages given as sources rather than fetched, and one
/// descriptor for all sources: sorted, each once.
fn resolved(facts: &Facts) -> Vec<Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    let mut fetched_sha256 = std::collections::BTreeSet::new();
    for (label, c) in &facts.components {
        match &c.kind {
            Kind::Fetched { files, .. } => {
                for f in files {
                    fetched_sha256.insert(f.sha256.clone());
                    let mut d = json!({
                        "name": format!("{label}/{}", f.path),
                        "digest": {"sha256": f.sha256},
                    });
                    if let Some(url) = &f.url {
                        d["uri"] = url.as_str().into();
                    }
                    out.insert(format!("1 {label}/{}", f.path), d);
                }
            }
            Kind::Image(i) => {
                let hex = i.digest.strip_prefix("sha256:").unwrap_or(&i.digest);
                out.insert(
                    format!("2 {label}"),
                    json!({"uri": purl::oci(i, label), "name": label, "digest": {"sha256": hex}}),
                );
            }
            _ => {}
        }
    }
    for (label, c) in &facts.components {
        if let Kind::Deb(d) = &c.kind
            && !fetched_sha256.contains(&d.sha256)
        {
            out.insert(
                format!("3 {label}"),
                json!({"uri": purl::deb(d), "name": label, "digest": {"sha256": d.sha256}}),
            );
        }
    }
    if !facts.sources.is_empty() {
        out.insert("4".into(), json!({
            "name": "sources",
            "digest": {"sha256": sources_digest(&facts.sources)},
            "annotations": {
                "files": facts.sources.len(),
                "digestOf": format!("the lines `<target>/<path> <{} digest>\\n` of every source file of the keys, sorted", facts.digest_function),
            },
        }));
    }
    out.into_values().collect()
}

/// SHA-256 of the sorted `<target>/<path> <digest>\n` lines.
pub fn sources_digest(sources: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (path, digest) in sources {
        h.update(format!("{path} {digest}\n").as_bytes());
    }
    hex::encode(h.finalize())
}
