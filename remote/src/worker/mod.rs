//! `strata worker`: a bot of BuildGrid's Remote Workers API, which runs the
//! REAPI actions a BuildGrid execution service leases to it in Strata's
//! sandbox.
//!
//! - [`bots`]: the API's messages and its two calls.
//! - [`session`]: the session loop: leases reported and received, each run
//!   in a task of its own, at most `-j` at once.
//! - [`lease`]: one lease from its payload (an `Action`) to its status and
//!   `ActionResult`; [`inputs`] fetches the action's command and input
//!   root, naming every missing blob; [`outputs`] reads what the command
//!   wrote; `strata_exec::remote_step` stages and runs it.
//! - [`cache`]: the worker's own CAS, bounded by `--max-size`.
//!
//! A worker killed mid-action loses nothing: its session stops answering,
//! BuildGrid closes it after its keepalive and requeues its leases, and
//! another worker runs them.

mod bots;
mod cache;
mod inputs;
mod lease;
mod outputs;
mod session;

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use strata_exec::remote_step::ContainerHost;
use strata_exec::{BoxFuture, Isolation, LocalExecutor, step};
use strata_store::{Digest, DigestFunction};

use crate::client::{Remote, RemoteConfig, RemoteError};
use crate::execution::CONTAINER_RUNTIME;
use cache::LocalCas;
use lease::LeaseError;

/// Scratch folders of the worker's leases are named `worker-<random>`.
const SCRATCH_PREFIX: &str = "worker-";

/// What `strata worker` was asked to do.
pub struct WorkerOptions {
    /// `grpc[s]://HOST:PORT[/INSTANCE]`, with any headers and token.
    pub server: RemoteConfig,
    /// The worker's own CAS (a store folder), used by no other worker.
    pub cache_dir: PathBuf,
    /// The most the CAS may hold, in bytes.
    pub max_size: u64,
    /// Leases run at once.
    pub jobs: usize,
    /// The platform advertised: `(name, value)` properties, a name given
    /// more than once for each value it takes (`ISA`).
    pub platform: Vec<(String, String)>,
    /// Names this bot to the service: a restarted bot with the same id
    /// replaces its old session (whose leases are requeued).
    pub bot_id: String,
    /// Connects to what runs the actions that name a `container-image`
    /// (the worker's Docker Engine), on the worker's runtime; `None` from
    /// it (or no connector): no engine, and the worker advertises no
    /// container runtime.
    pub containers: Option<ContainerConnect>,
}

/// Connects a worker to its container engine, if there is one.
pub type ContainerConnect =
    Box<dyn FnOnce() -> BoxFuture<'static, Option<Arc<dyn ContainerHost>>> + Send>;

/// Why `strata worker` stopped.
#[derive(Debug)]
pub enum WorkerError {
    /// The options cannot work (exit 2).
    Usage(String),
    /// The service or this machine failed it (exit 1).
    Failed(String),
}

/// What the leases of one worker share.
pub(crate) struct Worker {
    remote: Remote,
    /// The service as messages show it.
    server: String,
    local: LocalCas,
    function: DigestFunction,
    isolation: Isolation,
    containers: Option<Arc<dyn ContainerHost>>,
    bot_id: String,
    scratch_prefix: String,
}

impl Worker {
    /// Sends the blobs the service lacks.
    async fn upload(&self, blobs: &[Digest]) -> Result<(), LeaseError> {
        let error = |e: RemoteError| {
            let m = format!("cannot upload the outputs: {}", service_error(&e));
            if e.is_transient() {
                LeaseError::Unavailable(m)
            } else {
                LeaseError::Internal(m)
            }
        };
        let missing = self
            .remote
            .find_missing(self.function, blobs)
            .await
            .map_err(error)?;
        self.remote
            .upload_many(self.function, &missing, self.local.store().cas())
            .await
            .map_err(error)
    }
}

/// `e` as a worker says it: the server is an execution service, not a
/// remote cache.
pub(crate) fn service_error(e: &RemoteError) -> String {
    match e {
        RemoteError::Unavailable {
            server,
            what,
            reason,
        } => format!("execution service {server}: {what}: {reason}"),
        RemoteError::Refused {
            server,
            what,
            reason,
        } => format!("execution service {server} refused {what}: {reason}"),
        RemoteError::NotFound { server, what } => {
            format!("execution service {server}: {what}: not found")
        }
        RemoteError::Protocol {
            server,
            what,
            reason,
        } => format!("execution service {server}: malformed answer to {what}: {reason}"),
        e => e.to_string(),
    }
}

