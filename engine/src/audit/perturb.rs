//! What `strata audit` asks of a rebuild: the perturbation each step runs
//! under (applied by the executors, `strata_exec::perturb`), the outputs
//! dependents are fed, and the process environment built-in rules see.

use std::collections::{BTreeMap, BTreeSet};

use strata_store::Digest;

pub use strata_exec::perturb::{LANG, Perturbation, TZ, UMASK};

/// What the scheduler needs to run a graph as an audit: no action-cache
/// lookups (but for outputs pinned by digest) or writes, other scratch
/// folder names, and perturbed steps.
#[derive(Clone, Debug, Default)]
pub struct AuditRun {
    pub perturbation: Perturbation,
    /// Outputs dependents get instead of the audit's own: those of targets
    /// declared non-reproducible, so their dependents are judged on their
    /// own merits.
    pub feed: BTreeMap<String, Digest>,
    /// Targets whose input folders are not reordered (too large to copy).
    pub keep_dir_order: BTreeSet<String>,
}

impl AuditRun {
    /// Scratch folders of an audit have their own names: the step runs at
    /// another path, and a build's clean-up never meets them.
    pub const SCRATCH_PREFIX: &'static str = "audit-";

    /// The perturbation of one target.
    pub fn for_target(&self, name: &str) -> Perturbation {
        let mut p = self.perturbation.clone();
        if self.keep_dir_order.contains(name) {
            p.reverse_dirs = false;
        }
        p
    }
}

/// Values of the audit process's own environment that `pin_process_env`
/// replaced, to be read in their place (by `!ENV` in BUILD.yaml).
pub type OriginalEnv = Vec<(String, Option<String>)>;

/// Sets `TZ`, `LANG` and `LC_ALL` of this process to the perturbed values,
/// so built-in rules (which run in-process) are audited under them too, and
/// returns what they were.
///
/// # Safety
/// Changes the process environment: call it before any other thread starts.
pub unsafe fn pin_process_env() -> OriginalEnv {
    let mut original = Vec::new();
    for (name, value) in [("TZ", TZ), ("LANG", LANG), ("LC_ALL", LANG)] {
        original.push((name.to_string(), std::env::var(name).ok()));
        // SAFETY: the caller guarantees no other thread runs.
        unsafe { std::env::set_var(name, value) };
    }
    original
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_too_large_to_reorder_keep_their_folder_order() {
        let kept = AuditRun {
            keep_dir_order: ["big".to_string()].into(),
            ..AuditRun::default()
        };
        assert!(!kept.for_target("big").reverse_dirs);
        assert!(kept.for_target("small").reverse_dirs);
    }
}
