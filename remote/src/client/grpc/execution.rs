//! REAPI's Execution service over the connection of a [`GrpcRemote`]:
//! what the server can execute (GetCapabilities), `Execute` and
//! `WaitExecution`, each an operation stream the caller follows.

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use bazel_remote_apis::google::longrunning::Operation;
use pb::execution_client::ExecutionClient;
use tonic::codec::Streaming;

use super::{GrpcRemote, MAX_MESSAGE, names};
use crate::client::RemoteError;
use strata_store::{Digest, DigestFunction};

/// What a server says of its execution service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionCapabilities {
    /// Whether it executes at all (a cache-only server says no).
    pub enabled: bool,
    /// The digest functions it executes actions in that Strata knows.
    pub functions: Vec<DigestFunction>,
}

impl GrpcRemote {
    /// Asks GetCapabilities what the instance executes. A wrong instance
    /// name is refused here by servers that check it (BuildGrid).
    pub async fn execution_capabilities(&self) -> Result<ExecutionCapabilities, RemoteError> {
        let capabilities = self
            .capabilities()
            .await
            .map_err(|s| self.status_error("GetCapabilities", s))?;
        let Some(execution) = capabilities.execution_capabilities else {
            return Ok(ExecutionCapabilities {
                enabled: false,
                functions: Vec::new(),
            });
        };
        // The older single field, then the list (REAPI 2.3): an unset
        // single field (0) with an empty list means SHA-256.
        let mut values = execution.digest_functions.clone();
        if execution.digest_function != 0 {
            values.push(execution.digest_function);
        }
        Ok(ExecutionCapabilities {
            enabled: execution.exec_enabled,
            functions: names::functions_of(&values),
        })
    }

    /// Starts executing `action` (stored on the server with everything it
    /// names); the server may answer from its action cache, unless
    /// `skip_cache_lookup` (its cached result proved unusable).
    pub(crate) async fn execute(
        &self,
        function: DigestFunction,
        action: &Digest,
        skip_cache_lookup: bool,
    ) -> Result<Streaming<Operation>, tonic::Status> {
        let mut client =
            ExecutionClient::new(self.transport()).max_decoding_message_size(MAX_MESSAGE);
        let request = pb::ExecuteRequest {
            instance_name: self.instance(),
            skip_cache_lookup,
            action_digest: Some(names::digest(action)),
            execution_policy: None,
            results_cache_policy: None,
            digest_function: names::function_value(function),
            inline_stdout: false,
            inline_stderr: false,
            inline_output_files: Vec::new(),
        };
        // No time limit: an action runs as long as its own timeout allows;
        // the connection's keep-alive notices a server that went away.
        Ok(client.execute(request).await?.into_inner())
    }

    /// Follows the operation `name` again after its stream broke.
    pub(crate) async fn wait_execution(
        &self,
        name: &str,
    ) -> Result<Streaming<Operation>, tonic::Status> {
        let mut client =
            ExecutionClient::new(self.transport()).max_decoding_message_size(MAX_MESSAGE);
        let request = pb::WaitExecutionRequest {
            name: name.to_string(),
        };
        Ok(client.wait_execution(request).await?.into_inner())
    }

    /// A status as the error kinds callers act on, naming the server.
    pub(crate) fn execution_error(&self, what: &str, status: tonic::Status) -> RemoteError {
        self.status_error(what, status)
    }
}
