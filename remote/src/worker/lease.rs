//! One lease: the action it carries fetched, run in the sandbox, its
//! outputs uploaded, and how it ended as the lease's status and result.
//!
//! A command that ran has status OK whatever its exit code (the result
//! says); the status says what kept it from running or finishing: blobs the
//! service lacks (`FAILED_PRECONDITION`, naming them), a malformed action
//! (`INVALID_ARGUMENT`), its timeout (`DEADLINE_EXCEEDED`, with what it
//! wrote so far), or a fault of this worker or the network (`INTERNAL`,
//! `UNAVAILABLE`, which BuildGrid retries on another worker).

use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use bazel_remote_apis::google::protobuf::{Any, Timestamp};
use bazel_remote_apis::google::rpc::Status;
use prost::Message;
use strata_exec::remote_step::{self, ContainerError, Ended, RemoteCommand};
use strata_store::Digest;
use tonic::Code;

use super::Worker;
use super::bots::{PRECONDITION_FAILURE_TYPE, PreconditionFailure, Violation};
use super::inputs::{self, Source};
use super::outputs;
use crate::execution::CONTAINER_IMAGE;

const ACTION_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.Action";
const DIGEST_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.Digest";
const ACTION_RESULT_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ActionResult";

/// Why a lease did not end with a result.
#[derive(Debug)]
pub(crate) enum LeaseError {
    /// Blobs neither this worker nor the service holds.
    Missing(Vec<Digest>),
    /// The action cannot be run as sent.
    Invalid(String),
    /// The action needs what this worker lacks (its container image).
    Precondition(String),
    /// This worker failed; another may not.
    Internal(String),
    /// The service could not be reached or asked to wait.
    Unavailable(String),
}

/// How a lease ended: its status and, when the command ran, its result.
pub(crate) struct Outcome {
    pub status: Status,
    pub result: Option<Any>,
}

impl Outcome {
    fn ran(code: Code, message: String, result: pb::ActionResult) -> Outcome {
        Outcome {
            status: status(code, message),
            result: Some(Any {
                type_url: ACTION_RESULT_TYPE.to_string(),
                value: result.encode_to_vec(),
            }),
        }
    }

    fn failed(error: LeaseError) -> Outcome {
        let (code, message, details) = match error {
            LeaseError::Missing(digests) => {
                let failure = PreconditionFailure {
                    violations: digests
                        .iter()
                        .map(|d| Violation {
                            r#type: "MISSING".to_string(),
                            subject: format!("blobs/{}/{}", d.hex(), d.size_bytes),
                            description: String::new(),
                        })
                        .collect(),
                };
                let listed: Vec<String> = digests.iter().map(|d| d.to_string()).collect();
                (
                    Code::FailedPrecondition,
                    format!(
                        "the CAS lacks {} blob(s) of the action: {}",
                        digests.len(),
                        listed.join(", ")
                    ),
                    vec![Any {
                        type_url: PRECONDITION_FAILURE_TYPE.to_string(),
                        value: failure.encode_to_vec(),
                    }],
                )
            }
            LeaseError::Invalid(m) => (Code::InvalidArgument, m, Vec::new()),
            LeaseError::Precondition(m) => (Code::FailedPrecondition, m, Vec::new()),
            LeaseError::Internal(m) => (Code::Internal, m, Vec::new()),
            LeaseError::Unavailable(m) => (Code::Unavailable, m, Vec::new()),
        };
        Outcome {
            status: Status {
                code: code as i32,
                message,
                details,
            },
            result: None,
        }
    }
}

/// A lease handed back because the worker stops: UNAVAILABLE, which
/// BuildGrid retries.
pub(crate) fn stopped() -> Outcome {
    Outcome::failed(LeaseError::Unavailable(
        "the worker stopped before the action finished".to_string(),
    ))
}

fn status(code: Code, message: String) -> Status {
    Status {
        code: code as i32,
        message,
        details: Vec::new(),
    }
}

/// Runs the lease whose payload is `payload`, to its outcome.
pub(crate) async fn execute(worker: &Worker, payload: Option<&Any>) -> Outcome {
    match run(worker, payload).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::failed(e),
    }
}

