//! REAPI v2 over gRPC: the action cache, the CAS and ByteStream of one
//! instance. Every request names the instance and, where the message has the
//! field, the digest function; one request never mixes functions.

mod blobs;
mod execution;
pub(crate) mod names;

pub use execution::ExecutionCapabilities;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use pb::action_cache_client::ActionCacheClient;
use pb::capabilities_client::CapabilitiesClient;
use pb::content_addressable_storage_client::ContentAddressableStorageClient;
use tonic::Code;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::error::{chain, server_text};
use super::{RemoteConfig, RemoteError};
use strata_store::{Digest, DigestFunction, reapi};

/// Largest message accepted from a server: a batch answer is bounded by
/// what we ask for, this leaves room for a server's own framing.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Digests per FindMissingBlobs request (about 100 bytes each).
const FIND_MISSING_BATCH: usize = 10_000;

pub(crate) type Transport = InterceptedService<Channel, Metadata>;

/// A client of one REAPI instance; cheap to clone.
#[derive(Clone)]
pub struct GrpcRemote {
    inner: Arc<Inner>,
}

struct Inner {
    channel: Transport,
    /// `http(s)://host:port`: the URL an HTTP cache there would have.
    origin: String,
    instance: String,
    server: String,
    timeout: Duration,
    /// The server's max_batch_total_size_bytes once asked (0: unknown or
    /// unlimited).
    max_batch: AtomicU64,
}

impl fmt::Debug for GrpcRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcRemote")
            .field("server", &self.inner.server)
            .field("instance", &self.inner.instance)
            .finish()
    }
}

/// The configured headers and token, added to every call.
#[derive(Clone)]
pub(crate) struct Metadata(Arc<[(AsciiMetadataKey, AsciiMetadataValue)]>);

impl tonic::service::Interceptor for Metadata {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        for (key, value) in self.0.iter() {
            request.metadata_mut().append(key.clone(), value.clone());
        }
        Ok(request)
    }
}

fn metadata(cfg: &RemoteConfig) -> Result<Metadata, RemoteError> {
    let mut entries = Vec::new();
    for (name, value) in &cfg.headers {
        let key =
            AsciiMetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                RemoteError::config(format!("`{name}` is not a valid gRPC metadata key"))
            })?;
        let mut value = AsciiMetadataValue::try_from(value.as_str()).map_err(|_| {
            RemoteError::config(format!("the value of header `{name}` is not valid"))
        })?;
        value.set_sensitive(true);
        entries.push((key, value));
    }
    if let Some(token) = &cfg.bearer_token {
        let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| RemoteError::config("the bearer token is not a valid header value"))?;
        value.set_sensitive(true);
        entries.push((AsciiMetadataKey::from_static("authorization"), value));
    }
    Ok(Metadata(entries.into()))
}

