//! Bazel's HTTP cache protocol: `GET`, `HEAD` and `PUT` of `/ac/<hex>` and
//! `/cas/<hex>`, optionally under a prefix (`/<anything>/cas/<hex>`, which
//! is ignored, as bazel-remote does), with `404` for a miss.
//!
//! Every request gets an answer: errors become status codes, never panics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::AsyncReadExt;

use super::auth::{Access, Denied};
use super::cache::{Cache, Rejected};
use super::grpc;
use super::log;
use crate::layout::{Hash, Kind, route};
use strata_store::Digest;

pub use super::body::Body;
use super::body::empty;

/// Longest wait for the next piece of a request body; a client that stalls
/// longer holds a connection and a temporary file for nothing.
const BODY_IDLE: Duration = Duration::from_secs(60);

/// Size of the pieces a blob is sent in.
const CHUNK: usize = 256 * 1024;

/// The hyper service: one request, one response. gRPC calls (told apart
/// by their content type) go to `grpc`, on the same connection.
pub async fn handle(
    cache: Arc<Cache>,
    services: Arc<grpc::Services>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if grpc::is_grpc(&req) {
        return Ok(services.call(req).await);
    }
    Ok(respond(cache, req).await)
}

async fn respond(cache: Arc<Cache>, req: Request<Incoming>) -> Response<Body> {
    let access = match *req.method() {
        Method::GET | Method::HEAD => Access::Read,
        Method::PUT => Access::Write,
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET, HEAD or PUT");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
            return r;
        }
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match cache.check(authorization, access) {
        Ok(()) => {}
        Err(Denied::Unauthenticated) => {
            let mut r = text(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"strata-cache\""),
            );
            return r;
        }
        Err(Denied::ReadOnly) => {
            return text(StatusCode::FORBIDDEN, "this token may only read");
        }
    }
    let (kind, hash) = match route(req.uri().path()) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                "not found: use /ac/<hex> or /cas/<hex>",
            );
        }
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    match access {
        Access::Read => get(&cache, kind, hash, req.method() == Method::HEAD).await,
        Access::Write => {
            let path = req.uri().path().to_owned();
            let r = put(&cache, kind, hash, req).await;
            if r.status() != StatusCode::OK {
                log(format_args!("PUT {path}: {}", r.status()));
            }
            r
        }
    }
}

async fn get(cache: &Arc<Cache>, kind: Kind, hash: Hash, head: bool) -> Response<Body> {
    if kind == Kind::Cas && hash == *cache.empty() {
        return blob_response(0, empty());
    }
    match cache.open(kind, hash).await {
        Ok(Some((file, size))) => {
            let body = if head { empty() } else { file_body(file) };
            blob_response(size, body)
        }
        Ok(None) => text(StatusCode::NOT_FOUND, "not in the cache"),
        Err(e) => {
            log(format_args!(
                "cannot read {}: {e}",
                cache.path(kind, &hash).display()
            ));
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the entry")
        }
    }
}

fn blob_response(size: u64, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    r
}

fn file_body(file: std::fs::File) -> Body {
    let file = tokio::fs::File::from_std(file);
    let stream = futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let n = file.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some((Frame::data(buf.freeze()), file)))
    });
    StreamBody::new(stream).boxed_unsync()
}

async fn put(cache: &Arc<Cache>, kind: Kind, hash: Hash, req: Request<Incoming>) -> Response<Body> {
    let limit = cache.limit(kind);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large(limit);
    }
    let mut body = Upload {
        body: req.into_body(),
        received: 0,
        limit,
    };
    let stored = match kind {
        Kind::Cas => put_blob(cache, hash, &mut body).await,
        Kind::Ac => put_action_result(cache, hash, &mut body).await,
    };
    match stored {
        Ok(()) => text(StatusCode::OK, "stored"),
        Err(Refused::Http(r)) => r,
        Err(Refused::Cache(rejected)) => rejection(cache, rejected),
    }
}

/// Why a `PUT` was not stored: the request itself (a stall, a cut), or
/// what the cache refuses.
enum Refused {
    Http(Response<Body>),
    Cache(Rejected),
}

impl From<Rejected> for Refused {
    fn from(r: Rejected) -> Refused {
        Refused::Cache(r)
    }
}

/// A request body read piece by piece within a size limit and a time limit.
struct Upload {
    body: Incoming,
    received: u64,
    limit: u64,
}

impl Upload {
    async fn next(&mut self) -> Result<Option<Bytes>, Refused> {
        loop {
            let frame = match tokio::time::timeout(BODY_IDLE, self.body.frame()).await {
                Err(_) => {
                    return Err(Refused::Http(text(
                        StatusCode::REQUEST_TIMEOUT,
                        "the upload stalled",
                    )));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(Refused::Http(text(
                        StatusCode::BAD_REQUEST,
                        format!("the upload was cut short: {e}"),
                    )));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry nothing this protocol uses.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.received += data.len() as u64;
            if self.received > self.limit {
                return Err(Rejected::TooLarge { limit: self.limit }.into());
            }
            return Ok(Some(data));
        }
    }
}

/// Streams a blob into the cache; HTTP names it by its hash alone.
async fn put_blob(cache: &Arc<Cache>, hash: Hash, body: &mut Upload) -> Result<(), Refused> {
    let mut upload = cache.begin_blob().await?;
    while let Some(data) = body.next().await? {
        upload.write(&data).await?;
    }
    Ok(upload.finish(hash, None).await?)
}

/// Receives an action result (small: it is held in memory) for the cache
/// to check and publish.
async fn put_action_result(
    cache: &Arc<Cache>,
    hash: Hash,
    body: &mut Upload,
) -> Result<(), Refused> {
    let mut bytes = Vec::new();
    while let Some(data) = body.next().await? {
        bytes.extend_from_slice(&data);
    }
    Ok(cache.store_action_result(hash, bytes).await?)
}

/// The HTTP answer to what the cache refused.
fn rejection(cache: &Cache, rejected: Rejected) -> Response<Body> {
    match rejected {
        Rejected::Mismatch { actual } => text(
            StatusCode::BAD_REQUEST,
            format!(
                "the body hashes to {} with {}, not to its name",
                actual.hex(),
                cache.function()
            ),
        ),
        // HTTP names blobs without their size, so this does not happen.
        Rejected::WrongSize { expected, actual } => text(
            StatusCode::BAD_REQUEST,
            format!("the body is {actual} bytes, not {expected}"),
        ),
        Rejected::TooLarge { limit } => too_large(limit),
        Rejected::Invalid(msg) => text(StatusCode::BAD_REQUEST, msg),
        Rejected::Missing(blob) => missing(&blob),
        Rejected::NoRoom { max_size } => text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("does not fit in the cache ({max_size} bytes at most)"),
        ),
        Rejected::Io { what, error } => {
            log(format_args!("{what}: {error}"));
            if error.raw_os_error() == Some(libc::ENOSPC) {
                text(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "the server's disk is full",
                )
            } else {
                text(StatusCode::INTERNAL_SERVER_ERROR, what)
            }
        }
    }
}

fn missing(blob: &Digest) -> Response<Body> {
    text(
        StatusCode::CONFLICT,
        format!(
            "names blob {}/{} which is not in the cache: upload it first",
            hex::encode(blob.hash),
            blob.size_bytes
        ),
    )
}

fn too_large(limit: u64) -> Response<Body> {
    let mut r = text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {limit} bytes"),
    );
    // The rest of the body is not read, so the connection cannot be reused.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut msg = msg.into();
    msg.push('\n');
    let body = Full::new(Bytes::from(msg))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
