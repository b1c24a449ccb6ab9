//! Following one execution to its end: `Execute`, then the operation
//! stream; a stream that breaks is resumed with `WaitExecution`, and an
//! operation the server no longer knows (`NOT_FOUND`, say after a restart)
//! is executed again.

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use bazel_remote_apis::google::longrunning::{Operation, operation};
use prost::Message;
use tonic::Code;
use tonic::codec::Streaming;

use crate::client::{GrpcRemote, RemoteError};
use strata_store::{Digest, DigestFunction};

/// How many times a broken stream is resumed or an action executed again
/// before the step fails.
const ATTEMPTS: usize = 5;

/// How an execution ended, as the server said.
pub enum Ended {
    /// The service's answer: a result, or a status saying why there is none.
    Response(Box<pb::ExecuteResponse>),
    /// The operation itself failed (`Operation.error`).
    Error(bazel_remote_apis::google::rpc::Status),
}

/// Executes `action` and follows it until it is done.
pub async fn execute(
    remote: &GrpcRemote,
    function: DigestFunction,
    action: &Digest,
    skip_cache_lookup: bool,
) -> Result<Ended, RemoteError> {
    let what = format!("Execute of action {action}");
    let mut name: Option<String> = None;
    let mut last: Option<tonic::Status> = None;
    for _ in 0..ATTEMPTS {
        let stream = match &name {
            Some(n) => match remote.wait_execution(n).await {
                Ok(s) => Ok(s),
                // Forgotten: execute again (the action cache answers
                // at once if it finished meanwhile).
                Err(s) if s.code() == Code::NotFound => {
                    name = None;
                    remote.execute(function, action, skip_cache_lookup).await
                }
                Err(s) => Err(s),
            },
            None => remote.execute(function, action, skip_cache_lookup).await,
        };
        let stream = match stream {
            Ok(s) => s,
            Err(status) if retried(&status) => {
                last = Some(status);
                continue;
            }
            Err(status) => return Err(remote.execution_error(&what, status)),
        };
        match follow(stream, &mut name).await {
            Ok(Some(ended)) => return Ok(ended),
            // The stream ended or broke before the operation was done.
            Ok(None) => last = None,
            Err(status) if retried(&status) || status.code() == Code::NotFound => {
                if status.code() == Code::NotFound {
                    name = None;
                }
                last = Some(status);
            }
            Err(status) => return Err(remote.execution_error(&what, status)),
        }
    }
    Err(match last {
        Some(status) => remote.execution_error(&what, status),
        None => RemoteError::Protocol {
            server: remote.server().to_string(),
            what,
            reason: format!("the operation stream ended {ATTEMPTS} times before it was done"),
        },
    })
}

/// Statuses after which the same operation may still complete.
fn retried(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Aborted | Code::Cancelled
    ) || std::error::Error::source(status).is_some()
}

/// Reads `stream` until its operation is done (`Some`), or it ends early
/// (`None`); remembers the operation's name for `WaitExecution`.
async fn follow(
    mut stream: Streaming<Operation>,
    name: &mut Option<String>,
) -> Result<Option<Ended>, tonic::Status> {
    while let Some(op) = stream.message().await? {
        if !op.name.is_empty() {
            *name = Some(op.name.clone());
        }
        if !op.done {
            continue;
        }
        return match op.result {
            Some(operation::Result::Error(status)) => Ok(Some(Ended::Error(status))),
            Some(operation::Result::Response(any)) => {
                pb::ExecuteResponse::decode(any.value.as_slice())
                    .map(|r| Some(Ended::Response(Box::new(r))))
                    .map_err(|e| {
                        tonic::Status::internal(format!("the ExecuteResponse does not decode: {e}"))
                    })
            }
            None => Err(tonic::Status::internal(
                "a done operation carries no result",
            )),
        };
    }
    Ok(None)
}
