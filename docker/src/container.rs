//! Running one command in a container, to completion, output streamed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, MountType};
use bollard::query_parameters::{AttachContainerOptions, CreateContainerOptions};
use futures_util::StreamExt;

use super::cleanup::{self, owner_labels};
use super::logs::{LogSink, LogStream, OpenSink};
use super::{DockerError, Engine};

/// A host folder or file shown inside the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// An absolute path on the engine's machine.
    pub host: PathBuf,
    /// An absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// What to run and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// An image ID or reference the engine has (see `ensure_*`).
    pub image: String,
    /// The whole command: the image's entrypoint and command are ignored.
    pub argv: Vec<String>,
    /// Added to the image's environment, overriding same-named variables.
    pub env: Vec<(String, String)>,
    /// An absolute path; "" for the image's own.
    pub workdir: String,
    /// `"uid:gid"`, `"uid"` or a user name of the image; `None` for the
    /// image's own.
    pub user: Option<String>,
    /// `false`: only a loopback interface. `true`: the engine's default
    /// bridge network.
    pub network: bool,
    /// Bind mounts.
    pub mounts: Vec<Mount>,
}

/// A container that ran to completion.
#[derive(Debug)]
pub struct Finished {
    pub exit_code: i64,
    /// The stopped container, removed when this handle is removed or dropped.
    pub container: ContainerHandle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The creation request was sent but not answered: the engine may or
    /// may not have the container.
    Creating,
    Created,
    Removed,
}

/// A container of this process. Dropping the handle schedules a forced
/// removal; [`ContainerHandle::remove`] removes it and waits.
#[derive(Debug)]
pub struct ContainerHandle {
    pub(crate) engine: Engine,
    name: String,
    injected: Vec<String>,
    state: State,
}

impl ContainerHandle {
    /// The container's name (usable wherever the engine takes an ID).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Paths (relative, `/`-separated) where the engine put entries for its
    /// own use that the image did not have to hold: mount targets and the
    /// working directory. With [`super::INJECTED`], what
    /// [`super::restore_injected`] puts back.
    pub fn injected_paths(&self) -> &[String] {
        &self.injected
    }

    /// Removes the container (forced) and waits until it is gone.
    pub async fn remove(mut self) -> Result<(), DockerError> {
        let result = cleanup::remove(&self.engine, &self.name).await;
        if result.is_ok() {
            self.state = State::Removed;
        }
        result
    }
}

impl Drop for ContainerHandle {
    fn drop(&mut self) {
        if self.state != State::Removed {
            cleanup::remove_in_background(
                self.engine.clone(),
                std::mem::take(&mut self.name),
                self.state == State::Creating,
            );
        }
    }
}

/// Runs `spec` to completion: no terminal, no standard input, output into
/// `logs`. The container is labelled as this process's, and is removed if
/// anything fails, or when the returned future is dropped before it ends; on
/// success the caller gets it (stopped) in [`Finished::container`].
pub async fn run(
    engine: &Engine,
    spec: &ContainerSpec,
    logs: LogSink,
) -> Result<Finished, DockerError> {
    run_within(engine, spec, logs, None).await
}

/// As [`run`], stopped at `limit` (from the container's creation): then the
/// container is removed, and waited for, and the error is
/// [`DockerError::TimedOut`].
pub async fn run_within(
    engine: &Engine,
    spec: &ContainerSpec,
    logs: LogSink,
    limit: Option<std::time::Duration>,
) -> Result<Finished, DockerError> {
    let body = create_body(spec)?;
    let mut sink = logs.open().await?;
    let name = new_name();
    // Registered before the creation request, so a Ctrl-C at any instant
    // finds it.
    engine.live().register(&name);
    let mut handle = ContainerHandle {
        engine: engine.clone(),
        name,
        injected: injected_paths(spec),
        state: State::Creating,
    };
    let driving = drive(&mut handle, &spec.image, body, &mut sink);
    let driven = match limit {
        None => driving.await,
        Some(limit) => tokio::time::timeout(limit, driving)
            .await
            .unwrap_or(Err(DockerError::TimedOut { limit })),
    };
    // Flushed whatever happened: a failed step's output is what its user
    // needs most.
    let flushed = sink.finish().await;
    let outcome = driven.and_then(|code| flushed.map(|()| code));
    match outcome {
        Ok(exit_code) => Ok(Finished {
            exit_code,
            container: handle,
        }),
        Err(e) => {
            // The error that stopped the run is the one worth reporting; a
            // failed removal leaves the container to remove_all and reap_stale.
            let _ = handle.remove().await;
            Err(e)
        }
    }
}

