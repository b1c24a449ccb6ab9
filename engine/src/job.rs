//! A node of the planned graph as the scheduler, the critical path and the
//! plan see it.

use petgraph::graph::NodeIndex;
use strata_rules::Work;

use crate::inputs::SourceFile;

/// One target as the scheduler sees it.
#[derive(Clone)]
pub struct Job {
    /// What reports, records and traces call the node: the target's name,
    /// or its label in a matrix build (`x86_64/ramdisk`).
    pub name: String,
    /// The target's own name, as keys see it (a fixed-output step is keyed
    /// by it).
    pub target: String,
    pub work: Work,
    pub sources: Vec<SourceFile>,
    /// Dependency names and nodes, in declaration order.
    pub deps: Vec<(String, NodeIndex)>,
    pub dependents: Vec<NodeIndex>,
}
