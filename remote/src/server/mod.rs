//! `strata cache serve`: a remote cache for teams without a cache server,
//! speaking Bazel's HTTP cache protocol and REAPI gRPC over one folder, on
//! one port.
//!
//! - `http`: Bazel's HTTP cache protocol (routes, tokens, uploads streamed),
//!   over HTTP/1.1 or HTTP/2; it hands gRPC calls to `grpc`.
//! - `grpc`: REAPI v2 (Capabilities, ActionCache, ContentAddressableStorage,
//!   ByteStream) over HTTP/2.
//! - `cache`: what both protocols serve: reads, and the one path an upload
//!   takes to be published (hash, size bound, an action result's blobs).
//! - `auth`: read and write bearer tokens.
//! - `refs`: the blobs an action result names, so an entry is admitted
//!   only when a hit on it can be followed.
//! - `disk`: the folder, atomic publication and least-recently-used
//!   eviction within `--max-size`.

mod auth;
mod body;
mod cache;
mod disk;
mod grpc;
mod http;
mod refs;

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::signal::unix::{SignalKind, signal};

pub use auth::{READ_TOKEN_ENV, Tokens, WRITE_TOKEN_ENV};
pub use disk::OpenReport;
pub use strata_store::DigestFunction;

/// Longest wait for a request's headers: a client that opens connections
/// and sends nothing must not hold them forever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; further ones wait in the listen queue
/// rather than exhaust file descriptors.
const MAX_CONNECTIONS: usize = 512;

/// How long a stopping server lets running requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct ServeOptions {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// Bytes the folder's entries may take; least recently used go first.
    pub max_size: u64,
    /// Largest blob accepted (default: `max_size`).
    pub max_blob_size: Option<u64>,
    pub function: DigestFunction,
    pub tokens: Tokens,
    /// The REAPI instance name gRPC clients must send (`""`: none).
    pub instance: String,
}

#[derive(Debug)]
pub enum ServeError {
    /// The options or the folder do not fit together (exit 2).
    Usage(String),
    /// The server could not start or run (exit 1).
    Failed(String),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Usage(m) | ServeError::Failed(m) => f.write_str(m),
        }
    }
}

/// What a started server tells its caller.
pub struct Started {
    /// The address bound (its port is chosen by the system for port 0).
    pub address: SocketAddr,
    /// What was found in the folder.
    pub found: OpenReport,
}

/// Serves until SIGINT or SIGTERM, then lets running requests finish.
/// `started` is called once the socket listens.
pub fn serve(opts: ServeOptions, started: impl FnOnce(&Started)) -> Result<(), ServeError> {
    // A client hanging up mid-response must not kill the server: hyper's
    // vectored writes do not suppress SIGPIPE as plain socket writes do.
    // SAFETY: setting a signal disposition; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    grpc::check_instance_name(&opts.instance).map_err(ServeError::Usage)?;
    let (storage, found) =
        disk::Storage::open(&opts.dir, opts.function, opts.max_size).map_err(|e| match e {
            disk::OpenError::Usage(m) => ServeError::Usage(m),
            disk::OpenError::Io(m) => ServeError::Failed(m),
        })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Failed(format!("cannot start: {e}")))?;
    let max_blob = opts.max_blob_size.unwrap_or(opts.max_size);
    let cache = Arc::new(cache::Cache::new(storage, opts.tokens.clone(), max_blob));
    runtime.block_on(run(opts, cache, found, started))
}

async fn run(
    opts: ServeOptions,
    cache: Arc<cache::Cache>,
    found: OpenReport,
    started: impl FnOnce(&Started),
) -> Result<(), ServeError> {
    let failed = |what: &str, e: std::io::Error| ServeError::Failed(format!("{what}: {e}"));
    // Installed before the address is announced, so a signal sent as soon
    // as it is seen is handled.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| failed("signals", e))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| failed("signals", e))?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| failed(&format!("cannot listen on {}", opts.listen), e))?;
    let address = listener
        .local_addr()
        .map_err(|e| failed("cannot listen", e))?;
    if opts.tokens.is_open() && !address.ip().is_loopback() {
        log(format_args!(
            "warning: no tokens are set, so anyone who reaches {address} can write to the cache"
        ));
    }
    started(&Started { address, found });
    let stop = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    serve_connections(listener, cache, opts.instance.clone(), stop).await;
    Ok(())
}

/// Serves every connection `listener` accepts, HTTP and gRPC, until `stop`
/// completes; then lets running requests finish.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    cache: Arc<cache::Cache>,
    instance: String,
    stop: impl std::future::Future<Output = ()>,
) {
    let services = Arc::new(grpc::Services::new(cache.clone(), instance));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // HTTP/2 too (told apart by its preface), which gRPC needs.
    let mut protocols = auto::Builder::new(TokioExecutor::new());
    protocols
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let Some((stream, slot)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (cache, services) = (cache.clone(), services.clone());
        let service = hyper::service::service_fn(move |req| {
            http::handle(cache.clone(), services.clone(), req)
        });
        let connection = protocols
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection's errors (a client hanging up, a malformed
            // request already answered with 400) concern only that client.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            log(format_args!("stopping with requests still running"));
        }
    }
}

async fn accept(
    listener: &tokio::net::TcpListener,
    slots: &Arc<tokio::sync::Semaphore>,
) -> Option<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, _)) => Some((stream, slot)),
        Err(e) => {
            // Out of file descriptors, or a connection reset before it was
            // accepted: wait a little rather than spin.
            log(format_args!("cannot accept a connection: {e}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// One line on stderr. A closed stderr must not end the server, so errors
/// are ignored (where `eprintln!` would panic).
pub(crate) fn log(msg: fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "strata cache serve: {msg}");
}
