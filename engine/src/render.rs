//! `strata graph`: the build graph of the requested targets, as Graphviz DOT
//! or JSON.
//!
//! Both forms are deterministic: nodes in name order, and edges in name order
//! (DOT) or in declaration order (JSON `deps`, the order the key uses), so a
//! graph can be diffed or checked in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use petgraph::graph::NodeIndex;

use crate::build::{self, BuildError};
use crate::graph::Graph;
use crate::load::{self, LoadOptions, Workspace};

/// The requested targets and everything they depend on.
pub struct Plan {
    pub ws: Workspace,
    pub graph: Graph,
    /// Nodes of the closure, in name order.
    pub nodes: Vec<NodeIndex>,
}

/// Loads `build_file` and selects `targets` with their dependencies, exactly
/// as `strata build` would (empty: every target that is not a hidden stage
/// step; hidden steps still appear as dependencies).
pub fn plan(build_file: &Path, opts: &LoadOptions, targets: &[String]) -> Result<Plan, BuildError> {
    let ws = load::load(build_file, opts).map_err(BuildError::Config)?;
    let graph = Graph::build(&ws).map_err(BuildError::Config)?;
    let roots = build::requested(&ws, &graph, targets)?;
    let mut nodes = graph.closure(&roots);
    nodes.sort_by(|a, b| name(&ws, &graph, *a).cmp(name(&ws, &graph, *b)));
    Ok(Plan { ws, graph, nodes })
}

fn name<'a>(ws: &'a Workspace, graph: &Graph, n: NodeIndex) -> &'a str {
    &ws.targets[graph.dag[n]].name
}

/// Graphviz DOT: one box per target labelled with its name and rule (hidden
/// stage steps dashed), and an edge from each dependency to its dependent,
/// so the picture reads in the direction data flows.
pub fn dot(plan: &Plan) -> String {
    let Plan { ws, graph, nodes } = plan;
    let mut out = String::from(
        "// strata graph: an edge points from a dependency to the target that uses it\n\
         digraph strata {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for &n in nodes {
        let t = &ws.targets[graph.dag[n]];
        let style = if t.hidden { ", style=dashed" } else { "" };
        let _ = writeln!(
            out,
            "  {} [label={}{style}];",
            quote(&t.name),
            quote(&format!("{}\n{}", t.name, t.kind.rule_name()))
        );
    }
    let mut edges: Vec<(&str, &str)> = nodes
        .iter()
        .flat_map(|&n| {
            graph
                .deps_of(ws, n)
                .map(move |(_, dep)| (dep, name(ws, graph, n)))
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
/// declaration order.
pub fn json(plan: &Plan) -> serde_json::Value {
    let Plan { ws, graph, nodes } = plan;
    let targets: BTreeMap<&str, serde_json::Value> = nodes
        .iter()
        .map(|&n| {
            let t = &ws.targets[graph.dag[n]];
            let deps: Vec<&str> = graph.deps_of(ws, n).map(|(_, d)| d).collect();
            (
                t.name.as_str(),
                serde_json::json!({"rule": t.kind.rule_name(), "deps": deps}),
            )
        })
        .collect();
    serde_json::json!({ "targets": targets })
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
