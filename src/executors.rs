//! Wiring: the executors a build or an audit hands the steps that miss the
//! cache. The engine only sees them through `strata_exec::Executor`.

use std::sync::Arc;

use strata_docker::DockerExecutor;
use strata_engine::gc::{TreeImageCache, TreeImages};
use strata_exec::{Executors, LocalExecutor};
use strata_store::Digest;

/// Steps on this machine (processes, built-in rules), then the Docker
/// Engine for container work (connected to only when a step needs it).
pub fn of_this_machine() -> Executors {
    Executors::new(Arc::new(LocalExecutor::new())).with(Arc::new(DockerExecutor::new()))
}

/// The Docker Engine's tree images, for `strata store gc --docker`.
pub struct DockerTreeImages;

impl TreeImageCache for DockerTreeImages {
    fn prune(&self, keep: &dyn Fn(&Digest) -> bool, dry_run: bool) -> Result<TreeImages, String> {
        let r = strata_docker::prune_tree_images(keep, dry_run)?;
        Ok(TreeImages {
            host: r.host,
            removed: r.removed,
            kept: r.kept,
            in_use: r.in_use,
        })
    }
}