impl GrpcRemote {
    pub(crate) async fn connect(
        cfg: &RemoteConfig,
        origin: String,
        tls: bool,
        instance: String,
        server: String,
    ) -> Result<GrpcRemote, RemoteError> {
        let metadata = metadata(cfg)?;
        let bad = |e: tonic::transport::Error| {
            RemoteError::config(format!(
                "cannot set up a connection to {server}: {}",
                chain(&e)
            ))
        };
        let mut endpoint = Endpoint::from_shared(origin.clone())
            .map_err(bad)?
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .map_err(bad)?
            .connect_timeout(cfg.timeout)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(cfg.timeout);
        if tls {
            let verifier = super::tls::verifier(cfg.ca_file.as_deref())?;
            endpoint = endpoint
                .tls_config_with_verifier(ClientTlsConfig::new(), verifier)
                .map_err(bad)?;
        }
        let channel = match tokio::time::timeout(cfg.timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                return Err(RemoteError::Unavailable {
                    server,
                    what: "connecting".to_string(),
                    reason: chain(&e),
                });
            }
            Err(_) => {
                return Err(RemoteError::Unavailable {
                    server,
                    what: "connecting".to_string(),
                    reason: format!("no answer within {:?}", cfg.timeout),
                });
            }
        };
        Ok(GrpcRemote {
            inner: Arc::new(Inner {
                channel: InterceptedService::new(channel, metadata),
                origin,
                instance,
                server,
                timeout: cfg.timeout,
                max_batch: AtomicU64::new(0),
            }),
        })
    }

    pub(crate) fn server(&self) -> &str {
        &self.inner.server
    }

    pub(crate) fn instance(&self) -> String {
        self.inner.instance.clone()
    }

    pub(crate) fn transport(&self) -> Transport {
        self.inner.channel.clone()
    }

    /// A request carrying the time limit to the server too.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.inner.timeout);
        request
    }

    /// Runs one unary call under the configured time limit.
    async fn unary<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "{what}: no answer within {:?}",
                self.inner.timeout
            ))),
        }
    }

    /// What the instance says it can do (GetCapabilities); a wrong instance
    /// name is refused here by servers that check it (BuildGrid).
    pub(crate) async fn capabilities(&self) -> Result<pb::ServerCapabilities, tonic::Status> {
        let mut client =
            CapabilitiesClient::new(self.transport()).max_decoding_message_size(MAX_MESSAGE);
        let request = self.request(pb::GetCapabilitiesRequest {
            instance_name: self.instance(),
        });
        self.unary("GetCapabilities", client.get_capabilities(request))
            .await
    }

    pub(crate) async fn digest_functions(&self) -> Result<Vec<DigestFunction>, RemoteError> {
        let what = "GetCapabilities";
        let capabilities = self.capabilities().await.map_err(|s| {
            // A status made here from a broken connection (it has a
            // source), not one the server sent: on the first call over
            // a connection that opened, the likely cause is a server
            // that speaks HTTP/1 only and drops or garbles gRPC.
            let made_here = std::error::Error::source(&s).is_some();
            let e = self.status_error(what, s);
            if made_here {
                not_grpc_hint(e, &self.inner.origin)
            } else {
                e
            }
        })?;
        // A server without cache capabilities caches nothing, in any function.
        let Some(cache) = capabilities.cache_capabilities else {
            return Ok(Vec::new());
        };
        self.inner.max_batch.store(
            cache.max_batch_total_size_bytes.max(0) as u64,
            Ordering::Relaxed,
        );
        Ok(names::functions_of(&cache.digest_functions))
    }

    pub(crate) async fn get_action_result(
        &self,
        function: DigestFunction,
        key: &Digest,
    ) -> Result<Option<reapi::ActionResult>, RemoteError> {
        let what = format!("GetActionResult of action {key}");
        let mut client =
            ActionCacheClient::new(self.transport()).max_decoding_message_size(MAX_MESSAGE);
        let request = self.request(pb::GetActionResultRequest {
            instance_name: self.instance(),
            action_digest: Some(names::digest(key)),
            inline_stdout: false,
            inline_stderr: false,
            inline_output_files: Vec::new(),
            digest_function: names::function_value(function),
        });
        let result = match self.unary(&what, client.get_action_result(request)).await {
            Ok(result) => result,
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) => return Err(self.status_error(&what, status)),
        };
        names::convert(&result)
            .map(Some)
            .map_err(|e| self.protocol(&what, format!("the ActionResult does not decode: {e}")))
    }

    pub(crate) async fn update_action_result(
        &self,
        function: DigestFunction,
        key: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), RemoteError> {
        let what = format!("UpdateActionResult of action {key}");
        let action_result: pb::ActionResult = names::convert(result).map_err(|e| {
            RemoteError::config(format!("action result {key} does not convert: {e}"))
        })?;
        let mut client =
            ActionCacheClient::new(self.transport()).max_decoding_message_size(MAX_MESSAGE);
        let request = self.request(pb::UpdateActionResultRequest {
            instance_name: self.instance(),
            action_digest: Some(names::digest(key)),
            action_result: Some(action_result),
            results_cache_policy: None,
            digest_function: names::function_value(function),
        });
        self.unary(&what, client.update_action_result(request))
            .await
            .map_err(|s| self.status_error(&what, s))?;
        Ok(())
    }

    pub(crate) async fn find_missing(
        &self,
        function: DigestFunction,
        digests: &[Digest],
    ) -> Result<Vec<Digest>, RemoteError> {
        let unique = super::dedup(digests);
        let mut missing = Vec::new();
        for batch in unique.chunks(FIND_MISSING_BATCH) {
            let what = format!("FindMissingBlobs of {} blobs", batch.len());
            let mut client = self.cas_client();
            let request = self.request(pb::FindMissingBlobsRequest {
                instance_name: self.instance(),
                blob_digests: batch.iter().map(names::digest).collect(),
                digest_function: names::function_value(function),
            });
            let response = self
                .unary(&what, client.find_missing_blobs(request))
                .await
                .map_err(|s| self.status_error(&what, s))?;
            let mut named = std::collections::HashSet::new();
            for d in &response.missing_blob_digests {
                let digest = names::parse_digest(d).ok_or_else(|| {
                    self.protocol(
                        &what,
                        format!("malformed digest {}", server_text(&format!("{d:?}"))),
                    )
                })?;
                named.insert(digest);
            }
            // Only what was asked for: a server naming other blobs is ignored.
            missing.extend(batch.iter().filter(|d| named.contains(d)).copied());
        }
        Ok(missing)
    }

    fn cas_client(&self) -> ContentAddressableStorageClient<Transport> {
        ContentAddressableStorageClient::new(self.transport())
            .max_decoding_message_size(MAX_MESSAGE)
    }

    fn protocol(&self, what: &str, reason: String) -> RemoteError {
        RemoteError::Protocol {
            server: self.server().to_string(),
            what: what.to_string(),
            reason,
        }
    }

    fn status_error(&self, what: &str, status: tonic::Status) -> RemoteError {
        // A status with a source was made here from a failed connection
        // (tonic calls those Unknown), not sent by the server: the server
        // may well answer the next request.
        let code = match std::error::Error::source(&status) {
            Some(_) if status.code() == Code::Unknown => Code::Unavailable,
            _ => status.code(),
        };
        status_error(self.server(), what, code, &status_reason(&status))
    }
}