/// Runs the worker until the service refuses it or the process is stopped
/// (SIGINT, SIGTERM: the session is closed, its running leases handed
/// back); `ready` is called once its session is open.
pub fn run(options: WorkerOptions, ready: impl FnOnce(&str)) -> Result<(), WorkerError> {
    if options.jobs == 0 {
        return Err(WorkerError::Usage("-j must be at least 1".into()));
    }
    if options.max_size == 0 {
        return Err(WorkerError::Usage("--max-size must be more than 0".into()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| WorkerError::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve(options, ready))
}

/// SIGINT or SIGTERM.
async fn stop_signal() -> Result<(), WorkerError> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| WorkerError::Failed(format!("cannot handle SIGTERM: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

async fn serve(options: WorkerOptions, ready: impl FnOnce(&str)) -> Result<(), WorkerError> {
    let remote = Remote::connect(&options.server)
        .await
        .map_err(|e| match e {
            RemoteError::Config { reason } => WorkerError::Usage(reason),
            e => WorkerError::Failed(service_error(&e)),
        })?;
    let Remote::Grpc(grpc) = &remote else {
        return Err(WorkerError::Usage(format!(
            "--server {}: a worker talks to an execution service over gRPC (grpc:// or grpcs://)",
            remote.server()
        )));
    };
    let (transport, instance) = (grpc.transport(), grpc.instance());
    let server = remote.server().to_string();
    let offered = remote
        .digest_functions()
        .await
        .map_err(|e| WorkerError::Failed(service_error(&e)))?
        .unwrap_or_default();
    let function = [DigestFunction::Sha256, DigestFunction::Blake3]
        .into_iter()
        .find(|f| offered.contains(f))
        .ok_or_else(|| {
            WorkerError::Failed(format!(
                "{server} offers no digest function Strata knows (sha256, blake3)"
            ))
        })?;

    let dir = options.cache_dir.clone();
    fs::create_dir_all(&dir)
        .map_err(|e| WorkerError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let lock = fs::File::create(dir.join("worker.lock"))
        .map_err(|e| WorkerError::Failed(format!("cannot lock {}: {e}", dir.display())))?;
    if lock.try_lock().is_err() {
        return Err(WorkerError::Usage(format!(
            "another worker uses the cache {}; give each worker its own --cache-dir",
            dir.display()
        )));
    }
    let max_size = options.max_size;
    let local = tokio::task::spawn_blocking(move || LocalCas::open(&dir, function, max_size))
        .await
        .map_err(|e| WorkerError::Failed(e.to_string()))?
        .map_err(WorkerError::Failed)?;
    let isolation = LocalExecutor::new().isolation(local.store()).await.clone();
    if let Isolation::Unsandboxed { reason } = &isolation {
        return Err(WorkerError::Failed(format!(
            "the sandbox does not work on this machine ({reason}); a worker runs actions only in it"
        )));
    }
    // Leftovers of a worker killed before it could clean up.
    step::remove_stale_scratch(local.store(), SCRATCH_PREFIX);
    let containers = match options.containers {
        Some(connect) => connect().await,
        None => None,
    };
    let mut platform = options.platform.clone();
    if containers.is_some() {
        platform.push((CONTAINER_RUNTIME.0.into(), CONTAINER_RUNTIME.1.into()));
    }

    let worker = Arc::new(Worker {
        remote: remote.clone(),
        server: server.clone(),
        local,
        function,
        isolation,
        containers: containers.clone(),
        bot_id: options.bot_id.clone(),
        scratch_prefix: SCRATCH_PREFIX.to_string(),
    });
    let shape = bots::Worker {
        devices: vec![bots::Device {
            handle: "strata".to_string(),
            properties: platform
                .iter()
                .map(|(key, value)| bots::Property {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        }],
        properties: Vec::new(),
        configs: vec![bots::Property {
            key: "capacity".to_string(),
            value: options.jobs.to_string(),
        }],
    };
    let stopping = stop_signal();
    tokio::pin!(stopping);
    let opened = session::Session::open(
        worker,
        bots::BotsClient::new(transport),
        instance.clone(),
        shape,
        options.jobs,
    );
    let mut session = tokio::select! {
        session = opened => session?,
        stopped = &mut stopping => return stopped,
    };
    let shown: Vec<String> = platform.iter().map(|(k, v)| format!("{k}={v}")).collect();
    ready(&format!(
        "serving {server} as bot {} ({}; {} at once; {} cache {} up to {} bytes)",
        options.bot_id,
        shown.join(" "),
        if options.jobs == 1 {
            "1 lease".to_string()
        } else {
            format!("{} leases", options.jobs)
        },
        function,
        options.cache_dir.display(),
        options.max_size
    ));
    let served = tokio::select! {
        served = session.serve() => Some(served),
        stopped = &mut stopping => {
            stopped?;
            None
        }
    };
    let result = match served {
        Some(served) => served,
        None => {
            session.close().await;
            Ok(())
        }
    };
    if let Some(containers) = &containers {
        containers.shutdown().await;
    }
    drop(lock);
    result
}
