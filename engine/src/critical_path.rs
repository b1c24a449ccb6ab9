//! Which ready step starts first: the one at the head of the longest path of
//! work still to do, so a long chain is not left until the short steps
//! beside it are done (a 5 s + 2 s chain and four 1 s steps take 7 s at
//! `-j2` this way, 9 s when the short steps go first).
//!
//! A step's cost is how long it took when it last ran, from the build
//! records; a step never recorded costs the median of those that were, and
//! with no record at all every step costs the same, so the remaining path
//! is the depth of the graph still below a step. Equal paths keep the
//! graph's order, so the choice is the same on every run.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use petgraph::graph::NodeIndex;

use crate::job::Job;

/// How ready steps are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadyOrder {
    /// The longest remaining path first.
    #[default]
    CriticalPath,
    /// First ready, first started, as before critical paths were estimated:
    /// for benchmarks to compare with (`STRATA_READY_ORDER=fifo`).
    Fifo,
}

impl ReadyOrder {
    /// `STRATA_READY_ORDER=fifo` selects first ready, first started;
    /// anything else, the critical path.
    pub fn from_env() -> ReadyOrder {
        match std::env::var("STRATA_READY_ORDER") {
            Ok(v) if v == "fifo" => ReadyOrder::Fifo,
            _ => ReadyOrder::CriticalPath,
        }
    }
}

/// Gives each step its rank when it becomes ready.
pub struct Ranker {
    ranks: BTreeMap<NodeIndex, Rank>,
    /// With `ReadyOrder::Fifo`, how many steps became ready so far.
    arrivals: Option<usize>,
}

impl Ranker {
    /// `order` is topological (dependencies first); `estimates` are
    /// recorded run times by target name.
    pub fn new(
        jobs: &BTreeMap<NodeIndex, Job>,
        order: &[NodeIndex],
        estimates: &BTreeMap<String, Duration>,
        ready_order: ReadyOrder,
    ) -> Ranker {
        match ready_order {
            ReadyOrder::CriticalPath => Ranker {
                ranks: ranks(jobs, order, estimates),
                arrivals: None,
            },
            ReadyOrder::Fifo => Ranker {
                ranks: BTreeMap::new(),
                arrivals: Some(0),
            },
        }
    }

    /// The rank of `n`, which has just become ready.
    pub fn ready(&mut self, n: NodeIndex) -> Rank {
        if let Some(arrived) = &mut self.arrivals {
            let rank = Rank {
                remaining_ms: 0,
                earlier: Reverse(*arrived),
            };
            *arrived += 1;
            self.ranks.insert(n, rank);
        }
        self.ranks[&n]
    }

    /// The rank `n` was given.
    pub fn of(&self, n: NodeIndex) -> Rank {
        self.ranks[&n]
    }
}

/// A step's place among ready steps: greater starts first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    /// The estimated work, in milliseconds, from this step's start to the
    /// end of the longest chain of dependents it leads.
    pub remaining_ms: u64,
    /// The position in the graph's order: earlier goes first on a tie.
    earlier: Reverse<usize>,
}

/// What a step never recorded is assumed to cost when no step was recorded
/// either (any equal cost would do: the path is then the depth).
const UNRECORDED: u64 = 1_000;

