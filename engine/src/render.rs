//! `strata graph`: the build graph of the requested targets, as Graphviz DOT
//! or JSON.
//!
//! Both forms are deterministic: nodes in name order, and edges in name order
//! (DOT) or in declaration order (JSON `deps`, the order the key uses), so a
//! graph can be diffed or checked in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::BuildError;
use crate::plan::Plan;
use strata_load::LoadOptions;
use strata_load::matrix::MatrixRequest;

/// Loads `build_file` and selects `targets` with their dependencies, exactly
/// as `strata build` would (empty: every target that is not a hidden stage
/// step; hidden steps still appear as dependencies), in every configuration
/// of `matrix`.
pub fn plan(
    build_file: &Path,
    opts: &LoadOptions,
    matrix: &MatrixRequest,
    targets: &[String],
) -> Result<Plan, BuildError> {
    Plan::load(build_file, opts, matrix, targets)
}

/// The plan's nodes in label order.
fn by_label(plan: &Plan) -> Vec<usize> {
    let mut nodes: Vec<usize> = (0..plan.nodes.len()).collect();
    nodes.sort_by(|a, b| plan.nodes[*a].label.cmp(&plan.nodes[*b].label));
    nodes
}

/// Graphviz DOT: one box per target labelled with its name and rule (hidden
/// stage steps dashed), and an edge from each dependency to its dependent,
/// so the picture reads in the direction data flows. In a matrix build a
/// node shows the configurations it belongs to; one every configuration
/// shares (built once) is drawn bold.
pub fn dot(plan: &Plan) -> String {
    let mut out = String::from(
        "// strata graph: an edge points from a dependency to the target that uses it\n\
         digraph strata {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for n in by_label(plan) {
        let t = plan.target(n);
        let node = &plan.nodes[n];
        let mut style = Vec::new();
        if t.hidden {
            style.push("dashed");
        }
        let mut label = format!("{}\n{}", node.label, t.work.rule_name());
        if plan.matrix {
            let members = plan.members_of(n);
            if members.len() > 1 {
                style.push("bold");
                let _ = write!(label, "\nshared: {}", members.join(", "));
            }
        }
        let style = match style.as_slice() {
            [] => String::new(),
            [one] => format!(", style={one}"),
            many => format!(", style={}", quote(&many.join(","))),
        };
        let _ = writeln!(
            out,
            "  {} [label={}{style}];",
            quote(&node.label),
            quote(&label)
        );
    }
    let mut edges: Vec<(&str, &str)> = plan
        .nodes
        .iter()
        .flat_map(|node| {
            node.deps
                .iter()
                .map(move |(_, d)| (plan.nodes[*d].label.as_str(), node.label.as_str()))
        })
        .collect();
    edges.sort_unstable();
    for (from, to) in edges {
        let _ = writeln!(out, "  {} -> {};", quote(from), quote(to));
    }
    out.push_str("}\n");
    out
}

/// A DOT string literal. Target names are plain today, but a label must
/// never be able to end the literal early.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// `{"targets": {"name": {"rule": "...", "deps": [...]}}}`, with `deps` in
/// declaration order. In a matrix build every node also has `target` (its
/// name in BUILD.yaml) and `configurations` (those that share it), and the
/// document has `configurations` and `shared` (nodes built once for
/// several).
pub fn json(plan: &Plan) -> serde_json::Value {
    let targets: BTreeMap<&str, serde_json::Value> = by_label(plan)
        .into_iter()
        .map(|n| {
            let t = plan.target(n);
            let node = &plan.nodes[n];
            let deps: Vec<&str> = node
                .deps
                .iter()
                .map(|(_, d)| plan.nodes[*d].label.as_str())
                .collect();
            let mut v = serde_json::json!({"rule": t.work.rule_name(), "deps": deps});
            if plan.matrix {
                v["target"] = t.name.clone().into();
                v["configurations"] = plan.members_of(n).into();
            }
            (node.label.as_str(), v)
        })
        .collect();
    let mut doc = serde_json::json!({ "targets": targets });
    if plan.matrix {
        doc["configurations"] = plan.config_paths().into();
        doc["shared"] = plan.shared().into();
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_keeps_a_label_inside_its_literal() {
        assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(quote("build#2"), "\"build#2\"");
    }
}
