//! Wiring: the executors a build or an audit hands the steps that miss the
//! cache. The engine only sees them through `strata_exec::Executor`.

use std::sync::Arc;

use strata_docker::DockerExecutor;
use strata_engine::gc::{TreeImageCache, TreeImages};
use strata_exec::{Executors, LocalExecutor};
use strata_remote::{ExecutorCli, RemoteExecutor};
use strata_store::Digest;

/// Steps on this machine (processes, built-in rules), then the Docker
/// Engine for container work (connected to only when a step needs it).
pub fn of_this_machine() -> Executors {
    Executors::new(Arc::new(LocalExecutor::new())).with(Arc::new(DockerExecutor::new()))
}

/// As [`of_this_machine`], with a remote execution service ahead of the
/// local executor for the `run` steps it takes, once the build's opener
/// has asked it (`strata_remote::Opener::with_executor`); its steps fall
/// back to the local executor if it goes away. The outputs it returns
/// without their files are fetched from it when needed.
pub fn with_remote(cli: ExecutorCli) -> (Executors, Arc<RemoteExecutor>) {
    let local = Arc::new(LocalExecutor::new());
    let remote = Arc::new(RemoteExecutor::new(cli, local.clone()));
    let executors = Executors::new(local)
        .preferring(remote.clone())
        .with(Arc::new(DockerExecutor::new()))
        .with_blob_source(remote.clone());
    (executors, remote)
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
