//! SPDX 2.3 JSON (spdx.github.io/spdx-spec/v2.3): one package per
//! component, `CONTAINS` and `GENERATED_FROM` relationships from the graph,
//! the document `DESCRIBES` the target; with `--files`, a file entry (SHA-1,
//! which SPDX requires, and SHA-256) for every file of the listed outputs.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::facts::{Component, Facts, Kind, RelationKind};
use crate::{purl, time};

/// The namespace's prefix; the rest is the target and the facts' digest,
/// so one build's document always has one namespace and another build's
/// another.
const NAMESPACE: &str = "https://spdx.org/spdxdocs/strata";

pub fn document(facts: &Facts) -> Value {
    let ids = ids(facts);
    let mut packages = Vec::new();
    let mut files = Vec::new();
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": ids[&facts.target],
    })];
    for (label, c) in &facts.components {
        let id = &ids[label];
        let listed = c.files.as_deref().unwrap_or(&[]);
        packages.push(package(label, id, c, !listed.is_empty()));
        for (n, f) in listed.iter().enumerate() {
            let file_id = format!("{id}-file-{n}");
            files.push(json!({
                "SPDXID": file_id,
                "fileName": format!("./{}", f.path),
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": f.sha1},
                    {"algorithm": "SHA256", "checksumValue": f.sha256},
                ],
                "licenseConcluded": "NOASSERTION",
                "copyrightText": "NOASSERTION",
            }));
            relationships.push(json!({
                "spdxElementId": id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": file_id,
            }));
        }
    }
    for r in &facts.relations {
        relationships.push(json!({
            "spdxElementId": ids[&r.from],
            "relationshipType": match r.kind {
                RelationKind::Contains => "CONTAINS",
                RelationKind::GeneratedFrom => "GENERATED_FROM",
            },
            "relatedSpdxElement": ids[&r.to],
        }));
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": facts.target,
        "documentNamespace": format!("{NAMESPACE}/{}-{}", slug(&facts.target), facts.digest()),
        "creationInfo": {
            "created": time::rfc3339(facts.source_date_epoch),
            "creators": [format!("Tool: strata-{}", facts.tool_version)],
            "comment": "Made from Strata's build record and store; `created` is the build's SOURCE_DATE_EPOCH.",
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !files.is_empty() {
        doc["files"] = Value::Array(files);
    }
    doc
}

fn package(label: &str, id: &str, c: &Component, files_analyzed: bool) -> Value {
    let mut p = json!({
        "SPDXID": id,
        "name": c.name(label),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": files_analyzed,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    });
    if let Some(v) = c.version() {
        p["versionInfo"] = v.into();
    }
    let mut comment = format!("strata target `{label}`, rule `{}`", c.rule);
    if let Some(o) = &c.output {
        comment.push_str(&format!(", output tree {o}"));
    }
    let mut refs = Vec::new();
    match &c.kind {
        Kind::Deb(d) => {
            p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": d.sha256}]);
            if let Some(url) = &d.url {
                p["downloadLocation"] = url.as_str().into();
            }
            p["sourceInfo"] = match &d.source_version {
                Some(v) => format!("built from Debian source package {} {v}", d.source),
                None => format!("built from Debian source package {}", d.source),
            }
            .into();
            refs.push(purl::deb(d));
        }
        Kind::Image(i) => {
            refs.push(purl::oci(i, label));
            comment.push_str(&format!(", image for {}", i.platform));
        }
        Kind::Fetched { files, urls } => {
            if let [one] = files.as_slice() {
                p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": one.sha256}]);
            }
            if let [url] = urls.as_slice() {
                p["downloadLocation"] = url.as_str().into();
            }
            for f in files {
                comment.push_str(&format!(
                    "; fetched {} sha256:{}{}",
                    f.path,
                    f.sha256,
                    f.url
                        .as_deref()
                        .map(|u| format!(" from {u}"))
                        .unwrap_or_default()
                ));
            }
        }
        Kind::Built => {
            if !c.built_from.is_empty() {
                let from: Vec<String> = c
                    .built_from
                    .iter()
                    .map(|s| format!("{} {}", s.name, s.version))
                    .collect();
                p["sourceInfo"] =
                    format!("compiled from Debian source package {}", from.join(", ")).into();
                refs.push(purl::generic(label, c.version()));
            }
        }
    }
    if let Some(file) = single_file(c) {
        p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": file}]);
    }
    p["comment"] = comment.into();
    if !refs.is_empty() {
        p["externalRefs"] = refs
            .into_iter()
            .map(|r| {
                json!({
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": r,
                })
            })
            .collect();
    }
    p
}

/// The SHA-256 of an output that is one file (an archive, a bundle), when
/// its files are known.
fn single_file(c: &Component) -> Option<&str> {
    match c.files.as_deref()? {
        [one] if matches!(c.kind, Kind::Built) => Some(&one.sha256),
        _ => None,
    }
}

/// `SPDXRef-<label>`, with what SPDX IDs may not hold (letters, digits, `.`
/// and `-` only) replaced, made unique in label order.
fn ids(facts: &Facts) -> BTreeMap<String, String> {
    let mut taken = std::collections::BTreeSet::new();
    facts
        .components
        .keys()
        .map(|label| {
            let base = format!("SPDXRef-{}", slug(label));
            let mut id = base.clone();
            let mut n = 2;
            while !taken.insert(id.clone()) {
                id = format!("{base}-{n}");
                n += 1;
            }
            (label.clone(), id)
        })
        .collect()
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}
