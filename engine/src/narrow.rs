//! Narrowing a dependency to the paths a step reads from it.
//!
//! A built-in rule or a `copy` step that names `dep:path` reads only that
//! path, so only that path enters its key: a fetch of sixty packages that
//! changes one re-extracts one, and a `copy` of one binary out of a build
//! stage stays cached while the stage's other files change. A step that
//! names a dependency whole (or a `run` step, which may read anything under
//! `$DEPS`) keeps the whole output.

use std::collections::{BTreeMap, BTreeSet};

use strata_rules::builtin::Builtin;
use strata_rules::stage::StageStep;
use strata_store::tree::{Entry, Node, TreeBuilder, list};
use strata_store::{Cas, Digest};

use strata_rules::Work;

/// What each dependency of `work` contributes to its input root: its whole
/// output (`Node::Stored`), or a tree of just the paths the work names.
pub fn dependency_nodes(cas: &Cas, work: &Work, deps: &[(String, Digest)]) -> Vec<(String, Node)> {
    let wanted = paths_read(work, deps);
    deps.iter()
        .map(|(name, output)| {
            let node = wanted
                .get(name)
                .and_then(|paths| narrowed(cas, output, paths))
                .unwrap_or(Node::Stored(*output));
            (name.clone(), node)
        })
        .collect()
}

/// Dependency -> the paths read from it, for dependencies read only
/// through `dep:path` references.
fn paths_read(work: &Work, deps: &[(String, Digest)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut references = Vec::new();
    match work {
        Work::Builtin { rule, .. } => strings_of(rule, &mut references),
        Work::Stage {
            step: StageStep::Copy(copy),
            parent,
            ..
        } => {
            references.push(String::from(copy.from.clone()));
            // The parent is the base of the output: all of it is read.
            references.extend(parent.clone());
        }
        _ => return BTreeMap::new(),
    }
    let mut paths: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut whole: BTreeSet<&str> = BTreeSet::new();
    for (name, _) in deps {
        for r in &references {
            if r == name {
                whole.insert(name);
            } else if let Some(path) = r
                .strip_prefix(name.as_str())
                .and_then(|p| p.strip_prefix(':'))
            {
                let path = path.trim_matches('/');
                if path.is_empty() {
                    whole.insert(name);
                } else {
                    paths
                        .entry(name.clone())
                        .or_default()
                        .insert(path.to_string());
                }
            }
        }
    }
    paths.retain(|name, _| !whole.contains(name.as_str()));
    paths
}

/// Every string in a rule's canonical parameters: references are strings
/// (`dep`, `dep:path`), and a string that merely looks like one can only
/// add a path, never hide one the rule reads.
fn strings_of(rule: &Builtin, out: &mut Vec<String>) {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            serde_json::Value::Object(map) => map.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    if let Ok(v) = serde_json::to_value(rule) {
        walk(&v, out);
    }
}

/// A tree holding only `paths` of `output`, each entry as it is there;
/// `None` (keep the whole output) when a path is missing or passes through
/// something other than a folder, so the rule reports it as it would.
fn narrowed(cas: &Cas, output: &Digest, paths: &BTreeSet<String>) -> Option<Node> {
    let mut tree = TreeBuilder::new();
    for path in paths {
        let node = Node::from(entry_at(cas, output, path)?);
        tree.insert_at(cas, path, node, None).ok()?;
    }
    Some(Node::Dir(tree))
}

fn entry_at(cas: &Cas, root: &Digest, path: &str) -> Option<Entry> {
    let mut entry = Entry::Dir {
        digest: *root,
        meta: None,
    };
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let Entry::Dir { digest, .. } = entry else {
            return None;
        };
        entry = list(cas, &digest)
            .ok()?
            .into_iter()
            .find_map(|(name, e)| (name == part).then_some(e))?;
    }
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_rules::Text;
    use strata_rules::builtin::Builtin;

    fn builtin(rule: &str, fields: serde_json::Value) -> Work {
        let serde_json::Value::Object(map) = fields else {
            panic!("fields are a map")
        };
        Work::Builtin {
            rule: Builtin::parse(rule, map).expect("valid fields"),
            source_date_epoch: Text::plain("0"),
        }
    }

    fn deps(names: &[&str]) -> Vec<(String, Digest)> {
        names
            .iter()
            .map(|n| (n.to_string(), Digest::new([0; 32], 0)))
            .collect()
    }

    #[test]
    fn paths_named_with_a_dependency_are_all_that_is_read() {
        let work = builtin(
            "rootfs",
            serde_json::json!({
                "layers": [{"from": "base"}],
                "components": [
                    {"type": "file", "source": "app:usr/bin/app", "target": "/usr/bin/app"},
                    {"type": "file", "source": "app:/etc/app.conf", "target": "/etc/app.conf"},
                    {"type": "file", "source": "base:etc/motd", "target": "/etc/motd"},
                ],
            }),
        );
        let read = paths_read(&work, &deps(&["app", "base", "unnamed"]));
        assert_eq!(read.len(), 1, "{read:?}");
        assert_eq!(
            read["app"].iter().collect::<Vec<_>>(),
            ["etc/app.conf", "usr/bin/app"]
        );
    }

    #[test]
    fn a_prefix_of_another_name_is_not_a_reference() {
        let work = builtin("extract", serde_json::json!({"from": "debs-extra:x.deb"}));
        let read = paths_read(&work, &deps(&["debs", "debs-extra"]));
        assert!(!read.contains_key("debs"), "{read:?}");
        assert_eq!(read["debs-extra"].iter().collect::<Vec<_>>(), ["x.deb"]);
    }
}
