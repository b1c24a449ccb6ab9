//! Bazel's HTTP cache protocol: `GET`, `HEAD` and `PUT` of `/ac/<hex>` and
//! `/cas/<hex>`, optionally under a prefix (`/<anything>/cas/<hex>`, which
//! is ignored, as bazel-remote does), with `404` for a miss.
//!
//! Every request gets an answer: errors become status codes, never panics.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::auth::{Access, Denied, Tokens};
use super::disk::{CommitError, Storage};
use super::grpc;
use super::log;
use super::refs::{self, Refusal};
use crate::layout::{ACTION_RESULT_LIMIT, Hash, Kind, route};
use strata_store::Digest;

pub use super::body::Body;
use super::body::empty;

/// Longest wait for the next piece of a request body; a client that stalls
/// longer holds a connection and a temporary file for nothing.
const BODY_IDLE: Duration = Duration::from_secs(60);

/// Size of the pieces a blob is sent in.
const CHUNK: usize = 256 * 1024;

pub struct Server {
    storage: Storage,
    tokens: Tokens,
    /// Largest blob accepted.
    max_blob: u64,
}

impl Server {
    pub fn new(storage: Storage, tokens: Tokens, max_blob: u64) -> Server {
        Server {
            storage,
            tokens,
            max_blob,
        }
    }
}

/// The hyper service: one request, one response.
pub async fn handle(
    server: Arc<Server>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    Ok(respond(server, req).await)
}

async fn respond(server: Arc<Server>, req: Request<Incoming>) -> Response<Body> {
    if grpc::is_grpc(&req) {
        return grpc::refusal(&req);
    }
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
    match server.tokens.check(authorization, access) {
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
        Access::Read => get(&server, kind, hash, req.method() == Method::HEAD).await,
        Access::Write => {
            let path = req.uri().path().to_owned();
            let r = put(&server, kind, hash, req).await;
            if r.status() != StatusCode::OK {
                log(format_args!("PUT {path}: {}", r.status()));
            }
            r
        }
    }
}

