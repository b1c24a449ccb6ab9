//! REAPI v2 over gRPC on the HTTP server's own port: Capabilities,
//! ActionCache, ContentAddressableStorage and ByteStream over the same
//! [`Cache`] as Bazel's HTTP protocol, so both see the same entries and
//! accept the same uploads (Bazel's `--remote_cache=grpc://` and
//! `--remote_cache=http://` share one folder).
//!
//! - this module: which call goes to which service, tokens (checked here,
//!   once, before any service sees the call), and what every service
//!   checks of a request (the instance, the digest function, digests);
//! - `capabilities`, `action_cache`, `cas`, `bytestream`: the services,
//!   each one of the generated `tonic` server traits;
//! - `resource`: ByteStream resource names.
//!
//! Nothing a client sends is stored unless it passes [`Cache`]'s checks;
//! every refusal is a precise gRPC status, never a dropped connection.

mod action_cache;
mod bytestream;
mod capabilities;
mod cas;
mod resource;

pub use resource::check_instance_name;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as pb;
use bazel_remote_apis::google::bytestream::byte_stream_server::ByteStreamServer;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use pb::action_cache_server::ActionCacheServer;
use pb::capabilities_server::CapabilitiesServer;
use pb::content_addressable_storage_server::ContentAddressableStorageServer;
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::auth::{Access, Denied};
use super::body::Body;
use super::cache::{Cache, Rejected};
use super::log;
use crate::layout::{ACTION_RESULT_LIMIT, Hash, parse_hex};
use strata_store::{Digest, DigestFunction};

/// The most a batch call may move (the sum of its blobs' sizes), announced
/// as `max_batch_total_size_bytes`: under the 4 MiB message limit gRPC
/// clients keep by default (Bazel's too), with room for the framing.
pub const MAX_BATCH: u64 = 4 * 1024 * 1024 - 64 * 1024;

/// Largest message accepted: an action result of the most the cache takes,
/// or a FindMissingBlobs of some 150,000 digests.
const MAX_MESSAGE: usize = ACTION_RESULT_LIMIT as usize + 1024 * 1024;

/// Longest wait for the next message of an upload: a stalled client holds
/// a temporary file for nothing (as `BODY_IDLE` in HTTP).
const MESSAGE_IDLE: Duration = Duration::from_secs(60);

/// Size of the pieces a blob is sent in.
const CHUNK: usize = 256 * 1024;

/// Whether `req` is a gRPC call (gRPC always says so in its content type).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// What every service needs: the cache and the one instance it serves.
struct Context {
    cache: Arc<Cache>,
    instance: String,
}

/// The four REAPI services, ready to answer calls.
pub struct Services {
    cache: Arc<Cache>,
    capabilities: CapabilitiesServer<capabilities::Service>,
    action_cache: ActionCacheServer<action_cache::Service>,
    cas: ContentAddressableStorageServer<cas::Service>,
    bytestream: ByteStreamServer<bytestream::Service>,
}

impl Services {
    /// The services of `cache` under the instance name `instance` (`""`
    /// for none, Bazel's default).
    pub fn new(cache: Arc<Cache>, instance: String) -> Services {
        let context = Arc::new(Context {
            cache: cache.clone(),
            instance,
        });
        Services {
            cache,
            capabilities: CapabilitiesServer::new(capabilities::Service(context.clone()))
                .max_decoding_message_size(MAX_MESSAGE),
            action_cache: ActionCacheServer::new(action_cache::Service(context.clone()))
                .max_decoding_message_size(MAX_MESSAGE),
            cas: ContentAddressableStorageServer::new(cas::Service(context.clone()))
                .max_decoding_message_size(MAX_MESSAGE),
            bytestream: ByteStreamServer::new(bytestream::Service(context))
                .max_decoding_message_size(MAX_MESSAGE),
        }
    }

    /// Answers one gRPC call: the token first, then the service the path
    /// names (`/<service>/<method>`).
    pub async fn call(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if let Err(denied) = self.cache.check(authorization, access(&path)) {
            return answer(denied_status(denied).into_http());
        }
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map_or("", |(service, _)| service);
        // The generated services are always ready and never fail: errors
        // are in the gRPC status of the response.
        let response = if service == CapabilitiesServer::<capabilities::Service>::NAME {
            self.capabilities.clone().call(req).await
        } else if service == ActionCacheServer::<action_cache::Service>::NAME {
            self.action_cache.clone().call(req).await
        } else if service == ContentAddressableStorageServer::<cas::Service>::NAME {
            self.cas.clone().call(req).await
        } else if service == ByteStreamServer::<bytestream::Service>::NAME {
            self.bytestream.clone().call(req).await
        } else {
            Ok(Status::unimplemented(format!(
                "{service} is not served here: strata cache serve answers Capabilities, \
                 ActionCache, ContentAddressableStorage and ByteStream"
            ))
            .into_http())
        };
        match response {
            Ok(r) => answer(r),
            Err(never) => match never {},
        }
    }
}

/// The token a call needs: writing for the three calls that store, reading
/// for everything else (GetCapabilities and QueryWriteStatus included).
fn access(path: &str) -> Access {
    const WRITES: [&str; 3] = [
        "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult",
        "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
        "/google.bytestream.ByteStream/Write",
    ];
    if WRITES.contains(&path) {
        Access::Write
    } else {
        Access::Read
    }
}