async fn run(worker: &Worker, payload: Option<&Any>) -> Result<Outcome, LeaseError> {
    let mut metadata = pb::ExecutedActionMetadata {
        worker: worker.bot_id.clone(),
        worker_start_timestamp: Some(now()),
        ..Default::default()
    };
    let source = Source {
        remote: &worker.remote,
        local: &worker.local,
        function: worker.function,
    };
    let payload =
        payload.ok_or_else(|| LeaseError::Invalid("the lease carries no action".into()))?;
    let action: pb::Action = match payload.type_url.as_str() {
        ACTION_TYPE => pb::Action::decode(payload.value.as_slice())
            .map_err(|e| LeaseError::Invalid(format!("the lease's action does not decode: {e}")))?,
        DIGEST_TYPE => {
            let d = pb::Digest::decode(payload.value.as_slice())
                .ok()
                .and_then(|d| Digest::from_hex(&d.hash, u64::try_from(d.size_bytes).ok()?))
                .ok_or_else(|| {
                    LeaseError::Invalid("the lease's action digest is malformed".into())
                })?;
            let _held = worker.local.hold().await;
            source.ensure(&[d]).await?;
            source.decode(&d, "action")?
        }
        other => {
            return Err(LeaseError::Invalid(format!(
                "the lease carries a {other}, not a REAPI action"
            )));
        }
    };

    metadata.input_fetch_start_timestamp = Some(now());
    let held = worker.local.hold().await;
    let inputs = inputs::fetch(&source, &action).await?;
    let step = remote_command(&inputs.command, &action)?;
    let container = container_of(&action, &inputs.command)?;
    if container.is_some() && worker.containers.is_none() {
        return Err(LeaseError::Precondition(
            "the action names a container-image, and this worker has no Docker Engine".into(),
        ));
    }
    let staged = {
        let (store, prefix, root, step) = (
            worker.local.store().clone(),
            worker.scratch_prefix.clone(),
            inputs.input_root,
            step.clone(),
        );
        tokio::task::spawn_blocking(move || remote_step::stage(&store, &prefix, &root, &step))
            .await
            .map_err(|e| LeaseError::Internal(e.to_string()))?
            .map_err(|e| match e {
                remote_step::StageError::BadPath { .. } => LeaseError::Invalid(e.to_string()),
                e => LeaseError::Internal(format!("cannot stage the input root: {e}")),
            })?
    };
    // The input root is copied out: its blobs may go.
    drop(held);
    metadata.input_fetch_completed_timestamp = Some(now());

    metadata.execution_start_timestamp = Some(now());
    let ended = match (&container, &worker.containers) {
        (Some(c), Some(host)) => host
            .run(&c.image, &c.platform, &staged, &step)
            .await
            .map_err(|e| match e {
                ContainerError::Image(m) => LeaseError::Precondition(m),
                ContainerError::Engine(m) => LeaseError::Internal(m),
            })?,
        _ => remote_step::run(&staged, &worker.isolation, &step)
            .await
            .map_err(LeaseError::Internal)?,
    };
    metadata.execution_completed_timestamp = Some(now());
    let (code, message, exit_code) = match &ended {
        Ended::Exited(code) => (Code::Ok, String::new(), *code),
        Ended::Signaled(signal) => (Code::Ok, String::new(), 128 + signal),
        Ended::TimedOut => (
            Code::DeadlineExceeded,
            format!(
                "the command ran past its timeout of {:?} and was killed",
                step.timeout.unwrap_or_default()
            ),
            -1,
        ),
        Ended::SetupFailed(why) => {
            return Err(LeaseError::Internal(format!(
                "the sandbox could not be set up: {why}"
            )));
        }
    };

    metadata.output_upload_start_timestamp = Some(now());
    let held = worker.local.hold().await;
    let collected = {
        let (store, command) = (worker.local.store().clone(), inputs.command.clone());
        tokio::task::spawn_blocking(move || outputs::collect(store.cas(), &staged, &step, &command))
            .await
            .map_err(|e| LeaseError::Internal(e.to_string()))?
            .map_err(LeaseError::Invalid)?
    };
    worker
        .local
        .added(collected.blobs.iter().map(|d| d.size_bytes).sum());
    worker.upload(&collected.blobs).await?;
    drop(held);
    worker.local.trim().await;
    metadata.output_upload_completed_timestamp = Some(now());
    metadata.worker_completed_timestamp = Some(now());

    let mut result = collected.result;
    result.exit_code = exit_code;
    result.execution_metadata = Some(metadata);
    Ok(Outcome::ran(code, message, result))
}