async fn get(server: &Arc<Server>, kind: Kind, hash: Hash, head: bool) -> Response<Body> {
    if kind == Kind::Cas && hash == *server.storage.empty() {
        return blob_response(0, empty());
    }
    let s = server.clone();
    let opened = tokio::task::spawn_blocking(move || s.storage.open_read(kind, &hash)).await;
    match opened {
        Ok(Ok(Some((file, size)))) => {
            let body = if head { empty() } else { file_body(file) };
            blob_response(size, body)
        }
        Ok(Ok(None)) => text(StatusCode::NOT_FOUND, "not in the cache"),
        Ok(Err(e)) => {
            log(format_args!(
                "cannot read {}: {e}",
                server.storage.path(kind, &hash).display()
            ));
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the entry")
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
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

async fn put(
    server: &Arc<Server>,
    kind: Kind,
    hash: Hash,
    req: Request<Incoming>,
) -> Response<Body> {
    let limit = match kind {
        Kind::Cas => server.max_blob,
        Kind::Ac => server.max_blob.min(ACTION_RESULT_LIMIT),
    };
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
    match kind {
        Kind::Cas => put_blob(server, hash, &mut body).await,
        Kind::Ac => put_action_result(server, hash, &mut body).await,
    }
    .unwrap_or_else(|r| r)
}

/// A request body read piece by piece within a size limit and a time limit.
struct Upload {
    body: Incoming,
    received: u64,
    limit: u64,
}

impl Upload {
    async fn next(&mut self) -> Result<Option<Bytes>, Response<Body>> {
        loop {
            let frame = match tokio::time::timeout(BODY_IDLE, self.body.frame()).await {
                Err(_) => return Err(text(StatusCode::REQUEST_TIMEOUT, "the upload stalled")),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(text(
                        StatusCode::BAD_REQUEST,
                        format!("the upload was cut short: {e}"),
                    ));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry nothing this protocol uses.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.received += data.len() as u64;
            if self.received > self.limit {
                return Err(too_large(self.limit));
            }
            return Ok(Some(data));
        }
    }
}

/// Streams a blob to a temporary file while hashing it, so memory stays
/// bounded whatever its size, and publishes it only if it hashes to its
/// name.
async fn put_blob(
    server: &Arc<Server>,
    hash: Hash,
    body: &mut Upload,
) -> Result<Response<Body>, Response<Body>> {
    let s = server.clone();
    let upload = blocking(move || s.storage.temp_file()).await?;
    let mut file = upload
        .as_file()
        .try_clone()
        .map(tokio::fs::File::from_std)
        .map_err(|e| io_error("cannot write an upload", &e))?;
    let mut hasher = server.storage.function().hasher();
    while let Some(data) = body.next().await? {
        hasher.update(&data);
        file.write_all(&data)
            .await
            .map_err(|e| io_error("cannot write an upload", &e))?;
    }
    file.flush()
        .await
        .and(file.sync_all().await)
        .map_err(|e| io_error("cannot write an upload", &e))?;
    drop(file);
    let digest = hasher.finish();
    if digest.hash != hash {
        // Removing the temporary file is blocking work.
        let _ = tokio::task::spawn_blocking(move || drop(upload)).await;
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!(
                "the body hashes to {} with {}, not to its name",
                digest.hex(),
                server.storage.function()
            ),
        ));
    }
    if digest.size_bytes == 0 {
        // Every cache holds the empty blob without storing it.
        return Ok(text(StatusCode::OK, "stored"));
    }
    commit(server, Kind::Cas, hash, upload, Vec::new()).await
}

/// Receives an action result (small: it is held in memory), checks that it
/// decodes and that every blob it names is stored, then publishes it.
async fn put_action_result(
    server: &Arc<Server>,
    hash: Hash,
    body: &mut Upload,
) -> Result<Response<Body>, Response<Body>> {
    let mut bytes = Vec::new();
    while let Some(data) = body.next().await? {
        bytes.extend_from_slice(&data);
    }
    let s = server.clone();
    let checked = blocking(move || {
        let refs = refs::references(&bytes, s.storage.empty(), &s.storage);
        let refs = match refs {
            Ok(refs) => refs,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let mut upload = s.storage.temp_file()?;
        io::Write::write_all(&mut upload, &bytes)?;
        upload.as_file().sync_all()?;
        Ok(Ok((upload, refs)))
    })
    .await?;
    match checked {
        Ok((upload, refs)) => commit(server, Kind::Ac, hash, upload, refs).await,
        Err(Refusal::Invalid(msg)) => Err(text(StatusCode::BAD_REQUEST, msg)),
        Err(Refusal::Missing(blob)) => Err(missing(&blob)),
    }
}

async fn commit(
    server: &Arc<Server>,
    kind: Kind,
    hash: Hash,
    upload: tempfile::NamedTempFile,
    refs: Vec<Digest>,
) -> Result<Response<Body>, Response<Body>> {
    let s = server.clone();
    let done = tokio::task::spawn_blocking(move || s.storage.commit(kind, &hash, upload, &refs))
        .await
        .map_err(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
    match done {
        Ok(()) => Ok(text(StatusCode::OK, "stored")),
        Err(CommitError::TooLarge) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "does not fit in the cache ({} bytes at most)",
                server.storage.max_size()
            ),
        )),
        Err(CommitError::Missing(blob)) => Err(missing(&blob)),
        Err(CommitError::Io(e)) => Err(io_error("cannot store an upload", &e)),
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

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, Response<Body>> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(io_error("cannot write an upload", &e)),
        Err(_) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")),
    }
}

fn io_error(what: &str, e: &io::Error) -> Response<Body> {
    log(format_args!("{what}: {e}"));
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return text(
            StatusCode::INSUFFICIENT_STORAGE,
            "the server's disk is full",
        );
    }
    text(StatusCode::INTERNAL_SERVER_ERROR, what.to_string())
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