/// The critical-path rank of every node of `order`.
fn ranks(
    jobs: &BTreeMap<NodeIndex, Job>,
    order: &[NodeIndex],
    estimates: &BTreeMap<String, Duration>,
) -> BTreeMap<NodeIndex, Rank> {
    // At least 1 ms each, so that depth still counts among instant steps.
    let recorded = |n: &NodeIndex| {
        estimates
            .get(&jobs[n].name)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
    };
    let mut known: Vec<u64> = order.iter().filter_map(recorded).collect();
    known.sort_unstable();
    let unrecorded = known.get(known.len() / 2).copied().unwrap_or(UNRECORDED);
    let mut remaining: BTreeMap<NodeIndex, u64> = BTreeMap::new();
    for &n in order.iter().rev() {
        let below = jobs[&n]
            .dependents
            .iter()
            .filter_map(|d| remaining.get(d))
            .max()
            .copied()
            .unwrap_or(0);
        let own = recorded(&n).unwrap_or(unrecorded);
        remaining.insert(n, own.saturating_add(below));
    }
    order
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let rank = Rank {
                remaining_ms: remaining[&n],
                earlier: Reverse(i),
            };
            (n, rank)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_rules::Text;
    use strata_rules::Work;
    use strata_rules::builtin::{Builtin, checksums};

    /// Jobs named by `names`, in that (topological) order, with `edges` as
    /// (dependency, dependent) positions.
    fn graph(
        names: &[&str],
        edges: &[(usize, usize)],
    ) -> (BTreeMap<NodeIndex, Job>, Vec<NodeIndex>) {
        let nodes: Vec<NodeIndex> = (0..names.len()).map(NodeIndex::new).collect();
        let jobs = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let job = Job {
                    name: name.to_string(),
                    target: name.to_string(),
                    work: Work::Builtin {
                        rule: Builtin::Checksums(checksums::Params {
                            of: Vec::new(),
                            name: None,
                        }),
                        source_date_epoch: Text::plain("0"),
                    },
                    sources: Vec::new(),
                    deps: edges
                        .iter()
                        .filter(|(_, to)| *to == i)
                        .map(|(from, _)| (names[*from].to_string(), nodes[*from]))
                        .collect(),
                    dependents: edges
                        .iter()
                        .filter(|(from, _)| *from == i)
                        .map(|(_, to)| nodes[*to])
                        .collect(),
                };
                (nodes[i], job)
            })
            .collect();
        (jobs, nodes)
    }

    /// Names from the first to start to the last, among steps all ready.
    fn by_rank(names: &[&str], ranks: &BTreeMap<NodeIndex, Rank>, among: &[usize]) -> Vec<String> {
        let mut v: Vec<(Rank, String)> = among
            .iter()
            .map(|&i| (ranks[&NodeIndex::new(i)], names[i].to_string()))
            .collect();
        v.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
        v.into_iter().map(|(_, n)| n).collect()
    }

    fn ms(pairs: &[(&str, u64)]) -> BTreeMap<String, Duration> {
        pairs
            .iter()
            .map(|(n, ms)| (n.to_string(), Duration::from_millis(*ms)))
            .collect()
    }

    #[test]
    fn without_records_the_deepest_chain_goes_first_and_ties_keep_the_graph_order() {
        // a, b, c alone; x -> y -> z a chain, after them in the graph's order.
        let names = ["a", "b", "c", "x", "y", "z"];
        let (jobs, order) = graph(&names, &[(3, 4), (4, 5)]);
        let r = ranks(&jobs, &order, &BTreeMap::new());
        assert_eq!(by_rank(&names, &r, &[0, 1, 2, 3]), ["x", "a", "b", "c"]);
        assert_eq!(r[&order[3]].remaining_ms, 3 * UNRECORDED);
    }

    #[test]
    fn recorded_durations_outweigh_depth() {
        // slow alone took 5 s; the chain x -> y took 10 ms in all.
        let names = ["x", "y", "slow"];
        let (jobs, order) = graph(&names, &[(0, 1)]);
        let est = ms(&[("x", 4), ("y", 6), ("slow", 5_000)]);
        let r = ranks(&jobs, &order, &est);
        assert_eq!(by_rank(&names, &r, &[0, 2]), ["slow", "x"]);
        assert_eq!(r[&order[0]].remaining_ms, 10);
    }

    #[test]
    fn the_path_follows_the_longest_dependent_and_unrecorded_steps_cost_the_median() {
        // head -> {short, long}; long -> tail. tail was never recorded.
        let names = ["head", "short", "long", "tail", "other"];
        let (jobs, order) = graph(&names, &[(0, 1), (0, 2), (2, 3)]);
        let est = ms(&[
            ("head", 100),
            ("short", 50),
            ("long", 2_000),
            ("other", 2_050),
        ]);
        let r = ranks(&jobs, &order, &est);
        // The median of 50, 100, 2000, 2050 (upper middle) is 2000.
        assert_eq!(r[&order[3]].remaining_ms, 2_000);
        assert_eq!(r[&order[2]].remaining_ms, 4_000);
        assert_eq!(r[&order[0]].remaining_ms, 4_100);
        assert_eq!(by_rank(&names, &r, &[0, 4]), ["head", "other"]);
    }

    #[test]
    fn fifo_ranks_by_arrival_and_ignores_paths() {
        let names = ["a", "x", "y"];
        let (jobs, order) = graph(&names, &[(1, 2)]);
        let est = ms(&[("y", 60_000)]);
        let mut ranker = Ranker::new(&jobs, &order, &est, ReadyOrder::Fifo);
        let (x, a) = (ranker.ready(order[1]), ranker.ready(order[0]));
        assert!(x > a);
        assert_eq!(ranker.of(order[1]), x);
        let mut ranker = Ranker::new(&jobs, &order, &est, ReadyOrder::CriticalPath);
        assert!(ranker.ready(order[1]) > ranker.ready(order[0]));
    }
}