async fn drive(
    handle: &mut ContainerHandle,
    image: &str,
    body: ContainerCreateBody,
    sink: &mut OpenSink,
) -> Result<i64, DockerError> {
    let engine = handle.engine.clone();
    let name = handle.name.clone();
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    engine
        .quick()
        .create_container(Some(options), body)
        .await
        .map_err(DockerError::api(format!(
            "creating a container of image {image}"
        )))?;
    handle.state = State::Created;
    // Attached before it starts, so no output is missed.
    let attach = AttachContainerOptions {
        stream: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let attached = engine
        .long()
        .attach_container(&name, Some(attach))
        .await
        .map_err(DockerError::api(format!("attaching to container {name}")))?;
    engine
        .quick()
        .start_container(&name, None)
        .await
        .map_err(DockerError::api(format!(
            "starting container {name} (image {image})"
        )))?;
    let pump = async {
        let mut output = attached.output;
        while let Some(item) = output.next().await {
            let item = item.map_err(DockerError::api(format!(
                "reading the output of container {name}"
            )))?;
            match item {
                LogOutput::StdOut { message } => sink.write(LogStream::Stdout, &message).await?,
                LogOutput::StdErr { message } => sink.write(LogStream::Stderr, &message).await?,
                // Neither a terminal nor standard input is attached.
                LogOutput::StdIn { .. } | LogOutput::Console { .. } => {}
            }
        }
        Ok::<(), DockerError>(())
    };
    let wait = async {
        let what = format!("waiting for container {name}");
        match engine.long().wait_container(&name, None).next().await {
            Some(Ok(answer)) => Ok(answer.status_code),
            // bollard reports a non-zero exit as an error.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(DockerError::api(what)(e)),
            None => Err(DockerError::refused(what, "the engine gave no exit status")),
        }
    };
    // If the output cannot be written, the step is not waited for.
    let ((), code) = tokio::try_join!(pump, wait)?;
    Ok(code)
}

/// The engine's form of `spec`, checked.
fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, DockerError> {
    let bad = |reason: String| DockerError::refused("preparing a container", reason);
    if spec.argv.is_empty() {
        return Err(bad("the command is empty".into()));
    }
    if spec.image.is_empty() {
        return Err(bad("no image".into()));
    }
    let mut env = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
            return Err(bad(format!("`{k}` cannot be an environment variable")));
        }
        env.push(format!("{k}={v}"));
    }
    if !spec.workdir.is_empty() && !is_container_path(&spec.workdir) {
        return Err(bad(format!(
            "working directory `{}` is not an absolute path without `..`",
            spec.workdir
        )));
    }
    let mut mounts = Vec::with_capacity(spec.mounts.len());
    for m in &spec.mounts {
        let host = m
            .host
            .to_str()
            .filter(|h| h.starts_with('/'))
            .ok_or_else(|| {
                bad(format!(
                    "mount source {} is not an absolute UTF-8 path",
                    m.host.display()
                ))
            })?;
        if !is_container_path(&m.target) || m.target.trim_matches('/').is_empty() {
            return Err(bad(format!(
                "mount target `{}` is not an absolute path below `/` without `..`",
                m.target
            )));
        }
        mounts.push(bollard::models::Mount {
            target: Some(m.target.clone()),
            source: Some(host.to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(m.read_only),
            ..Default::default()
        });
    }
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.argv.clone()),
        // An empty (not absent) entrypoint: the image's is not used.
        entrypoint: Some(Vec::new()),
        env: Some(env),
        working_dir: (!spec.workdir.is_empty()).then(|| spec.workdir.clone()),
        user: spec.user.clone(),
        labels: Some(owner_labels()),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(HostConfig {
            network_mode: Some(if spec.network { "bridge" } else { "none" }.into()),
            mounts: Some(mounts),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// An absolute path with no `..`, `.` or NUL.
fn is_container_path(p: &str) -> bool {
    p.starts_with('/') && !p.contains('\0') && p.split('/').all(|c| c != ".." && c != ".")
}

/// Mount targets and the working directory, relative, without duplicates.
fn injected_paths(spec: &ContainerSpec) -> Vec<String> {
    let mut paths: Vec<String> = spec
        .mounts
        .iter()
        .map(|m| m.target.as_str())
        .chain(std::iter::once(spec.workdir.as_str()))
        .map(|p| {
            p.split('/')
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
                .join("/")
        })
        .filter(|p| !p.is_empty())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// A name no other container has: this process, a counter, and randomness
/// (another process elsewhere may have the same PID). The counter is the
/// process's, not a connection's: it only makes names unique, and two
/// executors of one process share the PID in them.
fn new_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!(
        "strata-{}-{}-{:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        h.finish() as u32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            image: "img".into(),
            argv: vec!["/bin/true".into()],
            workdir: "/strata/work".into(),
            ..Default::default()
        }
    }

    #[test]
    fn refuses_what_the_engine_would_misread() {
        let cases: Vec<(&str, ContainerSpec)> = vec![
            (
                "empty command",
                ContainerSpec {
                    argv: vec![],
                    ..spec()
                },
            ),
            (
                "env name with =",
                ContainerSpec {
                    env: vec![("A=B".into(), "c".into())],
                    ..spec()
                },
            ),
            (
                "relative workdir",
                ContainerSpec {
                    workdir: "work".into(),
                    ..spec()
                },
            ),
            (
                "workdir with ..",
                ContainerSpec {
                    workdir: "/a/../etc".into(),
                    ..spec()
                },
            ),
            (
                "relative mount source",
                ContainerSpec {
                    mounts: vec![Mount {
                        host: "rel".into(),
                        target: "/x".into(),
                        read_only: true,
                    }],
                    ..spec()
                },
            ),
            (
                "mount over the root",
                ContainerSpec {
                    mounts: vec![Mount {
                        host: "/tmp".into(),
                        target: "/".into(),
                        read_only: true,
                    }],
                    ..spec()
                },
            ),
        ];
        for (case, s) in cases {
            assert!(create_body(&s).is_err(), "{case} was accepted");
        }
    }

    #[test]
    fn the_body_asks_for_no_terminal_no_stdin_no_network_and_our_labels() {
        let s = ContainerSpec {
            env: vec![("A".into(), "1=2".into())],
            user: Some("1000:1000".into()),
            mounts: vec![Mount {
                host: "/tmp".into(),
                target: "/strata/out".into(),
                read_only: false,
            }],
            ..spec()
        };
        let b = create_body(&s).unwrap();
        assert_eq!(b.tty, Some(false));
        assert_eq!(b.open_stdin, Some(false));
        assert_eq!(b.entrypoint, Some(vec![]));
        assert_eq!(b.env, Some(vec!["A=1=2".to_string()]));
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        let host = b.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        let labels = b.labels.unwrap();
        assert_eq!(labels["strata"], "1");
        assert_eq!(labels["strata.pid"], std::process::id().to_string());
        assert_eq!(
            injected_paths(&s),
            vec!["strata/out".to_string(), "strata/work".to_string()]
        );
    }

    #[test]
    fn names_differ() {
        assert_ne!(new_name(), new_name());
    }
}
