//! CycloneDX 1.6 JSON (cyclonedx.org/docs/1.6/json): the target is the
//! BOM's `metadata.component`; what its output holds is nested
//! (`components` inside `components`, following `Contains` from the target:
//! a package is nested under the first container that reaches it, in label
//! order, since a bom-ref may appear once); what only helped make it (a
//! fetched source, a build image) is listed with `scope: excluded`. Every
//! relation, nested or not, is also in `dependencies`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::facts::{Component, Facts, Kind};
use crate::{purl, time};

pub fn document(facts: &Facts) -> Value {
    let contained = facts.contained();
    // Each contained label's parent in the nesting: the first container to
    // reach it, breadth first from the target in label order.
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut seen = BTreeSet::from([facts.target.as_str()]);
    let mut queue = std::collections::VecDeque::from([facts.target.as_str()]);
    while let Some(at) = queue.pop_front() {
        for r in facts.relations_from(at) {
            if r.kind == crate::RelationKind::Contains && seen.insert(r.to.as_str()) {
                parent.insert(r.to.as_str(), at);
                queue.push_back(r.to.as_str());
            }
        }
    }
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (child, p) in &parent {
        children.entry(p).or_default().push(child);
    }
    let mut components: Vec<Value> = children
        .get(facts.target.as_str())
        .into_iter()
        .flatten()
        .map(|c| nested(facts, c, &children))
        .collect();
    for (label, c) in &facts.components {
        if !contained.contains(label.as_str()) {
            let mut v = component(label, c);
            v["scope"] = "excluded".into();
            components.push(v);
        }
    }
    let root = facts.root().map(|c| component(&facts.target, c));
    let dependencies: Vec<Value> = facts
        .components
        .keys()
        .map(|label| {
            let on: BTreeSet<&str> = facts.relations_from(label).map(|r| r.to.as_str()).collect();
            json!({"ref": label, "dependsOn": on.into_iter().collect::<Vec<_>>()})
        })
        .collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial(facts),
        "version": 1,
        "metadata": {
            "timestamp": time::rfc3339(facts.source_date_epoch),
            "tools": {"components": [{
                "type": "application",
                "name": "strata",
                "version": facts.tool_version,
            }]},
            "component": root,
        },
        "components": components,
        "dependencies": dependencies,
    })
}

/// `urn:uuid:` of a name-based UUID of the facts' digest: the same content
/// always has the same serial number, other content another.
fn serial(facts: &Facts) -> String {
    let name = format!("strata-sbom:{}:{}", facts.target, facts.digest());
    format!(
        "urn:uuid:{}",
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes())
    )
}

fn nested(facts: &Facts, label: &str, children: &BTreeMap<&str, Vec<&str>>) -> Value {
    let mut v = component(label, &facts.components[label]);
    let inner: Vec<Value> = children
        .get(label)
        .into_iter()
        .flatten()
        .map(|c| nested(facts, c, children))
        .collect();
    if !inner.is_empty() {
        let files = v["components"].as_array().cloned().unwrap_or_default();
        v["components"] = inner.into_iter().chain(files).collect();
    }
    v
}

fn component(label: &str, c: &Component) -> Value {
    let kind = match &c.kind {
        Kind::Deb(_) => "library",
        Kind::Image(_) => "container",
        Kind::Fetched { .. } => "file",
        Kind::Built if c.rule == "image" || c.rule == "docker-data-root" => "container",
        Kind::Built if c.rule == "run" || c.rule == "stage" => "application",
        Kind::Built => "file",
    };
    let mut v = json!({
        "type": kind,
        "bom-ref": label,
        "name": c.name(label),
    });
    if let Some(version) = c.version() {
        v["version"] = version.into();
    }
    let mut props = vec![
        ("strata:target", label.to_string()),
        ("strata:rule", c.rule.clone()),
    ];
    if let Some(o) = &c.output {
        props.push(("strata:output", o.clone()));
    }
    let mut hashes = Vec::new();
    let mut urls = Vec::new();
    match &c.kind {
        Kind::Deb(d) => {
            v["purl"] = purl::deb(d).into();
            hashes.push(d.sha256.clone());
            urls.extend(d.url.clone());
            props.push(("debian:source", d.source.clone()));
            if let Some(sv) = &d.source_version {
                props.push(("debian:source-version", sv.clone()));
            }
            props.push(("debian:architecture", d.architecture.clone()));
        }
        Kind::Image(i) => {
            v["purl"] = purl::oci(i, label).into();
            props.push(("oci:platform", i.platform.clone()));
            if let Some(r) = &i.reference {
                props.push(("oci:reference", r.clone()));
            }
        }
        Kind::Fetched { files, urls: all } => {
            if let [one] = files.as_slice() {
                hashes.push(one.sha256.clone());
            }
            urls.extend(all.iter().cloned());
            for f in files {
                props.push(("strata:fetched", format!("{} sha256:{}", f.path, f.sha256)));
            }
        }
        Kind::Built => {
            for s in &c.built_from {
                props.push((
                    "strata:built-from",
                    format!("{} {} (fetched by {})", s.name, s.version, s.fetched_by),
                ));
            }
            if !c.built_from.is_empty() {
                v["purl"] = purl::generic(label, c.version()).into();
            }
            if let Some([one]) = c.files.as_deref() {
                hashes.push(one.sha256.clone());
            }
        }
    }
    if !hashes.is_empty() {
        v["hashes"] = hashes
            .into_iter()
            .map(|h| json!({"alg": "SHA-256", "content": h}))
            .collect();
    }
    if !urls.is_empty() {
        v["externalReferences"] = urls
            .into_iter()
            .map(|u| json!({"type": "distribution", "url": u}))
            .collect();
    }
    v["properties"] = props
        .into_iter()
        .map(|(n, val)| json!({"name": n, "value": val}))
        .collect();
    if let Some(files) = &c.files {
        v["components"] = files
            .iter()
            .map(|f| {
                json!({
                    "type": "file",
                    "bom-ref": format!("{label}:{}", f.path),
                    "name": f.path,
                    "hashes": [
                        {"alg": "SHA-1", "content": f.sha1},
                        {"alg": "SHA-256", "content": f.sha256},
                    ],
                })
            })
            .collect();
    }
    v
}