/// The command as the sandbox runs it. REAPI 2.0 clients (Bazel 4) declare
/// outputs in the fields 2.1 deprecated for `output_paths`.
#[allow(deprecated)]
fn remote_command(command: &pb::Command, action: &pb::Action) -> Result<RemoteCommand, LeaseError> {
    if command.arguments.is_empty() {
        return Err(LeaseError::Invalid("the command has no arguments".into()));
    }
    let output_paths = if command.output_paths.is_empty() {
        command
            .output_files
            .iter()
            .chain(&command.output_directories)
            .cloned()
            .collect()
    } else {
        command.output_paths.clone()
    };
    let timeout = action
        .timeout
        .as_ref()
        .filter(|t| t.seconds > 0 || t.nanos > 0)
        .map(|t| Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32));
    Ok(RemoteCommand {
        arguments: command.arguments.clone(),
        environment: command
            .environment_variables
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect(),
        working_directory: command.working_directory.clone(),
        output_paths,
        timeout,
    })
}

/// The image an action runs in and the platform it runs as.
#[derive(Debug, PartialEq, Eq)]
struct Container {
    /// As the engine takes it: `NAME@sha256:<hex>`, or an image ID.
    image: String,
    /// `linux/arm64`, from the action's `ISA`.
    platform: String,
}

/// The `container-image` property (`docker://REFERENCE`) of the action's
/// platform (or, from an older client, its command's), with the platform
/// its `ISA` names; `None` for an action on the host.
#[allow(deprecated)]
fn container_of(
    action: &pb::Action,
    command: &pb::Command,
) -> Result<Option<Container>, LeaseError> {
    let properties = action
        .platform
        .as_ref()
        .filter(|p| !p.properties.is_empty())
        .or(command.platform.as_ref())
        .map(|p| p.properties.as_slice())
        .unwrap_or_default();
    let value = |name: &str| {
        properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    };
    let Some(image) = value(CONTAINER_IMAGE) else {
        return Ok(None);
    };
    let image = image.strip_prefix("docker://").ok_or_else(|| {
        LeaseError::Invalid(format!(
            "container-image `{image}` is not a Docker image (`docker://NAME@sha256:...`)"
        ))
    })?;
    let architecture = match value("ISA") {
        None => native_architecture(),
        Some("x86-64") => "amd64",
        Some("aarch64") => "arm64",
        Some(other) => {
            return Err(LeaseError::Invalid(format!(
                "ISA `{other}` is not one this worker runs containers of"
            )));
        }
    };
    Ok(Some(Container {
        image: image.to_string(),
        platform: format!("linux/{architecture}"),
    }))
}

/// This machine's architecture as OCI names it.
fn native_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(properties: &[(&str, &str)]) -> pb::Action {
        pb::Action {
            platform: Some(pb::Platform {
                properties: properties
                    .iter()
                    .map(|(name, value)| pb::platform::Property {
                        name: name.to_string(),
                        value: value.to_string(),
                    })
                    .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_action_names_its_image_and_its_isa_the_platform() {
        let command = pb::Command::default();
        let host = action(&[("OSFamily", "linux"), ("ISA", "x86-64")]);
        assert_eq!(container_of(&host, &command).unwrap(), None);
        let arm = action(&[
            ("ISA", "aarch64"),
            ("OSFamily", "linux"),
            ("container-image", "docker://reg.example/tool@sha256:ab"),
        ]);
        assert_eq!(
            container_of(&arm, &command).unwrap(),
            Some(Container {
                image: "reg.example/tool@sha256:ab".into(),
                platform: "linux/arm64".into(),
            })
        );
        let amd = action(&[("ISA", "x86-64"), ("container-image", "docker://sha256:cd")]);
        assert_eq!(
            container_of(&amd, &command).unwrap().unwrap().platform,
            "linux/amd64"
        );
        for bad in [
            action(&[("container-image", "oci://x@sha256:ab")]),
            action(&[
                ("ISA", "riscv64"),
                ("container-image", "docker://sha256:ab"),
            ]),
        ] {
            assert!(matches!(
                container_of(&bad, &command),
                Err(LeaseError::Invalid(_))
            ));
        }
    }
}
