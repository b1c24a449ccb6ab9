//! A `strata worker`'s containers: the actions that name a
//! `container-image` run in the worker's Docker Engine, as `run` steps in
//! an image run locally (no network, the image's environment under the
//! command's), with the staged input root mounted at `/strata`.
//!
//! The image must be in the engine already, for the action's platform: a
//! worker pulls or loads nothing on a client's behalf. An action whose
//! image is missing ends in FAILED_PRECONDITION naming it.

use strata_exec::BoxFuture;
use strata_exec::remote_step::{
    CONTAINER_INPUT_ROOT, ContainerError, ContainerHost, Ended, RemoteCommand, Staged, join,
};
use strata_rules::platform::Platform;

use crate::{ContainerSpec, Engine, LogSink, Mount};

/// The worker's Docker Engine, connected once when the worker starts.
pub struct WorkerContainers {
    engine: Engine,
}

impl WorkerContainers {
    /// Connects to the engine (`DOCKER_HOST`, or the default socket) and
    /// removes containers a killed worker or build left there; `Err` when
    /// no engine answers, and the worker then runs no container actions.
    pub async fn connect() -> Result<WorkerContainers, crate::DockerError> {
        let engine = crate::connect().await?;
        let _ = crate::reap_stale(&engine).await;
        Ok(WorkerContainers { engine })
    }

    async fn run_in(
        &self,
        image: &str,
        platform: &str,
        staged: &Staged,
        command: &RemoteCommand,
    ) -> Result<Ended, ContainerError> {
        let engine_error = |e: crate::DockerError| ContainerError::Engine(e.to_string());
        let wanted = Platform::parse(platform).map_err(ContainerError::Image)?;
        let Some(found) = crate::image::inspect(&self.engine, image)
            .await
            .map_err(engine_error)?
        else {
            return Err(ContainerError::Image(format!(
                "image {image} is not in this worker's Docker Engine (load or pull it there)"
            )));
        };
        if !crate::image::labelled_for(&found, &wanted) {
            return Err(ContainerError::Image(format!(
                "image {image} is for {}/{} in this worker's Docker Engine, not {platform}",
                found.os.as_deref().unwrap_or("?"),
                found.architecture.as_deref().unwrap_or("?"),
            )));
        }
        let spec = ContainerSpec {
            image: found.id.clone().unwrap_or_else(|| image.to_string()),
            argv: command.arguments.clone(),
            env: command.environment.clone(),
            workdir: join(CONTAINER_INPUT_ROOT, &command.working_directory),
            user: None,
            network: false,
            mounts: vec![Mount {
                host: staged.input_root(),
                target: CONTAINER_INPUT_ROOT.to_string(),
                read_only: false,
            }],
        };
        let running = crate::run(
            &self.engine,
            &spec,
            LogSink::files(staged.stdout(), staged.stderr()),
        );
        let reclaim = |staged: &Staged| {
            staged.reclaim_outputs().map_err(|e| {
                ContainerError::Engine(format!("cannot take back the command's outputs: {e}"))
            })
        };
        let finished = match command.timeout {
            // Dropping the run removes its container.
            Some(limit) => match tokio::time::timeout(limit, running).await {
                Ok(finished) => finished,
                Err(_) => {
                    reclaim(staged)?;
                    return Ok(Ended::TimedOut);
                }
            },
            None => running.await,
        }
        .map_err(engine_error)?;
        let code = finished.exit_code;
        finished.container.remove().await.map_err(engine_error)?;
        reclaim(staged)?;
        // A signal shows as 128 + its number, as the engine reports it.
        Ok(Ended::Exited(i32::try_from(code).unwrap_or(-1)))
    }
}

impl ContainerHost for WorkerContainers {
    fn run<'a>(
        &'a self,
        image: &'a str,
        platform: &'a str,
        staged: &'a Staged,
        command: &'a RemoteCommand,
    ) -> BoxFuture<'a, Result<Ended, ContainerError>> {
        Box::pin(self.run_in(image, platform, staged, command))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            let _ = crate::remove_all(&self.engine).await;
        })
    }
}