/// `e` with a hint for a server that does not speak gRPC.
fn not_grpc_hint(mut e: RemoteError, origin: &str) -> RemoteError {
    if let RemoteError::Unavailable { reason, .. } | RemoteError::Refused { reason, .. } = &mut e {
        reason.push_str(&format!(
            " (the server does not answer in gRPC; if it is an HTTP cache, use {origin})"
        ));
    }
    e
}

fn status_reason(status: &tonic::Status) -> String {
    let mut reason = format!("{:?}", status.code());
    let message = server_text(status.message());
    let mut source = std::error::Error::source(status);
    let sources = std::iter::from_fn(|| {
        let next = source?;
        source = next.source();
        Some(server_text(&next.to_string()))
    });
    // Transport errors repeat themselves down their chain.
    for part in std::iter::once(message).chain(sources) {
        if !part.is_empty() && !reason.contains(&part) {
            reason = format!("{reason}: {part}");
        }
    }
    reason
}

/// Sorts a gRPC status into the error kinds callers act on.
pub(crate) fn status_error(server: &str, what: &str, code: Code, reason: &str) -> RemoteError {
    let server = server.to_string();
    let what = what.to_string();
    let reason = reason.to_string();
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled => RemoteError::Unavailable {
            server,
            what,
            reason,
        },
        Code::NotFound => RemoteError::NotFound { server, what },
        _ => RemoteError::Refused {
            server,
            what,
            reason,
        },
    }
}
