//! Phase 2, graph: targets and their dependencies as a checked DAG.

use std::collections::HashMap;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use strata_load::diag::{At, did_you_mean};
use strata_load::{ConfigError, Target, Workspace};

/// The dependency graph of a workspace. Edges point from a dependency to its
/// dependents; node weights index `Workspace::targets`.
pub struct Graph {
    pub dag: DiGraph<usize, ()>,
    by_name: HashMap<String, NodeIndex>,
    /// Every node, dependencies first.
    order: Vec<NodeIndex>,
}

impl Graph {
    /// Builds the graph, reporting unknown dependencies and cycles.
    pub fn build(ws: &Workspace) -> Result<Graph, Vec<ConfigError>> {
        let at = At {
            sources: &ws.sources,
        };
        let edges = ws.targets.iter().map(|t| t.deps.len()).sum();
        let mut dag = DiGraph::with_capacity(ws.targets.len(), edges);
        let mut by_name = HashMap::with_capacity(ws.targets.len());
        for (i, t) in ws.targets.iter().enumerate() {
            by_name.insert(t.name.clone(), dag.add_node(i));
        }
        let mut errors = Vec::new();
        for (i, t) in ws.targets.iter().enumerate() {
            for dep in &t.deps {
                match by_name.get(&dep.value) {
                    Some(&d) => {
                        dag.add_edge(d, NodeIndex::new(i), ());
                    }
                    None => {
                        // In name order, as ties between suggestions go to the first.
                        let mut names: Vec<&str> = by_name.keys().map(String::as_str).collect();
                        names.sort_unstable();
                        let hint = did_you_mean(&dep.value, names).unwrap_or_else(|| {
                            "dependencies name targets of this workspace".to_string()
                        });
                        errors.push(at.error(
                            dep.loc,
                            format!(
                                "target `{}` depends on unknown target `{}`",
                                t.name, dep.value
                            ),
                            "unknown target",
                            Some(hint),
                        ));
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Cheaper than the strongly connected components, found below only
        // to name a cycle.
        let order = petgraph::algo::toposort(&dag, None)
            .ok()
            .unwrap_or_default();
        let graph = Graph {
            dag,
            by_name,
            order,
        };
        if graph.order.len() < graph.dag.node_count()
            && let Some(cycle) = graph.find_cycle()
        {
            let names: Vec<&str> = cycle
                .iter()
                .map(|&n| ws.targets[graph.dag[n]].name.as_str())
                .collect();
            let first: &Target = &ws.targets[graph.dag[cycle[0]]];
            let second = names.get(1).copied().unwrap_or(names[0]);
            let loc = first
                .deps
                .iter()
                .find(|d| d.value == second)
                .map(|d| d.loc)
                .unwrap_or(first.loc);
            let mut shown = names.clone();
            shown.push(names[0]);
            return Err(vec![at.error(
                loc,
                format!("dependency cycle: {}", shown.join(" -> ")),
                "this dependency closes the cycle",
                Some("a target cannot depend on itself, directly or through other targets; remove one of these dependencies".into()),
            )]);
        }
        Ok(graph)
    }

    pub fn node(&self, name: &str) -> Option<NodeIndex> {
        self.by_name.get(name).copied()
    }

    /// A cycle as `[a, b, c]` meaning a depends on b, b on c, c on a.
    fn find_cycle(&self) -> Option<Vec<NodeIndex>> {
        // Tarjan gives strongly connected components; a cycle lives in one with
        // more than one node, or a node with an edge to itself.
        for scc in petgraph::algo::tarjan_scc(&self.dag) {
            if scc.len() == 1 && !self.dag.contains_edge(scc[0], scc[0]) {
                continue;
            }
            let mut members: Vec<NodeIndex> = scc.clone();
            members.sort();
            let start = members[0];
            // Walk "depends on" edges (incoming) inside the component until a
            // node repeats.
            let mut path = vec![start];
            let mut cur = start;
            loop {
                let next = self
                    .dag
                    .neighbors_directed(cur, Direction::Incoming)
                    .filter(|n| members.binary_search(n).is_ok())
                    .min()
                    .expect("a node of a cycle has a predecessor in it");
                if let Some(pos) = path.iter().position(|&p| p == next) {
                    return Some(path.split_off(pos));
                }
                path.push(next);
                cur = next;
            }
        }
        None
    }

    /// The requested nodes and everything they depend on, in topological order.
    pub fn closure(&self, roots: &[NodeIndex]) -> Vec<NodeIndex> {
        let mut wanted = vec![false; self.dag.node_count()];
        let mut stack: Vec<NodeIndex> = roots.to_vec();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut wanted[n.index()], true) {
                continue;
            }
            stack.extend(self.dag.neighbors_directed(n, Direction::Incoming));
        }
        self.order
            .iter()
            .copied()
            .filter(|n| wanted[n.index()])
            .collect()
    }

    /// Dependencies of `n`, in declaration order.
    pub fn deps_of<'a>(
        &self,
        ws: &'a Workspace,
        n: NodeIndex,
    ) -> impl Iterator<Item = (NodeIndex, &'a str)> + use<'a, '_> {
        ws.targets[self.dag[n]]
            .deps
            .iter()
            .map(move |d| (self.by_name[&d.value], d.value.as_str()))
    }

    pub fn dependents(&self, n: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.dag.neighbors_directed(n, Direction::Outgoing)
    }
}