fn denied_status(denied: Denied) -> Status {
    match denied {
        Denied::Unauthenticated => Status::unauthenticated(
            "a valid bearer token is required (send the metadata `authorization: Bearer <token>`)",
        ),
        Denied::ReadOnly => Status::permission_denied("this token may only read"),
    }
}

/// A tonic response as the connection's body type.
fn answer(r: Response<tonic::body::Body>) -> Response<Body> {
    r.map(|b| b.map_err(io::Error::other).boxed_unsync())
}

impl Context {
    /// The instance a request names must be the one served.
    /// A request's instance name and digest function, both ours (every
    /// CAS and action-cache call names them).
    fn check_addressed(&self, instance: &str, function: i32) -> Result<(), Status> {
        self.check_instance(instance)?;
        self.check_function(function)
    }

    fn check_instance(&self, name: &str) -> Result<(), Status> {
        if name == self.instance {
            return Ok(());
        }
        let served = if self.instance.is_empty() {
            "no instance name (\"\")".to_string()
        } else {
            format!("the instance {:?}", self.instance)
        };
        Err(Status::invalid_argument(format!(
            "unknown instance name {name:?}: this server serves {served}"
        )))
    }

    fn function(&self) -> DigestFunction {
        self.cache.function()
    }

    /// The digest function a request names (its `digest_function` field):
    /// unset means the server's, as REAPI lets a server infer it from the
    /// hash length among those it announces (one).
    fn check_function(&self, value: i32) -> Result<(), Status> {
        if value == pb::digest_function::Value::Unknown as i32 {
            return Ok(());
        }
        let ours = match self.function() {
            DigestFunction::Sha256 => pb::digest_function::Value::Sha256,
            DigestFunction::Blake3 => pb::digest_function::Value::Blake3,
        };
        if value == ours as i32 {
            return Ok(());
        }
        let named = pb::digest_function::Value::try_from(value)
            .map(|v| v.as_str_name().to_ascii_lowercase())
            .unwrap_or_else(|_| format!("digest function {value}"));
        Err(Status::invalid_argument(format!(
            "this server hashes with {}, not {named}",
            self.function()
        )))
    }

    /// A digest a request names; `what` says where, for the message.
    fn digest(&self, d: Option<&pb::Digest>, what: &str) -> Result<Digest, Status> {
        let d = d.ok_or_else(|| Status::invalid_argument(format!("{what}: no digest")))?;
        parse_digest(&d.hash, d.size_bytes, self.function())
            .map_err(|why| Status::invalid_argument(format!("{what}: {why}")))
    }
}

/// A digest from its hash in hex and its size: the hash must be 64
/// lower-case hex digits (SHA-256 and BLAKE3 both), the size not negative.
fn parse_digest(hash: &str, size: i64, function: DigestFunction) -> Result<Digest, String> {
    let parsed: Option<Hash> = parse_hex(hash);
    let Some(hash_bytes) = parsed else {
        let shown: String = hash.chars().take(80).collect();
        return Err(format!(
            "`{shown}` is not a {function} hash: expected 64 lower-case hex digits"
        ));
    };
    if size < 0 {
        return Err(format!("the size {size} is negative"));
    }
    Ok(Digest::new(hash_bytes, size as u64))
}

/// The gRPC status of an upload the cache refused, logged as HTTP logs a
/// refused `PUT`.
fn rejected_status(rejected: Rejected, function: DigestFunction) -> Status {
    let status = refusal(rejected, function);
    log(format_args!(
        "refused an upload: {:?}: {}",
        status.code(),
        status.message()
    ));
    status
}

fn refusal(rejected: Rejected, function: DigestFunction) -> Status {
    match rejected {
        Rejected::Mismatch { actual } => Status::invalid_argument(format!(
            "the data hashes to {actual} with {function}, not to its digest: nothing stored"
        )),
        Rejected::WrongSize { expected, actual } => Status::invalid_argument(format!(
            "the data is {actual} bytes, not the {expected} its digest gives: nothing stored"
        )),
        Rejected::TooLarge { limit } => Status::invalid_argument(format!(
            "larger than {limit} bytes, the most this server accepts: nothing stored"
        )),
        Rejected::Invalid(msg) => Status::invalid_argument(msg),
        Rejected::Missing(blob) => Status::failed_precondition(format!(
            "names blob {blob} which is not in the cache: upload it first"
        )),
        Rejected::NoRoom { max_size } => Status::resource_exhausted(format!(
            "does not fit in the cache ({max_size} bytes at most)"
        )),
        Rejected::Io { what, error } => {
            log(format_args!("{what}: {error}"));
            if error.raw_os_error() == Some(libc::ENOSPC) {
                Status::resource_exhausted("the server's disk is full")
            } else {
                Status::internal(what)
            }
        }
    }
}

/// A status as a batch answer carries it per blob.
fn rpc_status(status: &Status) -> bazel_remote_apis::google::rpc::Status {
    bazel_remote_apis::google::rpc::Status {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: Vec::new(),
    }
}

fn ok_status() -> Option<bazel_remote_apis::google::rpc::Status> {
    Some(bazel_remote_apis::google::rpc::Status {
        code: Code::Ok as i32,
        message: String::new(),
        details: Vec::new(),
    })
}

/// The status for a stored entry that cannot be read.
fn read_error(cache: &Cache, kind: crate::layout::Kind, hash: &Hash, e: &io::Error) -> Status {
    log(format_args!(
        "cannot read {}: {e}",
        cache.path(kind, hash).display()
    ));
    Status::internal("cannot read the entry")
}

#[cfg(test)]
mod tests;
